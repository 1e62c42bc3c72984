"""The %%chat display path: bytes sent to the front end, and chunks rendered per second.

(a) A 2,000-token Markdown reply (paragraphs, lists, code fences) streamed at 55 tokens/s in
    real time by an in-process provider, through the real `%%chat` in an IPython shell. We
    count the payload of every display/update/clear message (data, metadata, transient, as
    JSON) against the reply's own size, and against a naive display that re-sends the whole
    reply rendered (sanitized HTML) every 0.1 s (computed from the same stream). Target: at
    most 3x. Also counted: the outputs the cell holds at the end (target: the reply as one
    output, plus its footer).
(b) 20,000 chunks from the loopback OpenAI-compatible server (benchmarks/loopback_sse.py)
    through the `openai:` provider and the `%%chat` display path, against the same stream
    consumed by `nbchat.stream` with no display (the peer, same run). Target: >= 8,000 chunks/s.

    .venv/bin/python benchmarks/bench_display.py [TOKENS] [CHUNKS]
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

import nbchat  # noqa: E402
from nbchat.core import registry  # noqa: E402
from nbchat.core.markdown import render_html  # noqa: E402
from nbchat.core.provider import Provider  # noqa: E402
from nbchat.core.types import Done, ModelInfo, TextDelta, Usage  # noqa: E402
from tests.fakes import realistic_reply  # noqa: E402


class Paced(Provider):
    """Streams given chunks at a fixed rate, on an absolute schedule."""

    name = "paced"

    def __init__(self, chunks: list[str], rate: float) -> None:
        self.chunks, self.rate = chunks, rate

    def known_models(self) -> list[ModelInfo]:
        return [ModelInfo(id="paced:model", provider="paced", key_set=True)]

    async def stream(self, request, endpoint):
        start = time.perf_counter()
        for i, c in enumerate(self.chunks):
            delay = start + i / self.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            yield TextDelta(c)
        yield Done("stop", Usage(1, len(self.chunks)))


def shell_counting() -> tuple[InteractiveShell, dict]:
    ip = InteractiveShell.instance()
    if "chat" not in ip.magics_manager.magics["cell"]:
        ip.run_line_magic("load_ext", "nbchat")
    stats = {"bytes": 0, "messages": 0, "outputs": 0}

    def publish(data, metadata=None, *, transient=None, update=False, **kw):
        payload = json.dumps({"data": data, "metadata": metadata or {},
                              "transient": transient or {}})
        stats["bytes"] += len(payload.encode())
        stats["messages"] += 1
        stats["outputs"] += 0 if update else 1

    def clear_output(wait=False):
        stats["bytes"] += len(json.dumps({"wait": wait}).encode())
        stats["messages"] += 1
        stats["outputs"] = 0

    ip.display_pub.publish = publish
    ip.display_pub.clear_output = clear_output
    return ip, stats


def bench_bytes(tokens: int) -> None:
    chunks = realistic_reply(tokens)
    size = len("".join(chunks).encode())
    registry.register(Paced(chunks, 55.0))
    ip, stats = shell_counting()
    t = time.perf_counter()
    result = ip.run_cell("%%chat -m paced:model\nWrite")
    took = time.perf_counter() - t
    assert result.error_in_exec is None, result.error_in_exec
    assert nbchat.last.text == "".join(chunks)
    # the naive peer: the whole reply so far rendered as one output, every 0.1 s
    per_update = max(1, round(55.0 * 0.1))
    naive = sum(len(json.dumps({"data": {"text/html": render_html("".join(chunks[:i]))},
                                "metadata": {}, "transient": {"display_id": "x" * 32}}))
                for i in range(per_update, len(chunks) + per_update, per_update))
    print(f"(a) {tokens} tokens at 55 tok/s in {took:.1f} s: reply {size} bytes; "
          f"%%chat sent {stats['bytes']} bytes in {stats['messages']} messages = "
          f"{stats['bytes'] / size:.2f}x (target <= 3x: "
          f"{'OK' if stats['bytes'] <= 3 * size else 'MISSED'}); "
          f"naive re-send every 0.1 s = {naive / size:.1f}x; outputs at the end: "
          f"{stats['outputs']} (the reply and its footer)")


def bench_chunks(n: int) -> None:
    try:
        import nbchat.providers.openai  # noqa: F401
        from benchmarks.loopback_sse import start_server
    except ImportError as exc:
        print(f"(b) skipped: {exc}")
        return
    base_url, stop = start_server(n)
    try:
        ip, stats = shell_counting()
        model = "openai:bench"
        # warm: connection pool, imports
        list(nbchat.stream("hi", model=model, base_url=base_url))
        t = time.perf_counter()
        count = sum(1 for _ in nbchat.stream("hi", model=model, base_url=base_url))
        raw = time.perf_counter() - t
        t = time.perf_counter()
        result = ip.run_cell(f"%%chat -m {model} --base-url {base_url} --new\nhi")
        shown = time.perf_counter() - t
        assert result.error_in_exec is None, result.error_in_exec
        assert nbchat.last.usage.output_tokens == n, nbchat.last.usage
    finally:
        stop()
    print(f"(b) {n} chunks over loopback SSE: nbchat.stream {count / raw:,.0f} chunks/s; "
          f"%%chat display path {n / shown:,.0f} chunks/s ({stats['messages']} messages, "
          f"{stats['bytes']} bytes); ratio {raw / shown:.2f} of raw "
          f"(target >= 8,000 chunks/s: {'OK' if n / shown >= 8000 else 'MISSED'})")


def main() -> None:
    tokens = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    chunks = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
    bench_chunks(chunks)
    bench_bytes(tokens)


if __name__ == "__main__":
    main()
