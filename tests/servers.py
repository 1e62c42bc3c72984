"""A real OpenAI-compatible server for tests: `python -m llama_cpp.server` with SmolLM2.

`llama_server` (session scope) starts it on a free 127.0.0.1 port, polls `GET /v1/models`,
yields the base URL (ending in /v1) and stops it. Other test modules reuse it through
`pytest_plugins = ["servers"]` in conftest.py. Its model alias is "smollm2".
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import pytest

MODEL_ALIAS = "smollm2"
N_CTX = 2048


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_llama_server(n_ctx: int = N_CTX) -> tuple[str, subprocess.Popen[bytes], object]:
    from nbchat.providers.llamacpp import smollm2_path

    port = free_port()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", smollm2_path(),
         "--model_alias", MODEL_ALIAS, "--host", "127.0.0.1", "--port", str(port),
         "--n_ctx", str(n_ctx), "--n_threads", "2", "--verbose", "false",
         "--interrupt_requests", "false"],  # queue concurrent requests (batch tests)
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"llama_cpp.server exited: {log.read()[-2000:]!r}")
        try:
            if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                return base, proc, log
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("llama_cpp.server did not answer GET /v1/models within 90 s")
        time.sleep(0.2)


def stop_server(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="session")
def llama_server():
    """Base URL (…/v1) of a real llama_cpp.server serving SmolLM2 as "smollm2"."""
    base, proc, log = start_llama_server()
    try:
        yield base
    finally:
        stop_server(proc)
        log.close()  # type: ignore[attr-defined]


@pytest.fixture
def sleeps(monkeypatch):
    """Retry and polling delays, recorded instead of waited for (nbchat.core.http.sleep)."""
    from nbchat.core import http

    delays: list[float] = []

    async def no_sleep(seconds: float) -> None:
        delays.append(seconds)

    monkeypatch.setattr(http, "sleep", no_sleep)
    return delays
