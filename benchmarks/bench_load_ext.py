"""`%load_ext nbchat` wall time in a fresh process, against jupyter_ai_magics when installed.

Each run starts a new Python that imports IPython and makes a shell first (a kernel has both
before any cell runs), then times only the `%load_ext` line. Median of several runs.
Target: nbchat under 0.15 s. IPython's own `autoreload` extension is timed too, as a floor
measured in the same run (jupyter-ai-magics is not a dependency: it pulls in LangChain).

    .venv/bin/python benchmarks/bench_load_ext.py [RUNS]
"""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys

CODE = """
import time
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
t = time.perf_counter()
ip.run_line_magic("load_ext", {ext!r})
print(time.perf_counter() - t)
"""


def median_load(ext: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", CODE.format(ext=ext)], capture_output=True,
                             text=True, check=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    ours = median_load("nbchat", runs)
    print(f"%load_ext nbchat: median {ours:.4f} s over {runs} runs (target < 0.15 s): "
          f"{'OK' if ours < 0.15 else 'MISSED'}")
    floor = median_load("autoreload", runs)
    print(f"%load_ext autoreload (IPython's own, a floor): median {floor:.4f} s; "
          f"nbchat / autoreload = {ours / floor:.2f}")
    if importlib.util.find_spec("jupyter_ai_magics") is None:
        print("%load_ext jupyter_ai_magics: not installed")
        return
    theirs = median_load("jupyter_ai_magics", runs)
    print(f"%load_ext jupyter_ai_magics: median {theirs:.4f} s")
    print(f"ratio nbchat / jupyter_ai_magics: {ours / theirs:.3f}")


if __name__ == "__main__":
    main()
