"""Running a notebook and comparing its outputs with the saved ones, with what varies masked."""

from __future__ import annotations

import re
from pathlib import Path

import nbclient
import nbformat

WIDGET = "application/vnd.jupyter.widget-view+json"

#: what differs from run to run: timings and speeds in footers, memory addresses
VARYING = [
    (re.compile(r"first token \d+\.\d+ s"), "first token T s"),
    (re.compile(r"\d+\.\d+ tok/s"), "R tok/s"),
    (re.compile(r"\d+\.\d+ s total"), "D s total"),
    (re.compile(r"failed after \d+\.\d+ s"), "failed after D s"),
    (re.compile(r"0x[0-9a-f]+"), "0xADDR"),
    # a footer names a self-hosted endpoint's host; the test servers' ports are free ones
    (re.compile(r"at 127\.0\.0\.1:\d+"), "at 127.0.0.1:PORT"),
]


def sanitize(text: str) -> str:
    for pat, repl in VARYING:
        text = pat.sub(repl, text)
    return text


def outputs(cell) -> list[tuple[str, str]]:
    """(kind, text) per output: streams joined, the richest text form, widgets by kind only."""
    out: list[tuple[str, str]] = []
    for o in cell.get("outputs", []):
        if o.output_type == "stream":
            if out and out[-1][0] == "stream":
                out[-1] = ("stream", out[-1][1] + sanitize(o.text))
            else:
                out.append(("stream", sanitize(o.text)))
        elif o.output_type == "error":
            out.append(("error", f"{o.ename}: {o.evalue}"))
        else:
            data = o.get("data", {})
            for mime in (WIDGET, "text/html", "text/markdown", "text/plain"):
                if mime in data:
                    out.append((mime, "" if mime == WIDGET else sanitize(str(data[mime]))))
                    break
    return out


def execute(path: Path) -> tuple[nbformat.NotebookNode, nbformat.NotebookNode]:
    """(as saved, freshly executed in a real kernel)."""
    saved = nbformat.read(path, as_version=4)
    fresh = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(fresh, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    return saved, fresh
