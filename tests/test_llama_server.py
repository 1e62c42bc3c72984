"""The OpenAI-compatible engine against a real `python -m llama_cpp.server` (SmolLM2)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

import nbchat
from nbchat.core.errors import ContextTooLong, ProviderError
from nbchat.core.types import TextDelta

pytestmark = pytest.mark.server

MODEL = "openai:smollm2"


@pytest.fixture
def server(llama_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", llama_server)
    return llama_server


def test_streaming_text_with_usage_and_finish_reason(server):
    chunks = list(nbchat.stream("Say hello.", model=MODEL, max_tokens=12, temperature=0,
                                seed=1))
    assert len(chunks) > 1 and "".join(chunks).strip()
    reply = nbchat.chat("Say hello.", model=MODEL, max_tokens=12, temperature=0, seed=1)
    assert reply.text == "".join(chunks)  # same seed, same text: the stream lost nothing
    assert reply.finish_reason in ("stop", "length")
    assert reply.usage.output_tokens and reply.usage.output_tokens <= 12
    assert reply.model == MODEL and reply.error is None


def test_base_url_keyword_without_env(llama_server):
    reply = nbchat.chat("Hi", model=MODEL, base_url=llama_server, max_tokens=4)
    assert reply.text


def test_json_schema_output(server):
    schema = {"type": "object", "properties": {"name": {"type": "string"},
                                               "age": {"type": "integer"}},
              "required": ["name", "age"]}
    reply = nbchat.chat("Invent a person. Answer in JSON.", model=MODEL, schema=schema,
                        max_tokens=60, temperature=0)
    data = reply.json
    assert isinstance(data["name"], str) and isinstance(data["age"], int)


def test_forced_tool_call(server):
    def get_weather(city: str) -> str:
        """Current weather for a city.

        Args:
            city: the city name
        """
        return "sunny"

    reply = nbchat.chat("What is the weather in Paris?", model=MODEL, tools=[get_weather],
                        tool_choice="get_weather", max_tokens=60, temperature=0)
    assert reply.finish_reason in ("stop", "length")  # the call ran; the model answered
    [call] = [s.call for s in reply.steps]
    assert call.name == "get_weather"  # repeated name fragments were not concatenated
    assert isinstance(call.arguments.get("city"), str)
    assert call.id


def test_logprobs(server):
    reply = nbchat.chat("Hi", model=MODEL, logprobs=2, max_tokens=4, temperature=0)
    assert reply.logprobs and len(reply.logprobs) >= 1
    first = reply.logprobs[0]
    assert "logprob" in first and len(first["top_logprobs"]) == 2


def test_model_listing(server):
    [info] = nbchat.models("openai")
    assert info.id == MODEL and info.key_set and info.stream


def test_models_lists_a_server_given_by_url(llama_server):
    """No OPENAI_BASE_URL: the URL alone names the server (and a key is sent if given)."""
    [info] = nbchat.models("openai", base_url=llama_server)
    assert info.id == MODEL and info.key_set and info.description == f"at {llama_server}"
    [same] = nbchat.core.bridge.run_sync(
        nbchat.amodels("openai", base_url=llama_server + "/", api_key="sk-ignoredbyllama"))
    assert same == info
    reply = nbchat.chat("Hi", model=f"openai:{info.name}", base_url=llama_server, max_tokens=4)
    assert reply.text and reply.error is None


def test_models_lists_a_server_given_by_config(llama_server):
    nbchat.core.credentials.configure(base_urls={"openai": llama_server})
    assert [m.id for m in nbchat.models("openai")] == [MODEL]


def test_context_length_error(server):
    with pytest.raises(ContextTooLong) as err:
        nbchat.chat("word " * 3000, model=MODEL, max_tokens=5)
    assert err.value.status == 400
    assert "maximum context length is 2048" in str(err.value)
    assert "shorten" in str(err.value)


def test_unknown_path_is_a_clear_error(llama_server):
    with pytest.raises(ProviderError, match="HTTP 404"):
        nbchat.chat("Hi", model=MODEL, base_url=llama_server.removesuffix("/v1") + "/nope")


def test_interrupted_stream_then_server_still_usable(server):
    async def go():
        conv = nbchat.Conversation(model=MODEL, max_tokens=200, temperature=0)
        turn = conv.turn("Write a long story about a dragon.")
        events = turn.events()
        got = []
        async for ev in events:
            if isinstance(ev, TextDelta):
                got.append(ev.text)
            if len(got) == 3:
                break
        await events.aclose()
        assert turn.reply.interrupted and turn.reply.text == "".join(got)
        assert conv.history[-1].interrupted  # the partial turn is kept, marked
        again = await nbchat.achat("Say yes.", model=MODEL, max_tokens=5)
        assert again.text and again.error is None

    asyncio.run(go())


def test_batch_runs_concurrently_and_keeps_order(server):
    prompts = ["Say one.", "Say two.", "Say three."]
    replies = nbchat.batch(prompts, model=MODEL, concurrency=2, max_tokens=6, temperature=0,
                           seed=3)
    assert len(replies) == 3 and all(r.text and r.error is None for r in replies)
    solo = nbchat.chat("Say two.", model=MODEL, max_tokens=6, temperature=0, seed=3)
    assert replies[1].text == solo.text  # order kept


def test_server_up(llama_server):
    assert httpx.get(f"{llama_server}/models").status_code == 200


def test_chat_magic_reaches_every_feature(llama_server, monkeypatch):
    """%%chat against the real server with no environment: --base-url, tools forced by name,
    a schema, logprobs and top_p all reach the wire and come back on the reply."""
    from IPython.core.interactiveshell import InteractiveShell

    from nbchat.notebook.magics import ChatMagics

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    ip = InteractiveShell.instance()
    magics = ChatMagics(shell=ip)
    ip.register_magics(magics)

    def get_weather(city: str) -> str:
        """Current weather for a city."""
        return "sunny"

    ip.user_ns.update(get_weather=get_weather, shape={
        "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]})
    flags = f"-m {MODEL} --base-url {llama_server} -t 0 --max-tokens 40 --new"
    try:
        result = ip.run_cell(f"%%chat {flags} --tools get_weather --tool-choice get_weather "
                             "--as r1\nWeather in Paris?")
        assert result.error_in_exec is None, result.error_in_exec
        result = ip.run_cell(f"%%chat {flags} --schema shape --logprobs 1 --top-p 0.9 "
                             "--as r2\nInvent a name. Answer in JSON.")
        assert result.error_in_exec is None, result.error_in_exec
    finally:
        ip.configurables.remove(magics)
    r1, r2 = ip.user_ns["r1"], ip.user_ns["r2"]
    assert [s.call.name for s in r1.steps] == ["get_weather"]
    assert isinstance(r2.json["name"], str)
    # top 1 alternative (llama.cpp adds the sampled token when the grammar forced another)
    assert r2.logprobs and all(1 <= len(lp["top_logprobs"]) <= 2 for lp in r2.logprobs)
