"""Comparison concurrency: 4 models each answering in ~1 s finish in at most 1.15x one model.

Both runs go through `nbchat.compare` and the real `openai:` provider against a loopback server
whose every answer takes a set time (20 chunks over 1 s). The peer is the same call with one model,
measured in the same run; figures are the best of 3.

    .venv/bin/python benchmarks/bench_compare.py
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from slow_sse import start_slow_server  # noqa: E402

import nbchat  # noqa: E402

TARGET = 1.15


def timed(models: list[str], base_url: str) -> float:
    start = time.perf_counter()
    result = nbchat.compare(models, "Say something.", base_url=base_url)
    elapsed = time.perf_counter() - start
    assert all(r.error is None and r.text for r in result.values()), result.errors
    return elapsed


def main() -> int:
    base_url, stop = start_slow_server(n_chunks=20, seconds=1.0)
    try:
        timed(["openai:warmup"], base_url)
        one = min(timed(["openai:m1"], base_url) for _ in range(3))
        four = min(timed([f"openai:m{i}" for i in range(1, 5)], base_url) for _ in range(3))
    finally:
        stop()
    ratio = four / one
    print(f"compare, 1 model:  {one:.3f} s")
    print(f"compare, 4 models: {four:.3f} s")
    print(f"ratio 4/1: {ratio:.3f} (target <= {TARGET})  {'OK' if ratio <= TARGET else 'MISSED'}")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
