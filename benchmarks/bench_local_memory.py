"""Memory of the local model: one copy of the weights per (path, load options), however many
conversation threads use it.

Each case runs in its own process (so that no page is shared between cases) and reports its
resident memory from /proc/self/status after the work: anonymous (KV cache, compute buffers,
saved conversation states, Python) and file-backed (the memory-mapped weights), and how many
`llama_cpp.Llama` objects are alive.

- raw: one `Llama`, one 3-turn conversation (the baseline);
- nbchat, 1 thread: one 3-turn `Conversation`;
- nbchat, 4 threads: four `Conversation`s taking turns (3 turns each), as cells and panels do;
- nbchat, 4 threads + logprobs: the same, one of them asking for logprobs.

Prints each case and the ratios to raw; the saved conversation states are counted apart (their
size is what keeping four conversations costs; the cap is `cache_bytes`, 1 GiB by default).

    .venv/bin/python benchmarks/bench_local_memory.py
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys

QUESTIONS = ["Hi, I am Ada.", "Tell me a fact about cats.", "And one about dogs?"]
OPTS = {"temperature": 0, "seed": 1, "max_tokens": 32}


def status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


def llama_objects() -> int:
    from llama_cpp import Llama

    gc.collect()
    return sum(isinstance(o, Llama) for o in gc.get_objects())


def child(case: str) -> dict[str, int]:
    import nbchat

    saved = 0
    if case == "raw":
        from llama_cpp import Llama

        from nbchat.providers.llamacpp import smollm2_path

        llm = Llama(model_path=smollm2_path(), n_ctx=2048, verbose=False)
        messages: list[dict[str, str]] = []
        for q in QUESTIONS:
            messages.append({"role": "user", "content": q})
            r = llm.create_chat_completion(messages=messages, **OPTS)
            messages.append(r["choices"][0]["message"])
    else:
        threads = 1 if case == "nbchat-1" else 4
        convs = [nbchat.Conversation("local", system=f"You are helper {i}.", **OPTS)
                 for i in range(threads)]
        for q in QUESTIONS:
            for i, conv in enumerate(convs):
                extra = {"logprobs": 1} if case == "nbchat-4-logprobs" and i == 0 else {}
                conv.send(q, **extra)
        from nbchat.core.registry import get_provider

        saved = sum(m.cache.nbytes for m in get_provider("llamacpp").loaded())
    return {**status(), "llama_objects": llama_objects(), "saved_states": saved}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2])))
        return
    cases = ["raw", "nbchat-1", "nbchat-4", "nbchat-4-logprobs"]
    results = {}
    for case in cases:
        out = subprocess.run([sys.executable, __file__, "--child", case], capture_output=True,
                             text=True, check=True)
        results[case] = json.loads(out.stdout.strip().splitlines()[-1])
    raw = results["raw"]
    mb = 1e6
    print("case                Llama objects   RSS MB   anon MB   file MB   saved states MB"
          "   RSS - states vs raw")
    for case in cases:
        r = results[case]
        net = (r["VmRSS"] - r["saved_states"]) / raw["VmRSS"]
        print(f"{case:20s}{r['llama_objects']:13d}{r['VmRSS'] / mb:9.0f}{r['RssAnon'] / mb:10.0f}"
              f"{r['RssFile'] / mb:10.0f}{r['saved_states'] / mb:18.1f}{net:22.2f}")
    print("weights (file-backed) nbchat-4 / raw: "
          f"{results['nbchat-4']['RssFile'] / raw['RssFile']:.2f}; "
          "one copy per (path, load options): "
          f"{'yes' if results['nbchat-4']['llama_objects'] == 1 else 'NO'}")


if __name__ == "__main__":
    main()
