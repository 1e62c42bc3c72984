"""notebooks/panel.ipynb and notebooks/compare.ipynb run top to bottom and reproduce their outputs.

They run in a real kernel (nbclient), which is where compare() displays its live view and
replaces it with the static table, and where the panel's reply runs as a task on the kernel loop.
Only what varies between runs (times, speeds, addresses) is sanitized before comparing.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
WIDGET = "application/vnd.jupyter.widget-view+json"

_VARYING = [
    (re.compile(r"first token \d+\.\d+ s"), "first token T s"),
    (re.compile(r"\d+\.\d+ tok/s"), "R tok/s"),
    (re.compile(r"\d+\.\d+ s total"), "D s total"),
    (re.compile(r"0x[0-9a-f]+"), "0xADDR"),
]


def _clean(text: str) -> str:
    for pat, repl in _VARYING:
        text = pat.sub(repl, text)
    return text


def outputs(cell) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for o in cell.get("outputs", []):
        if o.output_type == "stream":
            out.append(("stream", _clean(o.text)))
        elif o.output_type == "error":
            out.append(("error", f"{o.ename}: {o.evalue}"))
        else:
            data = o.get("data", {})
            for mime in (WIDGET, "text/html", "text/markdown", "text/plain"):
                if mime in data:
                    out.append((mime, "" if mime == WIDGET else _clean(str(data[mime]))))
                    break
    return out


def execute(name: str):
    path = NOTEBOOKS / name
    saved = nbformat.read(path, as_version=4)
    fresh = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(fresh, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return saved, fresh


@pytest.fixture(scope="module")
def panel_nb():
    return execute("panel.ipynb")


@pytest.fixture(scope="module")
def compare_nb():
    return execute("compare.ipynb")


@pytest.mark.parametrize("which", ["panel_nb", "compare_nb"])
def test_rerun_reproduces_saved_outputs(which, request):
    saved, fresh = request.getfixturevalue(which)
    code = [c for c in saved.cells if c.cell_type == "code"]
    assert all(c.outputs for c in code)  # saved with outputs, so nbval-style comparison bites
    for old, new in zip(saved.cells, fresh.cells, strict=True):
        if old.cell_type == "code":
            assert outputs(new) == outputs(old), old.source


def test_compare_output_is_the_static_table_once(compare_nb):
    _, nb = compare_nb
    cell = next(c for c in nb.cells if c.cell_type == "code" and "compare(" in c.source)
    (kind, html), = outputs(cell)  # one output: no leftover widget, no second copy
    assert kind == "text/html" and "nbchat-compare-result" in html
    assert "llamacpp:smollm2" in html and "no API key for openai" in html
    assert "OPENAI_API_KEY" in html


def test_panel_transcript_is_saved_in_the_widget_state(panel_nb):
    _, nb = panel_nb
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    panels = [m["state"] for m in state.values() if "transcript" in m["state"]]
    assert len(panels) == 1
    transcript = panels[0]["transcript"]
    assert [e["role"] for e in transcript] == ["user", "assistant"]
    assert transcript[0]["text"] == "What is the capital of France?"
    assert transcript[1]["text"] and "out tokens" in transcript[1]["badge"]
    assert "renderMarkdown" in panels[0]["_esm"]  # the front end travels with the state
