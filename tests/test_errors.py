from nbchat.core.errors import MissingKey, ProviderError, UnknownModel, redact, remember_secret


def test_missing_key_names_the_variable():
    e = MissingKey("cerebras", "CEREBRAS_API_KEY")
    assert "CEREBRAS_API_KEY" in str(e)


def test_unknown_model_lists_close_matches():
    e = UnknownModel("cerebras:llama3.1-7b", ["cerebras:llama3.1-70b", "cerebras:llama3.1-8b",
                                                "nvidia:meta/llama3-8b-instruct"])
    assert "cerebras:llama3.1-70b" in str(e) and "Did you mean" in str(e)


def test_keys_never_appear_in_messages():
    remember_secret("my-very-private-key-123")
    e = ProviderError("bad key my-very-private-key-123 and nvapi-abcdefghijkl", status=401)
    assert "my-very-private" not in str(e) and "nvapi-abcdefghijkl" not in str(e)
    assert redact("Authorization: Bearer abcdefghijk") == "Authorization: Bearer ***"
