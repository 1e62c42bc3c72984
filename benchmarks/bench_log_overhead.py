"""What the local log costs: streaming throughput through `nbchat.astream` with and without it.

The loopback server of bench_stream_throughput (a thread of this process) streams N
`chat.completion.chunk` records. Each round makes one request with NBCHAT_LOG=<a temp file>
and one with NBCHAT_LOG=off, back to back, the order swapped every round. Figures:
  - streaming throughput: chunks/s from the request to the last chunk, best of each side (the
    reply is written afterwards by the log's writer thread; the benchmark waits for that write
    outside the timed part, so it never overlaps the next round);
  - client CPU: CPU seconds of the thread that runs the stream (the event loop), median of
    each side; on a machine shared with other work this is the steadier of the two;
  - with the write: wall time until the reply is in the database (what a caller waiting for
    the disk would see; nbchat never waits) and the writer thread's CPU for it.
Target (issue 14): logging costs at most 2% of streaming throughput.

    python benchmarks/bench_log_overhead.py [--chunks 20000] [--rounds 9]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.loopback_sse import start_server  # noqa: E402


@dataclass
class Round:
    streamed: float  # wall seconds, request to last chunk
    written: float  # wall seconds, request to the reply in the database
    cpu: float  # CPU seconds of the streaming thread


async def one_round(base: str, n: int, log_to: str) -> Round:
    import nbchat
    from nbchat.core import log

    os.environ["NBCHAT_LOG"] = log_to
    c0, t0 = time.thread_time(), time.perf_counter()
    got = 0
    async for _ in nbchat.astream("go", model="openai:bench", base_url=base):
        got += 1
    streamed, cpu = time.perf_counter() - t0, time.thread_time() - c0
    current = log.current()
    if current is not None:
        current.flush()
    written = time.perf_counter() - t0
    if got != n:
        raise SystemExit(f"saw {got} chunks, expected {n}")
    return Round(streamed, written, cpu)


async def measure(n: int, rounds: int, db: str) -> dict[str, list[Round]]:
    base, stop = start_server(n)
    try:
        for where in (db, "off"):  # warm up imports, the connection and the database
            await one_round(base, n, where)
        out: dict[str, list[Round]] = {"log": [], "off": []}
        for i in range(rounds):
            order = (("log", db), ("off", "off")) if i % 2 == 0 else (("off", "off"), ("log", db))
            for name, where in order:
                out[name].append(await one_round(base, n, where))
        return out
    finally:
        stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    n = args.chunks
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "log.db")
        runs = asyncio.run(measure(n, args.rounds, db))
        from nbchat.core import log

        os.environ["NBCHAT_LOG"] = db
        logged = len(log.log(n=1000))
        size = sum(os.path.getsize(p) for p in (db, db + "-wal") if os.path.exists(p))
    on, off = runs["log"], runs["off"]
    rate_on = max(n / r.streamed for r in on)
    rate_off = max(n / r.streamed for r in off)
    rate_written = max(n / r.written for r in on)
    cpu_on = statistics.median(r.cpu for r in on)
    cpu_off = statistics.median(r.cpu for r in off)
    cost = 1 - rate_on / rate_off
    cost_cpu = cpu_on / cpu_off - 1
    print(f"{n} chunks, {args.rounds} rounds, each with and without the log")
    print(f"  streaming   log off {rate_off:10,.0f} chunks/s   log on {rate_on:10,.0f} chunks/s"
          f"   (best)  cost {cost:6.2%}")
    print(f"  client CPU  log off {cpu_off * 1e3:8.1f} ms       log on {cpu_on * 1e3:8.1f} ms"
          f"         (median) cost {cost_cpu:6.2%}")
    print(f"  until written: {rate_written:,.0f} chunks/s (best); "
          f"database {size / 1e6:.1f} MB after {logged} logged replies")
    worst = max(cost, cost_cpu)
    print(f"  logging costs at most {worst:.2%} of streaming throughput (target <= 2%)  "
          f"{'OK' if worst <= 0.02 else 'MISSED'}")


if __name__ == "__main__":
    main()
