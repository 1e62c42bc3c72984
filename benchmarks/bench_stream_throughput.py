"""Client streaming throughput: chunks/s through `nbchat.astream`, side by side with peers.

A loopback server streams N `chat.completion.chunk` records as fast as it can; in one run we
time, on the same stream:
  - nbchat:   `nbchat.astream(..., model="openai:bench", base_url=...)` (the whole core path)
  - openai:   the `openai` SDK's `AsyncOpenAI().chat.completions.create(stream=True)`
  - bare:     httpx `aiter_lines()` + `json.loads` per record (no object model at all)
Targets (issue 3): nbchat >= 3x openai and >= 0.5x bare.

    python benchmarks/bench_stream_throughput.py [--chunks 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.loopback_sse import start_server  # noqa: E402


async def run_nbchat(base: str) -> int:
    import nbchat

    n = 0
    async for _ in nbchat.astream("go", model="openai:bench", base_url=base):
        n += 1
    return n


async def run_openai(base: str) -> int:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base, api_key="loopback", max_retries=0)
    n = 0
    stream = await client.chat.completions.create(
        model="bench", messages=[{"role": "user", "content": "go"}], stream=True
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            n += 1
    await client.close()
    return n


async def run_bare(base: str) -> int:
    import httpx

    n = 0
    async with httpx.AsyncClient() as client:
        body = {"model": "bench", "messages": [{"role": "user", "content": "go"}],
                "stream": True}
        async with client.stream("POST", f"{base}/chat/completions", json=body) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    obj = json.loads(line[6:])
                    choices = obj["choices"]
                    if choices and choices[0]["delta"].get("content"):
                        n += 1
    return n


async def best_rate(fn: Callable[[str], Awaitable[int]], base: str, n: int,
                    rounds: int) -> float:
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        got = await fn(base)
        dt = time.perf_counter() - t0
        if got != n:
            raise SystemExit(f"{fn.__name__} saw {got} chunks, expected {n}")
        best = max(best, n / dt)
    return best


async def measure(n_chunks: int, rounds: int) -> dict[str, float]:
    base, stop = start_server(n_chunks)
    try:
        # warm up imports and connections once each, then interleave rounds
        for fn in (run_nbchat, run_openai, run_bare):
            await fn(base)
        rates = {"nbchat": 0.0, "openai": 0.0, "bare": 0.0}
        for _ in range(rounds):
            rates["nbchat"] = max(rates["nbchat"], await best_rate(run_nbchat, base, n_chunks, 1))
            rates["openai"] = max(rates["openai"], await best_rate(run_openai, base, n_chunks, 1))
            rates["bare"] = max(rates["bare"], await best_rate(run_bare, base, n_chunks, 1))
        return rates
    finally:
        stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rates = asyncio.run(measure(args.chunks, args.rounds))
    vs_openai = rates["nbchat"] / rates["openai"]
    vs_bare = rates["nbchat"] / rates["bare"]
    print(f"{args.chunks} chunks, best of {args.rounds} rounds")
    for name, rate in rates.items():
        print(f"  {name:8s} {rate:10,.0f} chunks/s")
    print(f"  nbchat / openai SDK = {vs_openai:.2f}x  (target >= 3.0)  "
          f"{'OK' if vs_openai >= 3 else 'MISSED'}")
    print(f"  nbchat / bare loop  = {vs_bare:.2f}x  (target >= 0.5)  "
          f"{'OK' if vs_bare >= 0.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
