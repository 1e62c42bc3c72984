"""notebooks/quickstart.ipynb runs top to bottom on the local model and reproduces its outputs.

Only what varies between runs (times and speeds in footers) is sanitized before comparing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from htmlcheck import problems, visible_text
from nbcompare import execute, outputs

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "quickstart.ipynb"

@pytest.fixture(scope="module")
def executed():
    return execute(NOTEBOOK)


def test_saved_with_outputs(executed):
    saved, _ = executed
    code = [c for c in saved.cells if c.cell_type == "code"]
    with_output = [c for c in code if c.get("outputs")]
    assert len(with_output) >= 8
    assert not any(o.output_type == "error" for c in code for o in c.outputs)


def test_rerun_reproduces_saved_outputs(executed):
    saved, fresh = executed
    for old, new in zip(saved.cells, fresh.cells, strict=True):
        if old.cell_type == "code":
            assert outputs(new) == outputs(old), old.source


def test_flows_show_what_they_promise(executed):
    _, nb = executed
    by_source = {c.source.split("\n")[0]: outputs(c) for c in nb.cells if c.cell_type == "code"}

    def cell(prefix: str) -> list[tuple[str, str]]:
        return next(v for k, v in by_source.items() if k.startswith(prefix))

    chat_cells = [v for k, v in by_source.items() if k.startswith("%%chat")]
    assert len(chat_cells) == 4
    for outs in chat_cells:  # the streamed reply as one output, then the footer
        (body_kind, body), (foot_kind, foot) = outs
        assert body_kind == foot_kind == "text/html" and problems(body) == []
        assert visible_text(body).strip()
        assert visible_text(foot).startswith("llamacpp:smollm2 · ")
        assert "out tokens · first token T s · R tok/s" in foot
    assert "<sub>llamacpp:smollm2" in cell("import nbchat")[0][1]  # Reply renders itself
    assert cell("conv = ")[0][1] == "['user', 'assistant', 'user', 'assistant']"
    assert cell("for chunk in")[0][0] == "stream" and cell("for chunk in")[0][1].strip()
    fruit_html = next(t for k, t in by_source.items() if k.startswith("%%chat --new"))[0][1]
    fruit = json.loads(visible_text(fruit_html))
    assert set(fruit) >= {"name", "colour"}
    assert "llamacpp:smollm2" in cell("%models")[0][1]
