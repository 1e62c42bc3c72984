"""%%chat and %models through a real IPython shell; the real local model for generation."""

from __future__ import annotations

import _thread
import json
import os
import signal
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from fakes import FakeProvider
from faultserver import DONE, HOLD, STALL, sse_head, text_chunk
from htmlcheck import problems, visible_text
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import nbchat
from nbchat.core import registry
from nbchat.core.errors import ProviderError
from nbchat.core.markdown import render_html
from nbchat.core.types import ImagePart, Request
from nbchat.notebook.magics import ChatMagics, expand_models, fill_template, image_paths

LOCAL = "-m local -t 0 --seed 7"


class Shell:
    """A real InteractiveShell with our magics, recording what reaches the front end."""

    def __init__(self) -> None:
        self.ip = InteractiveShell.instance()
        self.magics = ChatMagics(shell=self.ip)
        self.ip.register_magics(self.magics)
        self.messages: list[dict] = []
        self._publish = self.ip.display_pub.publish
        self._clear = self.ip.display_pub.clear_output
        self.ip.display_pub.publish = self._record
        self.ip.display_pub.clear_output = self._record_clear

    def _record(self, data, metadata=None, *, transient=None, update=False, **kw):
        self.messages.append({"data": data, "transient": transient or {}, "update": update,
                              "metadata": metadata or {}})

    def _record_clear(self, wait=False):
        self.messages.append({"data": {}, "transient": {}, "update": False, "clear": True})

    def close(self) -> None:
        self.ip.display_pub.publish = self._publish
        self.ip.display_pub.clear_output = self._clear
        if self.magics in self.ip.configurables:
            self.ip.configurables.remove(self.magics)
        self.ip.config.pop("ChatMagics", None)  # %config must not leak into the next test

    def run(self, cell: str):
        self.messages.clear()
        return self.ip.run_cell(cell)

    def ok(self, cell: str):
        result = self.run(cell)
        assert result.error_in_exec is None, result.error_in_exec
        return result

    def error(self, cell: str) -> str:
        result = self.run(cell)
        assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
        return str(result.error_in_exec)

    def html(self) -> list[str]:
        """Every text/html payload sent (live, frozen and final)."""
        return [m["data"]["text/html"] for m in self.messages if "text/html" in m["data"]]

    def final_outputs(self) -> list[str]:
        """The outputs as the notebook keeps them (each display id at its last update, nothing
        before a clear): their HTML, or an image's base64."""
        outs: list[str] = []
        where: dict[str, int] = {}
        for m in self.messages:
            if m.get("clear"):
                outs, where = [], {}
                continue
            did = m["transient"].get("display_id")
            shown = m["data"].get("text/html", m["data"].get("image/png", ""))
            if m["update"]:
                outs[where[did]] = shown
            else:
                if did:
                    where[did] = len(outs)
                outs.append(shown)
        return outs

    def thread(self, name: str = "default"):
        return self.magics.threads[name]


@pytest.fixture
def sh():
    shell = Shell()
    yield shell
    shell.close()


class KeyedFake(FakeProvider):
    """A fake that needs a key, like every cloud provider."""

    key_env = "NBCHAT_FAKEKEY_API_KEY"

    async def stream(self, request: Request, endpoint):
        endpoint.require_key()
        async for ev in super().stream(request, endpoint):
            yield ev


# ---- loading ---------------------------------------------------------------------------


