"""No API key leaves the kernel, whatever goes wrong on the wire.

A fake key, made of characters no redaction pattern knows, is given the three ways a user can
(`api_key=`, `%config ChatMagics.api_keys`, the environment). Each failure path is played by a
loopback server (tests/faultserver.py) that echoes the key back in its error bodies and streams,
as proxies that echo request headers do: 401, 403, 5xx, refused connection, bad URL, first-byte
and idle timeouts, an error record mid-stream, a dropped stream, and a good reply. Every place
the key could surface is scanned: error messages, reprs and attributes, tracebacks with every
frame's locals (what `%xmode Verbose`, `pytest -l` and rich print), DEBUG log records,
warnings, cell outputs, widget state and messages, and a notebook saved after running.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import traceback
from pathlib import Path
from typing import Any

import nbformat
import pytest
from faultserver import (
    CLOSE,
    DONE,
    HOLD,
    STALL,
    FaultServer,
    head,
    json_answer,
    record,
    sse_head,
    text_chunk,
)
from IPython.core.interactiveshell import InteractiveShell

import nbchat
from nbchat.core import credentials
from nbchat.notebook.compare import CompareView
from nbchat.notebook.magics import ChatMagics
from nbchat.notebook.panel import ChatPanel

KEY = "zzleak-" + secrets.token_hex(16)
PATHS = ["401", "403", "5xx", "refused", "bad-url", "first-byte timeout", "idle timeout",
         "mid-stream error", "mid-stream drop", "echoed in the reply", "ok"]
SOURCES = ["argument", "config", "environment"]


def leaks(text: str) -> list[str]:
    """Pieces of the key in `text`: the whole key or any 8 characters of its random part."""
    tail = KEY[len("zzleak-"):]
    found = [KEY] if KEY in text else []
    found += [tail[i:i + 8] for i in range(len(tail) - 7) if tail[i:i + 8] in text]
    return found


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def arrange(path: str, server: FaultServer) -> tuple[str, dict[str, Any]]:
    """Script `server` for one failure path; (base URL, extra options) to reach it."""
    echoed = f"Bearer {KEY}"
    options: dict[str, Any] = {}
    base = server.base
    if path == "401":
        server.only(json_answer(401, {"error": {
            "message": f"Incorrect API key provided: {KEY}.", "type": "invalid_request_error"}}))
    elif path == "403":
        server.only(json_answer(403, {"status": 403, "title": "Forbidden",
                                      "detail": f"{echoed} may not use this model"}))
    elif path == "5xx":
        page = f"upstream failed; request headers were Authorization: {echoed}\n".encode() * 40
        server.only(head(502, "text/plain", length=len(page)) + page)
    elif path == "refused":
        base = f"http://127.0.0.1:{closed_port()}/v1"
    elif path == "bad-url":
        base = "htp://127.0.0.1:9/v1"
    elif path == "first-byte timeout":
        server.only(STALL)
        options["timeout"] = {"first_byte": 0.3}
    elif path == "idle timeout":
        server.only(sse_head(), HOLD)
        options["timeout"] = {"idle": 0.3}
    elif path == "mid-stream error":
        server.only(sse_head(), text_chunk("Hello"),
                    record({"error": {"message": f"proxy refused {echoed}", "code": 502}}), DONE)
    elif path == "mid-stream drop":
        server.only(sse_head(), text_chunk(f"Hello {KEY[:3]}"), 0.05, CLOSE)
    elif path == "echoed in the reply":  # a proxy or a model repeating the request's headers
        cut = 12  # the key split across chunks, and again whole
        server.only(sse_head(), text_chunk(f"Your header: {echoed[:cut]}"),
                    text_chunk(f"{echoed[cut:]} and again {KEY}."),
                    text_chunk(" Done", finish="stop"), DONE)
    else:
        server.only(sse_head(), text_chunk("Hello", finish="stop"), DONE)
    return base, options


@pytest.fixture
def key_from(monkeypatch):
    """Give the key one of the three ways; returns the call's extra options."""
    def give(source: str) -> dict[str, Any]:
        if source == "argument":
            return {"api_key": KEY}
        if source == "config":
            credentials.configure(api_keys={"openai": KEY})
        else:
            monkeypatch.setenv("OPENAI_API_KEY", KEY)
        return {}

    yield give
    credentials.configure(api_keys={})


