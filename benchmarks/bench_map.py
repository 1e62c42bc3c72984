"""`nbchat.map` throughput: 1,000 rows at concurrency 32 against a loopback server answering each
request in 50 ms finish within 1.2x the ideal (1,000 / 32 x 50 ms = 1.5625 s), progress bar on.

The server (benchmarks/loopback_sse.py, 5 chunks a reply, 50 ms before each answer, requests
waiting in parallel) runs in its own process, so it does not share the client's interpreter.
Each run logs into a fresh temp log, so no row is answered from an earlier run's replies
(nbchat.map resumes from the log). The ratio is elapsed / ideal, the best of 3. The peer, in
the same run: the same 1,000 streamed requests sent by raw httpx (an `AsyncClient` with
nbchat's pool limits, a semaphore of 32, nothing else), so the machine's own floor shows.

    .venv/bin/python benchmarks/bench_map.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

ROWS, CONCURRENCY, DELAY = 1000, 32, 0.050
TARGET = 1.2


def raw_httpx(base_url: str) -> float:
    """Seconds for the same requests through httpx alone (the peer)."""
    import asyncio

    import httpx

    async def run() -> float:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)  # nbchat's
        async with httpx.AsyncClient(limits=limits) as client:
            sem = asyncio.Semaphore(CONCURRENCY)

            async def one(i: int) -> None:
                body = {"model": "bench", "stream": True,
                        "messages": [{"role": "user", "content": f"row number {i} ({i})"}]}
                async with sem, client.stream("POST", f"{base_url}/chat/completions",
                                              json=body) as response:
                    async for _ in response.aiter_bytes():
                        pass

            await asyncio.gather(*(one(i) for i in range(CONCURRENCY)))  # warm
            start = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(ROWS)))
            return time.perf_counter() - start

    return min(asyncio.run(run()) for _ in range(3))


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    server = subprocess.Popen([sys.executable, os.path.join(here, "loopback_sse.py"), "5",
                               str(DELAY)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        peer = raw_httpx(base_url)
        import nbchat

        rows = [{"id": i, "text": f"row number {i}"} for i in range(ROWS)]
        nbchat.map("{text}", rows[:CONCURRENCY], model="openai:bench", base_url=base_url,
                   concurrency=CONCURRENCY, progress=False)  # warm: connections, imports
        times = []
        for run in range(3):
            with tempfile.TemporaryDirectory() as tmp:
                os.environ["NBCHAT_LOG"] = os.path.join(tmp, f"log{run}.db")
                start = time.perf_counter()
                out = nbchat.map("{text} ({id})", rows, model="openai:bench",
                                 base_url=base_url, concurrency=CONCURRENCY, progress=True)
                times.append(time.perf_counter() - start)
                assert not out.errors and out.reused == 0 and len(out) == ROWS, out.errors
                nbchat.core.log.current().close()
    finally:
        server.terminate()
        server.wait(10)
    ideal = ROWS / CONCURRENCY * DELAY
    best = min(times)
    ratio = best / ideal
    print(f"nbchat.map: {ROWS} rows, concurrency {CONCURRENCY}, {DELAY * 1000:.0f} ms a reply: "
          f"{best:.3f} s (runs {', '.join(f'{t:.3f}' for t in times)}); ideal {ideal:.4f} s; "
          f"ratio {ratio:.3f} (target <= {TARGET})")
    print(f"peer, raw httpx with nbchat's pool limits: {peer:.3f} s, {peer / ideal:.3f}x the "
          f"ideal; nbchat.map is {best / peer:.3f}x the peer")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
