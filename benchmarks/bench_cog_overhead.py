"""Per-prediction overhead of the cog provider vs a bare httpx POST /predictions.

A real Cog server (tests/cog_predictors/instant, returns at once) on 127.0.0.1. Both sides run
in the same event loop with a warm connection; short blocks alternate (bare, provider, bare,
...) so both see the same machine load, and the ratio is the median of the per-pair ratios
(robust to other work on the machine). Target: provider/bare <= 1.2.

    .venv/bin/python benchmarks/bench_cog_overhead.py [--blocks 30] [--per-block 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

import httpx

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from cogserver import CogServer  # noqa: E402

import nbchat  # noqa: E402


async def bare(client: httpx.AsyncClient, url: str, n: int) -> float:
    t = time.perf_counter()
    for i in range(n):
        resp = await client.post(f"{url}/predictions", json={"input": {"prompt": f"p{i}"}})
        assert resp.json().get("output") == f"ok: p{i}", resp.text
    return (time.perf_counter() - t) / n


async def provider(url: str, n: int) -> float:
    t = time.perf_counter()
    for i in range(n):
        reply = await nbchat.achat(f"p{i}", model="cog:instant", base_url=url)
        assert reply.text == f"ok: p{i}", reply
    return (time.perf_counter() - t) / n


async def run(url: str, blocks: int, per_block: int) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        await bare(client, url, 5)  # warm both paths (connections, health check, schema)
        await provider(url, 5)
        b, p = [], []
        for _ in range(blocks):
            b.append(await bare(client, url, per_block))
            p.append(await provider(url, per_block))
    mb, mp = statistics.median(b), statistics.median(p)
    ratio = statistics.median(y / x for x, y in zip(b, p, strict=True))
    print(f"bare httpx POST /predictions: {mb * 1000:7.2f} ms/prediction "
          f"(block range {min(b) * 1000:.2f}..{max(b) * 1000:.2f})")
    print(f"nbchat cog provider:          {mp * 1000:7.2f} ms/prediction "
          f"(block range {min(p) * 1000:.2f}..{max(p) * 1000:.2f})")
    print(f"ratio provider/bare (median of {len(b)} paired blocks): {ratio:.3f}  (target <= 1.2)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=30)
    ap.add_argument("--per-block", type=int, default=10)
    args = ap.parse_args()
    with CogServer("instant", concurrency=4) as server:
        asyncio.run(run(server.url, args.blocks, args.per_block))


if __name__ == "__main__":
    main()
