"""Local streaming tokens/s: `nbchat.stream` vs raw `Llama.create_chat_completion(stream=True)`.

Same model object, prompt, seed and temperature, runs interleaved (raw, nbchat, raw, ...) so both
see the same machine load; prints the median of each and the ratio. Target: ratio >= 0.97.

    .venv/bin/python benchmarks/bench_local_stream.py [--runs 5] [--tokens 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

import nbchat
from nbchat.core.registry import get_provider

PROMPT = "Write a long story about a lighthouse keeper and the sea."


def raw_run(llm, tokens: int) -> tuple[int, float]:
    t = time.perf_counter()
    n = 0
    for chunk in llm.create_chat_completion(
        messages=[{"role": "user", "content": PROMPT}], stream=True, temperature=0, seed=1,
        max_tokens=tokens,
    ):
        if chunk["choices"][0]["delta"].get("content"):
            n += 1
    return n, time.perf_counter() - t


def nbchat_run(tokens: int) -> tuple[int, float]:
    t = time.perf_counter()
    n = sum(1 for _ in nbchat.stream(PROMPT, temperature=0, seed=1, max_tokens=tokens))
    return n, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=200)
    args = ap.parse_args()
    loaded = get_provider("llamacpp").load("smollm2")
    nbchat_run(8)  # warm both paths
    raw, ours = [], []
    for _ in range(args.runs):
        n, dt = raw_run(loaded.llm, args.tokens)
        raw.append(n / dt)
        m, dt = nbchat_run(args.tokens)
        ours.append(m / dt)
        assert m == n, f"different token counts: raw {n}, nbchat {m}"
    r, o = statistics.median(raw), statistics.median(ours)
    print(f"raw llama_cpp: {r:8.1f} tok/s  (runs: {', '.join(f'{x:.1f}' for x in raw)})")
    print(f"nbchat.stream: {o:8.1f} tok/s  (runs: {', '.join(f'{x:.1f}' for x in ours)})")
    print(f"ratio nbchat/raw: {o / r:.3f}  (target >= 0.97)")


if __name__ == "__main__":
    main()