def test_load_ext_imports_nothing_heavy():
    code = textwrap.dedent("""
        import sys
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "nbchat")
        assert "chat" in ip.magics_manager.magics["cell"]
        assert "models" in ip.magics_manager.magics["line"]
        heavy = ["httpx", "llama_cpp", "ipywidgets", "anywidget", "PIL", "numpy",
                 "nbchat.core.api", "nbchat.providers.llamacpp"]
        print([m for m in heavy if m in sys.modules])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


# ---- the real local model --------------------------------------------------------------


def test_local_model_streams_markdown_and_footer(sh):
    sh.ok(f"%%chat {LOCAL} --max-tokens 40 --new\nName three colours.")
    reply = nbchat.last
    assert reply.model == "llamacpp:smollm2" and reply.text
    body, foot = sh.final_outputs()  # the reply as one output, then its footer
    assert visible_text(foot).startswith("llamacpp:smollm2 · ")
    assert "out tokens" in foot and "tok/s" in foot
    assert body == render_html(reply.text)
    assert sh.thread().history[-1].text == reply.text


def test_local_follow_up_uses_history(sh):
    sh.ok(f"%%chat {LOCAL} --max-tokens 20 --new\nMy name is Zorblat. Say hello.")
    sh.ok(f"%%chat {LOCAL} --max-tokens 20\nWhat is my name?")
    conv = sh.thread()
    assert [m.role for m in conv.history] == ["user", "assistant", "user", "assistant"]
    assert "Zorblat" in conv.history[0].text


def test_interrupt_stops_local_generation_and_next_cell_works(sh):
    sh.ok(f"%%chat {LOCAL} --max-tokens 3 --new\nHi")  # the model is loaded and warm
    provider = registry.get_provider("llamacpp")
    lock = next(iter(provider._models.values())).lock
    seen: list[str] = []

    def interrupt_on_third_update(data, metadata=None, *, transient=None, update=False, **kw):
        if "nbchat-status" in data.get("text/html", ""):
            return  # a status line ("waiting for the first token ..."), not reply text
        seen.append(data.get("text/plain", "") + data.get("text/html", ""))
        if len(seen) == 3:
            _thread.interrupt_main()  # what a kernel interrupt does: SIGINT to the main thread

    sh.ip.display_pub.publish = interrupt_on_third_update
    sh.magics.update_interval = 0.05
    # and a timer as a second, independent interrupt source
    old = signal.signal(signal.SIGALRM, lambda *a: _thread.interrupt_main())
    signal.setitimer(signal.ITIMER_REAL, 3.0)
    try:
        result = sh.run(f"%%chat {LOCAL} --max-tokens 400\nWrite a long story about a dragon.")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        sh.ip.display_pub.publish = sh._record
    assert isinstance(result.error_in_exec, UsageError)
    assert "interrupted" in str(result.error_in_exec)
    reply = nbchat.last
    assert reply.interrupted and reply.text
    assert reply.usage.output_tokens < 400
    assert "interrupted" in seen[-1]  # the footer says so
    assert lock.acquire(timeout=2.0)  # the worker thread stopped
    lock.release()
    last = sh.thread().history[-1]
    assert last.role == "assistant" and last.interrupted and last.text == reply.text
    sh.ok(f"%%chat {LOCAL} --max-tokens 5\nThanks.")
    assert not nbchat.last.interrupted and nbchat.last.text
    assert sh.thread().history[-1].text == nbchat.last.text


# ---- streaming mechanics, with the fake provider -----------------------------------------


def test_updates_stream_in_place_and_are_throttled(sh, fake):
    sh.magics.update_interval = 0.02
    words = [f"w{i} " for i in range(150)]
    fake.enqueue(*words, delay=0.002)
    sh.ok("%%chat -m fake:echo\nGo")
    live = [m for m in sh.messages if m["transient"].get("display_id")]
    assert sum(m["update"] for m in live) >= 2  # shown while it arrived, not only at the end
    assert len(sh.messages) < len(words) / 5  # not one message per token
    assert sh.final_outputs()[0] == render_html("".join(words))


def test_a_long_reply_ends_as_one_output_and_its_footer(sh, fake):
    """Issue 10: 80 paragraphs made 81 outputs, and a reopened notebook hid the end."""
    sh.magics.update_interval = 0.01
    text = "".join(f"Paragraph {i} with a few words in it.\n\n" for i in range(80))
    fake.enqueue(*[text[i:i + 8] for i in range(0, len(text), 8)], delay=0.0005)
    sh.ok("%%chat -m fake:echo\nGo")
    assert sum(1 for m in sh.messages if m.get("clear")) == 1
    body, foot = sh.final_outputs()
    assert body == render_html(text)
    assert visible_text(foot).startswith("fake:echo")


def test_only_the_outputs_that_stay_carry_the_provenance(sh, fake):
    """Streamed pieces are replaced at the end: provenance on each would cost bytes on every
    update; the final reply output and its footer carry it, and are saved with it."""
    sh.magics.update_interval = 0.01
    text = "".join(f"Paragraph {i} with a few words in it.\n\n" for i in range(60))
    fake.enqueue(*[text[i:i + 8] for i in range(0, len(text), 8)], delay=0.0005)
    sh.ok("%%chat -m fake:echo\nGo")
    cut = next(i for i, m in enumerate(sh.messages) if m.get("clear"))
    assert cut > 3 and not any(m["metadata"] for m in sh.messages[:cut])
    final = sh.messages[cut + 1:]
    assert [m["data"].get("text/html") for m in final][0] == render_html(text)
    assert all(m["metadata"]["nbchat"]["model"] == "fake:echo" for m in final)
    usage = final[-1]["metadata"]["nbchat"]["usage"]
    assert usage["output_tokens"] == nbchat.last.usage.output_tokens
    # a short reply needs no clearing: its one output, sent last, carries the provenance
    fake.enqueue("Short", " answer.")
    sh.ok("%%chat -m fake:echo\nGo")
    assert not any(m.get("clear") for m in sh.messages)
    kept = [m for m in sh.messages if m["metadata"]]
    assert [m["data"].get("text/html") for m in kept][0] == render_html("Short answer.")


def test_chat_in_a_cell_with_other_outputs_clears_nothing(sh, fake):
    """Only a cell that is all %%chat is cleared: a print before the magic stays."""
    sh.magics.update_interval = 0.01
    text = "".join(f"Paragraph {i} with a few words in it.\n\n" for i in range(40))
    fake.enqueue(*[text[i:i + 8] for i in range(0, len(text), 8)], delay=0.0005)
    sh.ok("print('mine')\nget_ipython().run_cell_magic('chat', '-m fake:echo', 'Go')")
    assert not any(m.get("clear") for m in sh.messages)
    *blocks, foot = sh.final_outputs()
    assert len(blocks) > 1
    assert visible_text("".join(blocks)).split() == visible_text(render_html(text)).split()


def test_no_stream_shows_once(sh, fake):
    fake.enqueue("a", "b", "c", delay=0.01)
    sh.ok("%%chat -m fake:echo --no-stream\nGo")
    assert sh.final_outputs()[0] == render_html("abc")
    assert not any(m["update"] for m in sh.messages)


def test_template_fills_variables(sh, fake):
    sh.ip.user_ns.update(who="Ada", data={"k": [1, 2]}, pi=3.14159)
    sh.ok('%%chat -m fake:echo\nHi {who}! {data[k]} {pi:.2f} {who!r} {"json": 1}')
    assert fake.requests[-1].messages[-1].text == "Hi Ada! [1, 2] 3.14 'Ada' {\"json\": 1}"


@pytest.mark.parametrize("cell", [
    '{"a": 1, "c": {"d": null}}',  # JSON with nested braces
    "{{ user.name }} and {{user}}",  # Jinja / Handlebars templates
    "def f(x):\n    return {x: 1 for x in range(3)}\nf'{nobody_here}'",  # code
    "Hi {nobody_here}, {a: 1}, {}",  # names that are not variables, spaces, empty braces
])
def test_braces_that_are_not_notebook_variables_are_sent_as_typed(sh, fake, cell):
    sh.ip.user_ns.update(user="U", x=5, a=2)
    sh.ok(f"%%chat -m fake:echo\n{cell}")
    assert fake.requests[-1].messages[-1].text == cell


def test_no_fill_sends_the_cell_exactly_as_typed(sh, fake):
    sh.ip.user_ns.update(who="Ada")
    sh.ok("%%chat -m fake:echo --no-fill\nHi {who}")
    assert fake.requests[-1].messages[-1].text == "Hi {who}"


def test_a_field_that_cannot_be_filled_says_why_before_sending(sh, fake):
    sh.ip.user_ns.update(pi=3.14, data={})
    for cell in ("{pi.nope}", "{data[missing]}", "{pi:zz}"):
        msg = sh.error(f"%%chat -m fake:echo\nValue: {cell}")
        assert cell in msg and "nothing was sent" in msg and "--no-fill" in msg
    assert fake.requests == []


def test_fill_template_pure():
    assert fill_template("{a}{{b}}{{a}}", {"a": 1, "b": 2}) == "1{{b}}{{a}}"
    with pytest.raises(UsageError, match="AttributeError"):
        fill_template("{a.nope}", {"a": 1})


def test_threads_new_and_model_switch(sh, fake):
    sh.ok("%%chat -m fake:echo\none")
    sh.ok("%%chat\ntwo")
    assert [m.text for m in fake.requests[-1].messages] == ["one", "one", "two"]
    sh.ok("%%chat -m fake:echo --thread side\nelsewhere")
    assert [m.text for m in fake.requests[-1].messages] == ["elsewhere"]
    sh.ok("%%chat -m fake:other\nthree")  # a new model keeps the history
    assert fake.requests[-1].model == "other"
    assert len(fake.requests[-1].messages) == 5
    sh.ok("%%chat\nfour")  # and stays for the thread
    assert fake.requests[-1].model == "other"
    sh.ok("%%chat --new -s 'Be brief.'\nfresh")
    assert [(m.role, m.text) for m in fake.requests[-1].messages] == [
        ("system", "Be brief."), ("user", "fresh")]
    sh.ok("%%chat\nagain")  # the system prompt stays with the thread
    assert fake.requests[-1].messages[0].text == "Be brief."


def test_as_and_last(sh, fake):
    fake.enqueue("stored")
    sh.ok("%%chat -m fake:echo --as answer\nGo")
    assert sh.ip.user_ns["answer"] is nbchat.last
    assert nbchat.last.text == "stored"
    assert sh.error("%%chat -m fake:echo --as 1bad\nGo").startswith("--as")


def test_config_traits(sh, fake):
    sh.ok("%config ChatMagics.default_model = 'fake:echo'")
    sh.ok("%config ChatMagics.temperature = 0.3")
    sh.ok("%config ChatMagics.max_tokens = 12")
    sh.ok("%%chat --seed 4 --stop 'END' --stop STOP --json\nGo")
    opts = fake.requests[-1].options
    assert (opts.temperature, opts.max_tokens, opts.seed, opts.stop, opts.json) == (
        0.3, 12, 4, ("END", "STOP"), True)
    sh.ok("%%chat -t 1.5\nGo")
    assert fake.requests[-1].options.temperature == 1.5


def test_schema_base_url_and_images_from_variables(sh, fake, tmp_path):
    png = ImagePart(b"\x89PNG\r\n\x1a\nfake", "image/png")
    path = tmp_path / "pic.png"
    path.write_bytes(png.data)
    sh.ip.user_ns.update(shape={"type": "object", "properties": {"a": {"type": "string"}}},
                         pic=png.data)
    sh.ok(f"%%chat -m fake:echo --schema shape --base-url http://127.0.0.1:9/v1 "
          f'--image pic --image {path}\n{{"a": "echoed, so the reply fits"}}')
    req = fake.requests[-1]
    assert req.options.schema["properties"] == {"a": {"type": "string"}} and req.options.json
    assert fake.endpoints[-1].base_url == "http://127.0.0.1:9/v1"
    assert [p.data for p in req.messages[-1].images] == [png.data, png.data]
    assert "nope" in sh.error("%%chat -m fake:echo --schema nope\nGo")
    assert "no variable or file" in sh.error("%%chat -m fake:echo --image ghost\nGo")


def test_bad_option_is_a_clear_error(sh, fake):
    msg = sh.error("%%chat -m fake:echo -t 5\nGo")
    assert "temperature" in msg and "0..2" in msg
    assert "max_tokens" in sh.error("%%chat -m fake:echo --max-tokens 0\nGo")
    assert fake.requests == []


def test_option_flags_help_comes_from_the_declaration():
    from nbchat.core.options import OPTIONS
    from nbchat.notebook.magics import NO_FLAG

    parser = ChatMagics.chat.parser
    by_dest = {a.dest: a for a in parser._actions}
    flagged = set()
    for name, option in OPTIONS.items():
        action = by_dest.get({"images": "image"}.get(name, name))
        if name in NO_FLAG:
            assert action is None, name
            continue
        assert action is not None, f"%%chat has no flag for option {name!r}"
        assert action.help.replace("%%", "%").startswith(option.help), name
        flagged.add(name)
    assert flagged == set(OPTIONS) - set(NO_FLAG)
    # what `%%chat?` shows: each description with its range, as argparse lays it out
    shown = " ".join(ChatMagics.chat.__doc__.split())
    for name in ("temperature", "top_p", "max_tokens", "seed", "logprobs"):
        assert f"{OPTIONS[name].description} ({OPTIONS[name].range})" in shown, name
    # and %config ChatMagics.<option> describes the same option
    assert OPTIONS["temperature"].help in ChatMagics.class_traits()["temperature"].help


def test_unknown_model_shows_close_matches(sh):
    msg = sh.error("%%chat -m llamacpp:smollm\nGo")
    assert "llamacpp:smollm2" in msg and "%models" in msg


def test_missing_key_says_which_variable(sh, monkeypatch):
    monkeypatch.delenv("NBCHAT_FAKEKEY_API_KEY", raising=False)
    registry.register(KeyedFake("keyed"))
    try:
        msg = sh.error("%%chat -m keyed:echo\nGo")
    finally:
        registry.unregister("keyed")
    assert "NBCHAT_FAKEKEY_API_KEY" in msg
    assert "Traceback" not in msg


def test_cerebras_missing_key_when_that_provider_exists(sh):
    import importlib.util

    if importlib.util.find_spec("nbchat.providers.cerebras") is None:
        # no cerebras module in this checkout: still a short message naming it, no traceback
        assert "nbchat.providers.cerebras" in sh.error("%%chat -m cerebras:llama3.1-70b\nGo")
    else:
        assert "CEREBRAS_API_KEY" in sh.error("%%chat -m cerebras:llama3.1-70b\nGo")


@pytest.mark.parametrize("bad, forbidden", [
    ("<img src=x onerror=alert(1)>", "<img"),
    ("<script>alert(1)</script>", "<script"),
    ("[click](javascript:alert(1))", 'href="javascript'),
    ("![leak](https://evil.example/x.png?q=secret)", "<img"),
])
def test_model_output_is_escaped(sh, fake, bad, forbidden):
    fake.enqueue("Hello ", bad, "\n\nmore ", bad)
    sh.ok("%%chat -m fake:echo\nGo")
    sent = sh.html()
    assert sent and all(problems(h) == [] for h in sent)
    assert not any(forbidden in h for h in sent)


def test_error_mid_stream_keeps_partial_text(sh, fake):
    fake.enqueue("partial ", "text", error=ProviderError("overloaded", status=503, provider="fake"))
    msg = sh.error("%%chat -m fake:echo\nGo")
    assert "503" in msg and "overloaded" in msg
    assert "partial text" in visible_text("".join(sh.final_outputs()))
    assert nbchat.last.text == "partial text"
    assert sh.thread().history[-1].text == "partial text"
    fake.enqueue("fine")
    sh.ok("%%chat\nretry")
    assert nbchat.last.text == "fine"


def test_images_are_shown_and_saved(sh, fake, tmp_path):
    from PIL import Image

    def png(color):
        import io

        buf = io.BytesIO()
        Image.new("RGB", (4, 4), color).save(buf, format="PNG")
        return ImagePart(buf.getvalue(), "image/png")

    fake.enqueue("Here:", images=[png("red")])
    one = tmp_path / "one.png"
    sh.ok(f"%%chat -m fake:echo --save {one}\nDraw")
    images = [m["data"]["image/png"] for m in sh.messages if "image/png" in m["data"]]
    assert len(images) == 1
    assert Image.open(one).getpixel((0, 0)) == (255, 0, 0)
    fake.enqueue(images=[png("red"), png("blue")])
    sh.ok(f"%%chat -m fake:echo --save {tmp_path / 'many.png'}\nDraw two")
    assert Image.open(tmp_path / "many_2.png").getpixel((0, 0)) == (0, 0, 255)
    assert image_paths("out/{i}.jpg", 2) == ["out/1.jpg", "out/2.jpg"]
    assert image_paths("x.png", 1) == ["x.png"]


def test_tool_calls_are_listed(sh, fake):
    from nbchat.core.types import ToolCall

    fake.enqueue(tool_calls=[ToolCall("get_weather", {"city": "<b>Oslo</b>"})])
    sh.ok("%%chat -m fake:echo\nWeather?")
    calls = [h for h in sh.html() if "Tool calls" in h]
    assert calls and "get_weather" in calls[0] and "<b>" not in calls[0]
    assert '{"city": "<b>Oslo</b>"}' in visible_text(calls[0])


# ---- compare delegation ------------------------------------------------------------------


def test_several_models_delegate_to_compare(sh, fake, monkeypatch):
    calls = []

    def compare(models, prompt, **options):
        calls.append((models, prompt, options))
        return {m: f"reply of {m}" for m in models}

    monkeypatch.setitem(sys.modules, "nbchat.notebook.compare",
                        types.SimpleNamespace(compare=compare))
    sh.ok("%%chat -m fake:echo,local -t 0 --as both\nSame {x}".replace("{x}", "question"))
    assert calls == [(["fake:echo", "local"], "Same question", {"temperature": 0.0})]
    assert sh.ip.user_ns["both"] is nbchat.last and set(nbchat.last) == {"fake:echo", "local"}
    assert expand_models("fake:*") == ["fake:echo", "fake:other"]


def test_compare_missing_module_is_a_clear_error(sh, monkeypatch):
    monkeypatch.setitem(sys.modules, "nbchat.notebook.compare", None)
    msg = sh.error("%%chat -m a:b,c:d\nGo")
    assert "compare" in msg


def test_config_keys_and_base_urls_reach_the_wire_redacted(sh, capsys, caplog, monkeypatch):
    import httpx

    from nbchat.providers.cerebras import CerebrasProvider

    wire = (Path(__file__).parent / "wire" / "cerebras_stream.sse").read_bytes()
    seen: list[httpx.Request] = []

    def host(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=wire, headers={"content-type": "text/event-stream"})

    monkeypatch.setenv("CEREBRAS_API_KEY", "csk-environmentloses1")
    registry.register(CerebrasProvider(transport=httpx.MockTransport(host)))
    try:
        sh.ok('%config ChatMagics.api_keys = {"cerebras": "csk-configkey123456\\n"}')
        sh.ok('%config ChatMagics.base_urls = {"cerebras": "https://proxy.example/v1"}')
        sh.ok("%%chat -m cerebras:llama3.1-8b\nHi")
        assert nbchat.last.text == "Fast inference"
        assert str(seen[-1].url) == "https://proxy.example/v1/chat/completions"
        assert seen[-1].headers["authorization"] == "Bearer csk-configkey123456"
        capsys.readouterr()
        sh.ok("%config ChatMagics")
        shown = capsys.readouterr().out
        assert "api_keys" in shown and "Secret('***')" in shown and "configkey" not in shown
        # a misspelt provider is refused with the name it means; the previous keys stay
        sh.run('%config ChatMagics.api_keys = {"cerebas": "csk-typo123456789"}')
        assert "Did you mean 'cerebras'?" in caplog.text and "typo" not in caplog.text
        sh.run('%config ChatMagics.api_keys = {"cerebras": "csk-two words"}')
        assert "copy it again" in caplog.text and "words" not in caplog.text
        sh.ok("%%chat -m cerebras:llama3.1-8b\nHi again")
        assert seen[-1].headers["authorization"] == "Bearer csk-configkey123456"
        # an empty mapping gives the environment back
        sh.ok("%config ChatMagics.api_keys = {}")
        sh.ok("%%chat -m cerebras:llama3.1-8b\nHi")
        assert seen[-1].headers["authorization"] == "Bearer csk-environmentloses1"
        # keys set in ipython_config.py apply from %load_ext on
        sh.ip.config.ChatMagics.api_keys = {"cerebras": "csk-fromprofile7890"}
        second = ChatMagics(shell=sh.ip)
        sh.ip.configurables.remove(second)
        sh.ip.register_magics(second)
        sh.ok("%%chat -m cerebras:llama3.1-8b\nHi")
        assert seen[-1].headers["authorization"] == "Bearer csk-fromprofile7890"
    finally:
        registry.unregister("cerebras")
        sh.ip.register_magics(sh.magics)


# ---- %models -------------------------------------------------------------------------------


def test_models_table(sh, fake, monkeypatch):
    monkeypatch.setenv("NBCHAT_FAKEKEY_API_KEY", "sk-supersecretvalue123")
    monkeypatch.delenv("NBCHAT_FAKEKEY2_API_KEY", raising=False)

    class Keyed2(KeyedFake):
        key_env = "NBCHAT_FAKEKEY2_API_KEY"

        def known_models(self):
            return [m.__class__(**{**m.__dict__, "key_set": self.key_set(),
                                   "key_env": self.key_env,
                                   "id": m.id.replace("keyless", "keyless")})
                    for m in super().known_models()]

    class Broken(FakeProvider):
        def known_models(self):
            raise RuntimeError("table <b>lost</b>")

        async def list_models(self, **kw):
            raise RuntimeError("table <b>lost</b>")

    registry.register(Keyed2("keyless"))
    registry.register(Broken("broken"))
    monkeypatch.setitem(registry._BUILTIN, "ghost", "nbchat.providers.ghost_nowhere:Ghost")
    try:
        sh.ok("%models")
        html = sh.messages[-1]["data"]["text/html"]
        plain = sh.messages[-1]["data"]["text/plain"]
    finally:
        registry.unregister("keyless")
        registry.unregister("broken")
    assert "llamacpp:smollm2" in html and "fake:echo" in html
    assert "❌ set NBCHAT_FAKEKEY2_API_KEY" in html
    assert "stream, tools, JSON" in html
    assert "ghost" in html and "cannot be imported" in html  # noted, not fatal
    assert "table &lt;b&gt;lost&lt;/b&gt;" in html and "<b>" not in html
    assert "supersecret" not in html + plain
    sh.ok("%models fake")
    html = sh.messages[-1]["data"]["text/html"]
    assert "fake:echo" in html and "llamacpp" not in html
    assert "unknown model" in sh.error("%models nosuchprovider").lower()


def test_reply_repr_uses_the_same_escaping(sh, fake):
    fake.enqueue("<script>x</script>")
    sh.ok("%%chat -m fake:echo\nGo")
    shown = sh.final_outputs()[0]
    assert shown == render_html("<script>x</script>") and "&lt;script&gt;" in shown
    bundle, _ = nbchat.last._repr_mimebundle_()
    assert set(bundle) == {"text/html", "text/plain"}  # no text/markdown for a second parser
    assert shown in bundle["text/html"] and problems(bundle["text/html"]) == []


def test_extension_loads_in_a_shell():
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "nbchat")
    assert "chat" in ip.magics_manager.magics["cell"]
    assert os.path.basename(nbchat.__file__) == "__init__.py"


def test_tools_tool_choice_logprobs_and_top_p(sh, fake):
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    sh.ip.user_ns.update(add=add, kit=[add, {"name": "lookup", "parameters": {"type": "object"}}])
    sh.ok("%%chat -m fake:echo --tools kit --tool-choice required --logprobs 0 --top-p 0.5\nGo")
    opts = fake.requests[-1].options
    assert [t.name for t in opts.tools] == ["add", "lookup"]
    assert opts.tools[0].parameters["properties"]["a"] == {"type": "integer"}
    assert (opts.tool_choice, opts.logprobs, opts.top_p) == ("required", 0, 0.5)
    sh.ok("%%chat -m fake:echo --tools add --tool-choice add\nGo")
    assert fake.requests[-1].options.tool_choice == "add"
    assert "ghost" in sh.error("%%chat -m fake:echo --tools ghost\nGo")
    assert "tool_choice" in sh.error("%%chat -m fake:echo --tools add --tool-choice sub\nGo")


def test_models_table_rows_pure():
    from nbchat.core.types import ModelInfo
    from nbchat.notebook.table import ModelTable

    table = ModelTable([
        ModelInfo(id="a:x", provider="a", tools=True, json=True, vision=True, key_set=True,
                  key_env="A_KEY"),
        ModelInfo(id="b:img", provider="b", stream=False, image_generation=True,
                  key_env="B_TOKEN"),
        ModelInfo(id="c:local", provider="c", key_set=True),
    ])
    assert table.rows() == [
        ("a:x", "a", "stream, tools, JSON, vision", "✅"),
        ("b:img", "b", "image generation", "❌ set B_TOKEN"),
        ("c:local", "c", "stream", "✅"),
    ]
    assert "<td>❌ set B_TOKEN</td>" in table._repr_html_() and "b:img" in repr(table)


# ---- what the wire sends, as the cell shows it (loopback server: tests/faultserver.py) -------


def test_a_wait_shows_a_status_line_that_is_emptied_when_the_reply_ends(sh, fault_server):
    fault_server.script(1.3, sse_head(), text_chunk("Hello"), text_chunk(finish="stop"), DONE)
    sh.ok(f"%%chat -m openai:m --base-url {fault_server.base}\nHi")
    status = [m for m in sh.messages if "nbchat-status" in m["data"].get("text/html", "")]
    assert status and "waiting for openai, 1 s" in status[0]["data"]["text/html"]
    did = status[0]["transient"]["display_id"]
    last = [m for m in sh.messages if m["transient"].get("display_id") == did][-1]
    assert last["update"] and last["data"] == {"text/plain": ""}  # nothing stale is saved
    body, foot = sh.final_outputs()  # and the emptied line went: one output plus the footer
    assert body == render_html("Hello") and "openai:m" in visible_text(foot)


def test_a_wait_before_a_reply_shown_at_the_end_leaves_one_output(sh, fault_server):
    fault_server.script(1.3, sse_head(), text_chunk("Hello"), text_chunk(finish="stop"), DONE)
    sh.ok(f"%%chat -m openai:m --no-stream --base-url {fault_server.base}\nHi")
    assert any("nbchat-status" in m["data"].get("text/html", "") for m in sh.messages)
    body, foot = sh.final_outputs()
    assert body == render_html("Hello") and "openai:m" in visible_text(foot)


def test_timeouts_from_config_and_the_command_line(sh, fault_server):
    fault_server.script(STALL)
    sh.ok("%config ChatMagics.first_byte_timeout = 0.3")
    msg = sh.error(f"%%chat -m openai:m --base-url {fault_server.base}\nHi")
    assert "within 0.3 s" in msg and "first-byte timeout" in msg
    fault_server.only(sse_head(), *[text_chunk("a"), 0.2] * 30, HOLD)
    msg = sh.error(f"%%chat -m openai:m --base-url {fault_server.base} --timeout 0.7\nHi")
    assert "stopped after 0.7 s" in msg and nbchat.last.text.startswith("aa")


def test_reasoning_is_shown_collapsed_and_an_empty_answer_is_explained(sh, fault_server):
    fault_server.script(sse_head(), text_chunk(reasoning_content="Hmm <script>x()</script>"),
                        text_chunk(reasoning_content=" more."), text_chunk(finish="length"), DONE)
    sh.ok(f"%%chat -m openai:m --base-url {fault_server.base}\nHi")
    html = sh.final_outputs()
    [thought] = [h for h in html if "<details" in h]
    assert '<details class="nbchat-reasoning"><summary>Reasoning</summary>' in thought
    assert "Hmm &lt;script&gt;x()&lt;/script&gt; more." in thought and "<script>" not in thought
    assert problems(thought) == []
    assert any("finish_reason: length" in h and "max_tokens" in h for h in html)
    assert any("nbchat-footer" in h and "openai:m" in h for h in html)  # even with no answer
    assert nbchat.last.reasoning == "Hmm <script>x()</script> more." and nbchat.last.text == ""


def test_an_emoji_split_across_chunks_reaches_the_cell_and_nbchat_last(sh, fault_server):
    fault_server.script(sse_head(), text_chunk("Hi \ud83d"), text_chunk("\ude00"),
                        text_chunk(finish="stop"), DONE)
    sh.ok(f"%%chat -m openai:m --base-url {fault_server.base}\nHi")
    assert nbchat.last.text == "Hi \U0001f600"
    assert visible_text(sh.final_outputs()[0]).strip() == "Hi \U0001f600"
    json.dumps(sh.messages, ensure_ascii=False).encode("utf-8")  # what the kernel would send


def test_a_mistyped_flag_gets_a_did_you_mean(sh, fake):
    """argparse (before Python 3.12) only names the flag it does not know; the error also says
    which flag was meant, and nothing is sent."""
    err = sh.error("%%chat -m fake:echo --tempreature 0\nHi")
    assert "--tempreature" in err and "did you mean --temperature?" in err
    err = sh.error("%%chat -m fake:echo --max-tokns=5\nHi")
    assert "did you mean --max-tokens" in err and not fake.requests
