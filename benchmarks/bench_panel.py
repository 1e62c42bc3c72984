"""Panel streaming cost: custom messages and bytes sent to the front end for a 2,000-token reply.

A ChatPanel on the real `openai:` provider streams 2,000 chunks from a loopback server, once
paced (2,000 tokens over ~2 s, like a fast cloud model) and once as a burst. Every message the
widget sends through its comm is counted (`data` as JSON, plus binary buffers; the Jupyter
envelope around each message is not counted). Targets: bytes <= 1.5x the reply's UTF-8 size;
messages bounded by the batching interval (duration / interval + 2), not by the token count.

    .venv/bin/python benchmarks/bench_panel.py
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from slow_sse import start_slow_server  # noqa: E402

from nbchat.notebook.panel import ChatPanel  # noqa: E402
from nbchat.notebook.widgets import BATCH_INTERVAL  # noqa: E402

TOKENS = 2000


def measure(seconds: float) -> dict[str, float]:
    base_url, stop = start_slow_server(n_chunks=TOKENS, seconds=seconds)
    panel = ChatPanel("openai:bench", base_url=base_url)
    sent: list[int] = []
    kinds: list[str] = []
    comm_send = panel.comm.send

    def counting(data=None, metadata=None, buffers=None):  # the widget's comm, one call per message
        if data.get("method") == "custom":
            sent.append(len(json.dumps(data)) + sum(len(b) for b in buffers or []))
            kinds.append(data["content"]["type"])
        return comm_send(data=data, metadata=metadata, buffers=buffers)

    panel.comm.send = counting

    async def run():
        start = time.perf_counter()
        panel.submit("Write 2,000 words.")
        reply = await panel.wait()
        return reply, time.perf_counter() - start

    try:
        reply, elapsed = asyncio.run(run())
    finally:
        stop()
    assert reply is not None and reply.error is None, reply
    size = len(reply.text.encode())
    return {
        "elapsed": elapsed, "messages": len(sent), "deltas": kinds.count("delta"),
        "bytes": sum(sent), "reply_bytes": size, "ratio": sum(sent) / size,
        "bound": elapsed / BATCH_INTERVAL + 2,
    }


def main() -> int:
    ok = True
    for label, seconds in (("paced ~2 s", 2.0), ("burst", 0.0)):
        m = measure(seconds)
        bytes_ok = m["ratio"] <= 1.5
        msgs_ok = m["messages"] <= m["bound"]
        ok = ok and bytes_ok and msgs_ok
        print(f"{label}: {TOKENS} tokens in {m['elapsed']:.2f} s, reply {m['reply_bytes']} bytes; "
              f"{m['messages']} custom messages ({m['deltas']} deltas, bound {m['bound']:.0f}) "
              f"{'OK' if msgs_ok else 'MISSED'}; {m['bytes']} bytes sent = "
              f"{m['ratio']:.3f}x the reply (target <= 1.5) {'OK' if bytes_ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
