"""`nbchat.map` throughput: 1,000 rows at concurrency 32 against a loopback server answering each
request in 50 ms finish within 1.2x the ideal (1,000 / 32 x 50 ms = 1.5625 s), progress bar on.

The server (benchmarks/loopback_sse.py, 5 chunks a reply, 50 ms before each answer, requests
waiting in parallel) runs in its own process, so it does not share the client's interpreter.
nbchat.map sends at most 32 requests at once (its limiter's slots, taken on the wire only) from
40 workers: the 8 more build the next rows' requests and handle finished replies while the
slots are busy.
Each run logs into a fresh temp log, so no row is answered from an earlier run's replies
(nbchat.map resumes from the log). The ratio is elapsed / ideal, the best of 5 (the median
is printed too). The peer, in
the same run: the same 1,000 streamed requests sent by raw httpx the way nbchat.map sends
them (32 workers taking the rows in order, each with an `AsyncClient` of its own, as
`nbchat.core.http.own_pool` gives them, nothing else), so the machine's own floor shows; and,
for comparison, raw httpx through one shared `AsyncClient` with nbchat's shared limits (what
nbchat.map did before its workers got their own pools: httpcore then reconnects for nearly
every row). The load average is printed with the figures: other work on the machine shows.

    .venv/bin/python benchmarks/bench_map.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

ROWS, CONCURRENCY, DELAY = 1000, 32, 0.050
RUNS = 5  # each side; the machine's noise is a tenth of a run's time from one run to the next
TARGET = 1.2


def raw_httpx(base_url: str, *, shared: bool) -> float:
    """Seconds for the same requests through httpx alone (the peer): `CONCURRENCY` workers,
    each with a client of its own (`shared`: all through one client with nbchat's shared
    limits), the best of `RUNS`."""
    import asyncio

    import httpx

    from nbchat.core.http import OWN_LIMITS, SHARED_LIMITS

    async def run() -> float:
        n = 1 if shared else CONCURRENCY
        limits = SHARED_LIMITS if shared else OWN_LIMITS
        clients = [httpx.AsyncClient(limits=limits) for _ in range(n)]

        async def one(client: httpx.AsyncClient, i: int) -> None:
            body = {"model": "bench", "stream": True,
                    "messages": [{"role": "user", "content": f"row number {i} ({i})"}]}
            async with client.stream("POST", f"{base_url}/chat/completions",
                                     json=body) as response:
                async for _ in response.aiter_bytes():
                    pass

        async def rows(count: int) -> None:
            pending = iter(range(count))

            async def worker(k: int) -> None:
                for i in pending:
                    await one(clients[k % n], i)

            await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))

        await rows(CONCURRENCY)  # warm
        start = time.perf_counter()
        await rows(ROWS)
        elapsed = time.perf_counter() - start
        for client in clients:
            await client.aclose()
        return elapsed

    return min(asyncio.run(run()) for _ in range(RUNS))


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    server = subprocess.Popen([sys.executable, os.path.join(here, "loopback_sse.py"), "5",
                               str(DELAY)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        peer = raw_httpx(base_url, shared=False)
        shared_peer = raw_httpx(base_url, shared=True)
        import nbchat

        rows = [{"id": i, "text": f"row number {i}"} for i in range(ROWS)]
        nbchat.map("{text}", rows[:CONCURRENCY], model="openai:bench", base_url=base_url,
                   concurrency=CONCURRENCY, progress=False)  # warm: connections, imports
        times = []
        for run in range(RUNS):
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
    median = sorted(times)[len(times) // 2]
    print(f"nbchat.map: {ROWS} rows, concurrency {CONCURRENCY}, {DELAY * 1000:.0f} ms a reply: "
          f"{best:.3f} s (runs {', '.join(f'{t:.3f}' for t in times)}); ideal {ideal:.4f} s; "
          f"ratio {ratio:.3f} (target <= {TARGET}); median run {median / ideal:.3f}")
    print(f"peer, raw httpx, a client per worker: {peer:.3f} s, {peer / ideal:.3f}x the ideal; "
          f"nbchat.map is {best / peer:.3f}x the peer")
    print(f"raw httpx, one shared client: {shared_peer:.3f} s, {shared_peer / ideal:.3f}x the "
          f"ideal")
    print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
