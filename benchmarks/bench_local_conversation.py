"""Time to first token in a conversation: `nbchat.Conversation` vs raw llama-cpp-python.

An 8-turn conversation on the same SmolLM2 weights, 48 tokens a reply, temperature 0. The raw
side is `llama_cpp.Llama.create_chat_completion(stream=True)` on its own `Llama`, which reuses
the prefix it evaluated last (as LangChain's ChatLlamaCpp does); nbchat runs on its provider's
`Llama` with its prompt cache. Turns alternate between the two (raw turn 1, nbchat turn 1, raw
turn 2, ...; which side goes first alternates between runs) so both see the same machine load,
and each run starts both sides cold (`Llama.reset()`, `nbchat.local.clear_cache()`).

Prints the median time to first token per turn for each side and the median of the per-run
ratios nbchat/raw at turn 8. Target: at most 1.2 (before the prompt cache: 8 to 31).

A second part runs two nbchat threads alternating turn by turn (as a panel and a cell would)
against the raw side serving the same two conversations on one `Llama` without saved states,
which re-reads the other conversation's history at every switch.

The raw side runs on a worker thread, as nbchat does: on a 2-core machine busy with other work,
llama.cpp called from Python's main thread was seen 5 to 20 times slower than from another
thread, which would flatter nbchat. `--threads N` sets llama.cpp's `n_threads` and
`n_threads_batch` on both sides (default: the library's); on cores shared with other work, 1
avoids threads spinning at llama.cpp's barriers while their partner is descheduled.

    .venv/bin/python benchmarks/bench_local_conversation.py [--runs 3] [--tokens 48] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import nbchat
import nbchat.local
from nbchat.providers.llamacpp import smollm2_path

QUESTIONS = [
    "Hi, I am Ada and I like maths.",
    "What is my name?",
    "Tell me a fact about cats.",
    "And one about dogs?",
    "Write a haiku about rain.",
    "Count to five.",
    "What is two plus two?",
    "Thanks, goodbye!",
]
OTHER = [
    "Hello, I am Bob and I like trains.",
    "What do I like?",
    "Name a famous train.",
    "Is it fast?",
    "Write a poem about steam.",
    "List three colours.",
    "What is three plus three?",
    "See you!",
]
OPTS = {"temperature": 0, "seed": 1}


def first_and_rest(chunks) -> tuple[float, str]:
    """(seconds to the first text chunk, the whole text)."""
    t = time.perf_counter()
    ttft = None
    parts = []
    for text in chunks:
        if ttft is None:
            ttft = time.perf_counter() - t
        parts.append(text)
    return ttft if ttft is not None else time.perf_counter() - t, "".join(parts)


def on_a_thread(fn):
    out = []
    worker = threading.Thread(target=lambda: out.append(fn()))
    worker.start()
    worker.join()
    return out[0]


class Raw:
    def __init__(self, llm, tokens: int) -> None:
        self.llm = llm
        self.tokens = tokens
        self.messages: list[dict[str, str]] = []

    def turn(self, text: str) -> float:
        return on_a_thread(lambda: self._turn(text))

    def _turn(self, text: str) -> float:
        self.messages.append({"role": "user", "content": text})
        stream = self.llm.create_chat_completion(
            messages=self.messages, stream=True, max_tokens=self.tokens, **OPTS
        )
        ttft, reply = first_and_rest(
            c["choices"][0]["delta"].get("content") for c in stream
            if c["choices"][0]["delta"].get("content")
        )
        self.messages.append({"role": "assistant", "content": reply})
        return ttft


class Ours:
    def __init__(self, tokens: int) -> None:
        self.conv = nbchat.Conversation("local", **OPTS)
        self.tokens = tokens

    def turn(self, text: str) -> float:
        return first_and_rest(self.conv.stream(text, max_tokens=self.tokens))[0]


def one_thread(llm, runs: int, tokens: int) -> None:
    raw_t = [[] for _ in QUESTIONS]
    our_t = [[] for _ in QUESTIONS]
    ratios = []
    for run in range(runs):
        llm.reset()
        nbchat.local.clear_cache()
        raw, ours = Raw(llm, tokens), Ours(tokens)
        for i, q in enumerate(QUESTIONS):
            pair = [(raw, raw_t), (ours, our_t)]
            for side, times in pair if run % 2 == 0 else pair[::-1]:
                times[i].append(side.turn(q))
        ratios.append(our_t[-1][-1] / raw_t[-1][-1])
    print(f"one conversation, {len(QUESTIONS)} turns, {tokens} tokens a reply, {runs} runs")
    print("turn   raw ttft   nbchat ttft   ratio")
    for i in range(len(QUESTIONS)):
        r, o = statistics.median(raw_t[i]), statistics.median(our_t[i])
        print(f"{i + 1:4d}   {r:7.3f} s   {o:9.3f} s   {o / r:5.2f}")
    print(f"turn 8: median of per-run ratios nbchat/raw {statistics.median(ratios):.2f} "
          f"(runs: {', '.join(f'{x:.2f}' for x in ratios)}; target <= 1.2)")


def two_threads(llm, runs: int, tokens: int) -> None:
    raw_t: list[float] = []
    our_t: list[float] = []
    for _ in range(runs):
        llm.reset()
        nbchat.local.clear_cache()
        raws = [Raw(llm, tokens), Raw(llm, tokens)]
        ours = [Ours(tokens), Ours(tokens)]
        for i in range(len(QUESTIONS)):
            for k, q in enumerate((QUESTIONS[i], OTHER[i])):
                r = raws[k].turn(q)
                o = ours[k].turn(q)
                if i == len(QUESTIONS) - 1:
                    raw_t.append(r)
                    our_t.append(o)
    r, o = statistics.median(raw_t), statistics.median(our_t)
    print(f"two conversations alternating, turn 8: raw (one context) {r:.3f} s, "
          f"nbchat (saved states) {o:.3f} s, ratio {o / r:.2f}")


def main() -> None:
    from llama_cpp import Llama

    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    threads = {}
    if args.threads:
        threads = {"n_threads": args.threads, "n_threads_batch": args.threads}
        nbchat.local.configure(**threads)
    llm = Llama(model_path=smollm2_path(), n_ctx=2048, verbose=False, **threads)
    nbchat.chat("Hi", max_tokens=2)  # load nbchat's model before timing
    one_thread(llm, args.runs, args.tokens)
    two_threads(llm, max(1, args.runs // 2), args.tokens)


if __name__ == "__main__":
    main()
