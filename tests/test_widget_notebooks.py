"""notebooks/panel.ipynb and notebooks/compare.ipynb run top to bottom and reproduce their outputs.

They run in a real kernel (nbclient), which is where compare() displays its live view and
replaces it with the static table, and where the panel's reply runs as a task on the kernel loop.
Only what varies between runs (times, speeds, addresses) is sanitized before comparing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from nbcompare import execute as run_notebook
from nbcompare import outputs

from nbchat.notebook.widgets import STATIC

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


def execute(name: str):
    return run_notebook(NOTEBOOKS / name)


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
    # the front end travels with the state: the shipped bundle, Markdown renderer included
    assert panels[0]["_esm"] == (STATIC / "panel.js").read_text()


def test_panel_output_is_the_view_then_a_copy_kept_current(panel_nb):
    """In a real kernel: the panel's cell holds the widget view alone, then the static copy,
    which the turn run by a later cell updated (through its display id, not the view's)."""
    _, nb = panel_nb
    cell = next(c for c in nb.cells if c.cell_type == "code" and "ChatPanel(" in c.source)
    view, copy = cell.outputs
    assert set(view.data) == {"application/vnd.jupyter.widget-view+json", "text/plain"}
    assert "transcript below" in view.data["text/plain"]
    html = copy.data["text/html"]
    assert html.startswith("<div class='nbchat-transcript'>")
    assert "What is the capital of France?" in html and "out tokens" in html
    assert "What is the capital of France?" in copy.data["text/plain"]
