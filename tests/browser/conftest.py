"""Real JupyterLab and Notebook 7 servers, Debian's Chromium through Playwright, and a loopback
OpenAI-compatible server that answers with hostile Markdown (for the XSS checks).

Everything listens on 127.0.0.1 free ports, lives in fresh temp dirs, and is stopped here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from servers import stop_server
from xss_corpus import CORPUS

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

#: what the hostile model says: raw HTML, a script, a javascript: link and a remote image
EVIL_REPLY = (
    "Hello <img src=x onerror=\"window.__xss='img'\"> and "
    "<script>window.__xss='script'</script> then [click me](javascript:window.__xss='link') "
    "and ![tracker](http://198.51.100.7/pixel.png) plus `<b>code</b>` and **bold**."
)
#: what it thinks first (reasoning_content), after a pause long enough for a status line
EVIL_REASONING = "Plotting <img src=x onerror=\"window.__xss='reasoning'\"> quietly."
EVIL_PAUSE = 2.5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _EvilHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802
        body = json.dumps({"object": "list", "data": [
            {"id": "evil", "object": "model", "created": 0, "owned_by": "test"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        prompt = request["messages"][-1]["content"]
        prompt = prompt if isinstance(prompt, str) else ""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        head = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "evil"}
        # a corpus marker asks for that payload and "corpus" for all of them, one character a
        # chunk, at once; anything else gets reasoning, then EVIL_REPLY a word at a time, slowly
        payloads = dict(CORPUS)
        corpus = prompt in payloads or prompt == "corpus"
        if corpus:
            every = "\n\n".join(p for _, p in CORPUS)
            chunks, pause = list(payloads.get(prompt, every)), 0.0
        else:
            # "long" asks for the reply four times over (about 15 s of streaming)
            words = (EVIL_REPLY + " ") * 4 if prompt == "long" else EVIL_REPLY
            chunks = [w if i == 0 else " " + w for i, w in enumerate(words.split(" "))]
            pause = 0.12
        try:
            if not corpus:
                time.sleep(EVIL_PAUSE)
                thought = {**head, "choices": [{"index": 0, "delta": {
                    "reasoning_content": EVIL_REASONING}, "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(thought)}\n\n".encode())
            for text in chunks:
                chunk = {**head, "choices": [{"index": 0, "delta": {"content": text},
                                              "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
                if pause:
                    time.sleep(pause)
            end = {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


@pytest.fixture(scope="session")
def evil_server():
    """Base URL (…/v1) of a loopback OpenAI-compatible server streaming EVIL_REPLY slowly."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EvilHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


NOTEBOOK_CELLS = [
    "import nbchat\nfrom nbchat import ChatPanel",
    "panel = ChatPanel('local', temperature=0, max_tokens=1000)\npanel",
    "nbchat.compare(['local', 'openai:evil'], 'Say hello.', temperature=0, max_tokens=48)",
    "evil = ChatPanel('openai:evil')\nevil",
]


def write_notebook(path: Path) -> None:
    nb = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": uuid.uuid4().hex[:8],
                   "metadata": {}, "outputs": [], "source": src} for src in NOTEBOOK_CELLS],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                    "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb))


class JupyterApp:
    def __init__(self, kind: str, base: str, token: str, root: Path) -> None:
        self.kind = kind
        self.base = base
        self.token = token
        self.root = root

    def url(self, notebook: str) -> str:
        prefix = "lab/tree" if self.kind == "lab" else "notebooks"
        return f"{self.base}/{prefix}/{notebook}?token={self.token}"


def start_jupyter(kind: str, tmp: Path, env_extra: dict[str, str]):
    port = free_port()
    token = uuid.uuid4().hex
    root = tmp / "root"
    root.mkdir()
    dirs = {name: tmp / name for name in ("config", "data", "runtime", "settings", "workspaces")}
    for d in dirs.values():
        d.mkdir()
    notif = dirs["settings"] / "@jupyterlab" / "apputils-extension"
    notif.mkdir(parents=True)
    (notif / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # save widget state into the notebook on save (off by default), so a reopened notebook
    # can show a ChatPanel's transcript without a kernel that holds the widget
    widgets = dirs["settings"] / "@jupyter-widgets" / "jupyterlab-manager"
    widgets.mkdir(parents=True)
    (widgets / "plugin.jupyterlab-settings").write_text(json.dumps({"saveState": True}))
    env = {
        **os.environ, **env_extra,
        "JUPYTER_CONFIG_DIR": str(dirs["config"]), "JUPYTER_DATA_DIR": str(dirs["data"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
        "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]),
        "IPYTHONDIR": str(tmp / "ipython"),
    }
    for var in ("CEREBRAS_API_KEY", "NVIDIA_API_KEY", "REPLICATE_API_TOKEN", "ANYSCALE_API_KEY",
                "OPENAI_API_KEY", "NBCHAT_DEFAULT_MODEL", "NBCHAT_LOCAL_MODEL"):
        env.pop(var, None)
    log = open(tmp / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", kind, "--no-browser", "--allow-root",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter {kind} exited; see {tmp / 'server.log'}")
        try:
            if httpx.get(f"{base}/api/status?token={token}", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"jupyter {kind} did not start in 60 s")
        time.sleep(0.2)
    return JupyterApp(kind, base, token, root), proc, log


@pytest.fixture(params=["lab", "notebook"])
def jupyter(request, tmp_path, evil_server):
    """A real JupyterLab or Notebook 7 server with a fresh root holding `chat.ipynb`."""
    app, proc, log = start_jupyter(request.param, tmp_path, {"OPENAI_BASE_URL": evil_server})
    write_notebook(app.root / "chat.ipynb")
    try:
        yield app
    finally:
        stop_server(proc, grace=15)
        log.close()


@pytest.fixture(scope="module")  # not session: Playwright keeps a running loop while open
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    context.close()