@pytest.fixture
def quick_retries(monkeypatch):
    from nbchat.core import http

    async def no_wait(seconds: float) -> None:
        return None

    monkeypatch.setattr(http, "sleep", no_wait)


NBCHAT = str(Path(nbchat.__file__).parent)


def with_locals(exc: BaseException) -> str:
    """The traceback as locals-printing tools show it: every nbchat frame, every local, repr'd
    (the caller's own frames, which hold what the caller gave, are left out), chained errors
    included."""
    out = [repr(exc)]
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        frames = [(f, n) for f, n in traceback.walk_tb(exc.__traceback__)
                  if f.f_code.co_filename.startswith(NBCHAT)]
        stack = traceback.StackSummary.extract(iter(frames), capture_locals=True)
        out += stack.format()
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return "".join(out)


def deep_locals(exc: BaseException) -> str:
    """Every local of every frame in the tracebacks of `exc` and the errors it was raised from
    or during, library frames included (httpcore's hold the request it sent), and one level
    into each local's attributes (httpcore's `Request.headers` is a list of byte pairs): what a
    debugger or a locals-walking tool can reach. The test's own frames are left out."""
    out: list[str] = []
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        for frame, _ in traceback.walk_tb(e.__traceback__):
            if frame.f_code.co_filename == __file__:
                continue
            for name, value in list(frame.f_locals.items()):
                where = f"{frame.f_code.co_filename}:{frame.f_code.co_name}.{name}"
                out.append(f"{where}={_safe_repr(value)}")
                try:
                    out += [f"{where}.{k}={_safe_repr(v)}" for k, v in vars(value).items()]
                except TypeError:  # no __dict__
                    pass
        todo += [e.__cause__, e.__context__]
    return "\n".join(out)


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - a repr that fails shows nothing
        return ""


def everything_about(exc: BaseException) -> str:
    parts = [str(exc), repr(exc), with_locals(exc), deep_locals(exc)]
    parts += [repr(v) for v in vars(exc).values()]
    reply = getattr(exc, "reply", None)
    if reply is not None:
        parts += [repr(reply), json.dumps(reply._repr_mimebundle_()), reply.footer()]
    return "\n".join(parts)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("path", PATHS)
def test_python_api(path, source, fault_server, key_from, quick_retries, caplog, recwarn):
    caplog.set_level(logging.DEBUG)
    base, options = arrange(path, fault_server)
    options |= key_from(source)
    seen: list[str] = []
    conv = nbchat.Conversation(model="openai:m", base_url=base, **options)
    for call in (lambda: nbchat.chat("hi", model="openai:m", base_url=base, **options),
                 lambda: "".join(nbchat.stream("hi", model="openai:m", base_url=base,
                                               **options)),
                 lambda: conv.send("hi")):
        try:
            seen.append(repr(call()))
        except Exception as exc:  # noqa: BLE001 - every failure is scanned, whatever its type
            seen.append(everything_about(exc))
    if path in ("401", "403", "ok"):  # listing goes through the same HTTP layer
        try:
            seen.append(repr(nbchat.models("openai", base_url=base, **options)))
        except Exception as exc:  # noqa: BLE001
            seen.append(everything_about(exc))
    seen += [repr(conv), repr(conv.history), repr(conv.replies), repr(conv.settings)]
    seen += [r.getMessage() + repr(r.args) + repr(r.__dict__) for r in caplog.records]
    seen += [str(w.message) for w in recwarn]
    if fault_server.requests and path not in ("refused", "bad-url"):
        # the key really went out (so finding none of it afterwards means something)
        assert fault_server.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert leaks("\n".join(seen)) == []


