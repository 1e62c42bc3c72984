import subprocess
import sys

import nbchat


def test_all_is_complete_and_importable():
    for name in nbchat.__all__:
        if name in ("ChatPanel", "CompareView", "compare", "acompare"):
            continue  # widget names: covered by their own tests
        assert getattr(nbchat, name) is not None or name == "last", name


def test_import_is_light():
    """Importing nbchat (what %load_ext does first) pulls in no HTTP, model or widget library."""
    code = ("import sys, nbchat; heavy = [m for m in ('httpx', 'llama_cpp', 'ipywidgets', "
            "'anywidget', 'PIL') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_models_lists_the_local_default_without_a_key():
    infos = nbchat.models("llamacpp")
    local = next(m for m in infos if m.id == "llamacpp:smollm2")
    assert local.key_set and local.stream and local.json and not local.vision
    assert "key" not in repr(local).lower() or "key_set=True" in repr(local)


def test_reply_repr_never_runs_html(fake):
    fake.enqueue("<script>alert(1)</script> ", "![x](http://evil/x.png)")
    reply = nbchat.chat("x", model="fake:echo")
    bundle, metadata = reply._repr_mimebundle_()
    assert metadata["nbchat"]["model"] == "fake:echo"  # its provenance, saved with the output
    assert set(bundle) == {"text/html", "text/plain"}
    assert "<script>" not in bundle["text/html"] and "<img" not in bundle["text/html"]
    assert bundle["text/plain"] == reply.text


def test_the_contract_names_and_fields():
    """The names of issue 2 that other code calls: renaming one must fail here."""
    import dataclasses
    import inspect

    for fn in (nbchat.chat, nbchat.achat, nbchat.stream, nbchat.astream):
        params = list(inspect.signature(fn).parameters.values())
        assert [p.name for p in params] == ["prompt", "model", "options"], fn
        assert params[1].default is None and params[2].kind is inspect.Parameter.VAR_KEYWORD
    assert inspect.iscoroutinefunction(nbchat.achat)
    conv = inspect.signature(nbchat.Conversation)
    assert list(conv.parameters)[:2] == ["model", "system"]
    for name in ("send", "stream", "messages", "reset"):
        assert hasattr(nbchat.Conversation, name), name
    for fn in (nbchat.models, nbchat.amodels):
        sig = inspect.signature(fn).parameters
        assert list(sig) == ["provider", "base_url", "api_key"], fn
        assert sig["base_url"].kind is sig["api_key"].kind is inspect.Parameter.KEYWORD_ONLY
    reply = {f.name for f in dataclasses.fields(nbchat.Reply)}
    assert {"text", "model", "usage", "finish_reason", "tool_calls"} <= reply
    assert isinstance(nbchat.Reply.images, property) and isinstance(nbchat.Reply.json, property)
    assert {f.name for f in dataclasses.fields(nbchat.Usage)} == {"input_tokens", "output_tokens"}
    assert {f.name for f in dataclasses.fields(nbchat.ToolCall)} >= {"name", "arguments"}
    info = {f.name for f in dataclasses.fields(nbchat.ModelInfo)}
    assert {"id", "provider", "stream", "tools", "json", "vision", "image_generation",
            "key_set"} <= info
    from nbchat.core.options import OPTION_NAMES

    assert {"temperature", "top_p", "max_tokens", "stop", "seed", "json", "schema", "tools",
            "tool_choice", "images", "system", "base_url", "api_key"} <= set(OPTION_NAMES)


def test_reply_images_are_pil_and_empty_for_text(fake):
    reply = nbchat.chat("x", model="fake:echo")
    assert reply.images == [] and reply.tool_calls == []


def test_the_provider_interface_is_public():
    """What a third-party provider needs is importable from `nbchat` itself, lazily."""
    import inspect

    from nbchat.core import credentials, provider, registry, types

    assert nbchat.Provider is provider.Provider and nbchat.Request is types.Request
    assert nbchat.Endpoint is credentials.Endpoint and nbchat.Secret is credentials.Secret
    for name in ("TextDelta", "ToolCallEvent", "ImageEvent", "Done", "ErrorEvent", "Event",
                 # what a turn's events() yields besides (tool loop, reasoning, refusals)
                 "ReasoningDelta", "RefusalDelta", "ToolResultEvent", "ToolStep", "SchemaRetry",
                 "Status"):
        assert getattr(nbchat, name) is getattr(types, name), name
        assert name in nbchat.__all__ and name in dir(nbchat)
    assert nbchat.register is registry.register and nbchat.unregister is registry.unregister
    assert list(inspect.signature(nbchat.Provider.stream).parameters) == [
        "self", "request", "endpoint"]
    assert list(inspect.signature(nbchat.Provider.list_models).parameters) == [
        "self", "endpoint"]
