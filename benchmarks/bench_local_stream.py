"""Local streaming tokens/s: `nbchat.stream` vs raw `Llama.create_chat_completion(stream=True)`.

Same model object, prompt, seed and temperature, runs interleaved (raw, nbchat, raw, ...) so both
see the same machine load; prints the median of each, their ratio, and the median of the
ratios of each (raw, nbchat) pair, which a burst of load on a shared machine skews less.
Target: ratio >= 0.97.

Tokens/s counts from the first token to the last, as the `%%chat` footer does. The time to the
first token is printed apart: nbchat evaluates the prompt afresh on every call (so that
temperature 0 repeats exactly), while raw calls with the same prompt reuse llama.cpp's cache,
and on a loaded machine a prompt evaluation alone can take seconds.

    .venv/bin/python benchmarks/bench_local_stream.py [--runs 5] [--tokens 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

import nbchat
from nbchat.core.registry import get_provider

PROMPT = "Write a long story about a lighthouse keeper and the sea."


def timed(chunks) -> tuple[int, float, float]:
    """(text chunks, seconds to the first, seconds from the first to the last)."""
    t = time.perf_counter()
    first = end = t
    n = 0
    for _ in chunks:
        end = time.perf_counter()
        if n == 0:
            first = end
        n += 1
    return n, first - t, end - first


def raw_run(llm, tokens: int) -> tuple[int, float, float]:
    stream = llm.create_chat_completion(
        messages=[{"role": "user", "content": PROMPT}], stream=True, temperature=0, seed=1,
        max_tokens=tokens,
    )
    return timed(c for c in stream if c["choices"][0]["delta"].get("content"))


def nbchat_run(tokens: int) -> tuple[int, float, float]:
    return timed(nbchat.stream(PROMPT, temperature=0, seed=1, max_tokens=tokens))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=200)
    args = ap.parse_args()
    loaded = get_provider("llamacpp").load("smollm2")
    nbchat_run(8)  # warm both paths
    raw, ours, raw_ttft, our_ttft = [], [], [], []
    for _ in range(args.runs):
        n, ttft, dt = raw_run(loaded.llm, args.tokens)
        raw.append((n - 1) / dt)
        raw_ttft.append(ttft)
        m, ttft, dt = nbchat_run(args.tokens)
        ours.append((m - 1) / dt)
        our_ttft.append(ttft)
        assert m == n, f"different token counts: raw {n}, nbchat {m}"
    r, o = statistics.median(raw), statistics.median(ours)
    print(f"raw llama_cpp: {r:8.1f} tok/s  (runs: {', '.join(f'{x:.1f}' for x in raw)})")
    print(f"nbchat.stream: {o:8.1f} tok/s  (runs: {', '.join(f'{x:.1f}' for x in ours)})")
    paired = statistics.median(b / a for a, b in zip(raw, ours, strict=True))
    print(f"ratio nbchat/raw: {o / r:.3f}  (target >= 0.97); median of paired ratios {paired:.3f}")
    print(f"time to first token (median): raw {statistics.median(raw_ttft):.3f} s (prompt cached), "
          f"nbchat {statistics.median(our_ttft):.3f} s (prompt evaluated afresh)")


if __name__ == "__main__":
    main()