class Shell:
    """A real IPython shell with nbchat loaded and `%xmode Verbose`; records every output."""

    def __init__(self) -> None:
        self.ip = InteractiveShell.instance()
        self.magics = ChatMagics(shell=self.ip)
        self.ip.register_magics(self.magics)
        self.outputs: list[Any] = []
        self._publish = self.ip.display_pub.publish
        self.ip.display_pub.publish = lambda data, *a, **kw: self.outputs.append(data)

    def run(self, cell: str) -> None:
        result = self.ip.run_cell(cell)
        self.outputs.append(repr(result.error_in_exec))

    def close(self) -> None:
        self.ip.display_pub.publish = self._publish
        if self.magics in self.ip.configurables:
            self.ip.configurables.remove(self.magics)
        self.ip.config.pop("ChatMagics", None)
        self.ip.run_line_magic("xmode", "Context")


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("path", PATHS)
def test_cells_with_verbose_tracebacks(path, source, fault_server, key_from, quick_retries,
                                       capsys, caplog):
    caplog.set_level(logging.DEBUG)
    base, options = arrange(path, fault_server)
    sh = Shell()
    try:
        sh.ip.user_ns["getkey"] = lambda: KEY  # a user's own way to hand the key over
        if source == "config":
            sh.run('%config ChatMagics.api_keys = {"openai": getkey()}')
        else:
            key_from(source)
        extra = ", api_key=getkey()" if source == "argument" else ""
        limits = f", timeout={options['timeout']!r}" if "timeout" in options else ""
        sh.run("%xmode Verbose")
        sh.run(f"import nbchat\nreply = nbchat.chat('hi', model='openai:m', base_url={base!r}"
               f"{extra}{limits})\nreply")
        if source != "argument":  # %%chat takes the key from %config or the environment
            flag = f" --timeout {options['timeout'].get('first_byte', 0) + 5}" if limits else ""
            sh.run(f"%%chat -m openai:m --base-url {base}{flag}\nHi")
        sh.run("nbchat.last")
        captured = capsys.readouterr()
        text = "\n".join([captured.out, captured.err, json.dumps(sh.outputs, default=repr)]
                         + [r.getMessage() for r in caplog.records])
        answered = path in ("ok", "echoed in the reply")
        assert "Traceback" in text or answered or source != "argument" or "Error" in text
        assert leaks(text) == []
    finally:
        sh.close()


@pytest.mark.parametrize("path", PATHS)
def test_widget_state_and_messages(path, fault_server, quick_retries):
    import asyncio

    base, options = arrange(path, fault_server)
    panel = ChatPanel("openai:m", base_url=base, api_key=KEY, **options)
    sent: list[Any] = []
    panel.send = lambda content, buffers=None: sent.append(content)  # type: ignore[method-assign]
    view = CompareView(["openai:m"], base_url=base, api_key=KEY, **options)
    view.send = lambda content, buffers=None: sent.append(content)  # type: ignore[method-assign]

    async def main() -> None:
        panel.submit("hi")
        await panel.wait()
        await view.arun("hi")

    asyncio.run(main())
    states = [{k: v for k, v in w.get_state().items() if k not in ("_esm", "_css")}
              for w in (panel, view)]
    text = json.dumps([states, sent, panel.to_json(), panel.to_markdown(),
                       repr(panel.conversation)], default=repr)
    assert leaks(text) == []


def test_a_saved_notebook(tmp_path, monkeypatch):
    """Run a notebook through a real kernel (nbclient), every path in its cells, and save it."""
    from nbclient import NotebookClient

    servers = {p: FaultServer() for p in PATHS}
    try:
        cells = ["%load_ext nbchat\n%xmode Verbose\nimport nbchat\nfrom nbchat import ChatPanel\n"
                 "%config ChatMagics.first_byte_timeout = 0.5\n"
                 "%config ChatMagics.idle_timeout = 0.5"]
        for path, server in servers.items():
            base, options = arrange(path, server)
            limits = f", timeout={options['timeout']!r}" if "timeout" in options else ""
            cells += [
                f"%%chat -m openai:m --base-url {base} --new\nHi",
                f"nbchat.chat('hi', model='openai:m', base_url={base!r}{limits})",
                f"p = ChatPanel('openai:m', base_url={base!r}{limits})\np",
                "await p.submit('hi')\np.transcript",
            ]
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        monkeypatch.setenv("OPENAI_API_KEY", KEY)  # the kernel inherits it
        NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
        saved = tmp_path / "saved.ipynb"
        nbformat.write(nb, saved)
        text = saved.read_text()
        assert "Incorrect API key provided" in text  # the errors are there, keys redacted
        assert "application/vnd.jupyter.widget-state+json" in text  # and the widget state
        assert leaks(text) == []
        for server in servers.values():
            if server.requests:
                assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"
    finally:
        for server in servers.values():
            server.close()
