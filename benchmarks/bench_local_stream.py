"""Local streaming tokens/s: `nbchat.stream` vs raw `Llama.create_chat_completion(stream=True)`.

Same model object, prompt, seed and temperature, runs interleaved (raw, nbchat, raw, ...) so both
see the same machine load; prints the median of each, their ratio, and the median of the
ratios of each (raw, nbchat) pair, which a burst of load on a shared machine skews less.
Target: ratio >= 0.97.

Both sides do the same work: nbchat evaluates a repeated prompt afresh (its prompt cache
reuses a prefix only where the first evaluation started a batch, so temperature 0 repeats
exactly), so the raw side calls `llm.reset()` first too (otherwise it would reuse the previous
identical call's context). Two figures: tokens/s from the first token to the last (as the
`%%chat` footer counts), and end to end (tokens over the whole call, prompt evaluation
included). Target for both: ratio >= 0.97.

The raw side runs on a worker thread, as nbchat does: on a 2-core machine busy with other work,
llama.cpp called from Python's main thread was seen 5 to 20 times slower than from another
thread. `--threads N` sets llama.cpp's `n_threads` and `n_threads_batch` (default: the library's); 1
keeps threads from spinning at llama.cpp's barriers on a machine shared with other work.

    .venv/bin/python benchmarks/bench_local_stream.py [--runs 5] [--tokens 200] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import threading
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
    """On a worker thread, as nbchat runs llama.cpp (see the module docstring)."""
    out = []

    def run() -> None:
        llm.reset()
        stream = llm.create_chat_completion(
            messages=[{"role": "user", "content": PROMPT}], stream=True, temperature=0, seed=1,
            max_tokens=tokens,
        )
        out.append(timed(c for c in stream if c["choices"][0]["delta"].get("content")))

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    return out[0]


def nbchat_run(tokens: int) -> tuple[int, float, float]:
    return timed(nbchat.stream(PROMPT, temperature=0, seed=1, max_tokens=tokens))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        import nbchat.local

        nbchat.local.configure(n_threads=args.threads, n_threads_batch=args.threads)
    loaded = get_provider("llamacpp").load("smollm2")
    nbchat_run(8)  # warm both paths
    raw, ours, raw_ttft, our_ttft, raw_e2e, our_e2e = [], [], [], [], [], []
    for _ in range(args.runs):
        n, ttft, dt = raw_run(loaded.llm, args.tokens)
        raw.append((n - 1) / dt)
        raw_ttft.append(ttft)
        raw_e2e.append(n / (ttft + dt))
        m, ttft, dt = nbchat_run(args.tokens)
        ours.append((m - 1) / dt)
        our_ttft.append(ttft)
        our_e2e.append(m / (ttft + dt))
        assert m == n, f"different token counts: raw {n}, nbchat {m}"
    r, o = statistics.median(raw), statistics.median(ours)
    print(f"raw llama_cpp: {r:8.1f} tok/s  (runs: {', '.join(f'{x:.1f}' for x in raw)})")
    print(f"nbchat.stream: {o:8.1f} tok/s  (runs: {', '.join(f'{x:.1f}' for x in ours)})")
    paired = statistics.median(b / a for a, b in zip(raw, ours, strict=True))
    print(f"ratio nbchat/raw: {o / r:.3f}  (target >= 0.97); median of paired ratios {paired:.3f}")
    e2e = statistics.median(our_e2e) / statistics.median(raw_e2e)
    print(f"end to end (prompt included): raw {statistics.median(raw_e2e):.1f} tok/s, "
          f"nbchat {statistics.median(our_e2e):.1f} tok/s, ratio {e2e:.3f}")
    print(f"time to first token (median): raw {statistics.median(raw_ttft):.3f} s, "
          f"nbchat {statistics.median(our_ttft):.3f} s")


if __name__ == "__main__":
    main()
