"""The Cerebras, NVIDIA and Anyscale notebooks run top to bottom under `pytest --nbval`
against a real local OpenAI-compatible server (no keys), matching their saved outputs; and
those saved outputs show that each flow worked.

nbval ignores `update_display_data`, so it sees only the first flush of a streaming `%%chat`
cell: that cell carries the `nbval-ignore-output` tag (nbval still fails it on an error)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import nbformat
import pytest
from htmlcheck import visible_text

pytestmark = pytest.mark.server

NOTEBOOKS = pathlib.Path(__file__).parent.parent / "notebooks"


NAMES = ("cerebras.ipynb", "nvidia.ipynb", "anyscale.ipynb")
SANITIZE = NOTEBOOKS / "nbval_sanitize_widgets.cfg"  # timings and addresses


def saved(name: str) -> list[str]:
    """Each code cell's saved text output (stdout + the text of HTML, or text/plain)."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        texts = []
        for o in cell.outputs:
            assert o.output_type != "error", f"{name}: {o.ename}: {o.evalue}"
            if o.output_type == "stream" and o.name == "stdout":
                texts.append(o.text)
            elif "data" in o:
                html = o.data.get("text/html")
                texts.append(visible_text(html) if html else o.data.get("text/plain", ""))
        out.append("".join(texts))
    return out


def test_notebooks_pass_nbval(llama_server, tmp_path):
    for name in NAMES:
        shutil.copy(NOTEBOOKS / name, tmp_path / name)
    cells = sum(c.cell_type == "code" for n in NAMES
                for c in nbformat.read(tmp_path / n, as_version=4).cells)
    env = {k: v for k, v in os.environ.items()
           if not k.endswith(("_API_KEY", "_BASE_URL", "_API_BASE"))}
    env.update(OPENAI_BASE_URL=llama_server, NVIDIA_BASE_URL=llama_server,
               ANYSCALE_BASE_URL=llama_server)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval",
         "--nbval-sanitize-with", str(SANITIZE), "--rootdir", str(tmp_path), *NAMES],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400,
    )
    assert run.returncode == 0, run.stdout[-3000:]
    assert f"{cells} passed" in run.stdout, run.stdout[-500:]


def test_cerebras_notebook_shows_each_flow():
    setup, one, stream, _load, magic, structured, tool, conv, batch = saved("cerebras.ipynb")
    assert setup.strip() == "model: openai:smollm2"
    assert "finish: " in one and one.split("\n")[0].strip()
    assert int(stream.rsplit("chunks received:", 1)[1]) > 1
    assert magic.strip()  # %%chat rendered the streamed reply into the cell
    assert "['country', 'name']" in structured
    assert "tool: get_weather" in tool and "It is sunny in" in tool
    assert "turns: 2" in conv
    assert "replies: 3" in batch and batch.count(" -> ") == 3


def test_nvidia_notebook_shows_each_flow():
    setup, listing, one, stream, deprecated, json_mode, hosted_only = saved("nvidia.ipynb")
    assert setup.strip() == "model: nvidia:smollm2 | hosted: False"
    assert "nvidia:smollm2 | tools:" in listing  # live GET /v1/models from the local "NIM"
    assert one.strip() and "finish: " in one
    assert int(stream.rsplit("chunks received:", 1)[1]) > 1
    assert "nvidia:mistralai/mixtral-8x7b-instruct-v0.1" in deprecated
    assert "deprecated id" in deprecated
    assert json_mode.strip() in ("dict", "list")
    assert "skipped: set NVIDIA_API_KEY" in hosted_only


def test_anyscale_notebook_shows_each_flow():
    setup, one, stream, schema, conv, via_openai = saved("anyscale.ipynb")
    assert setup.strip() == "endpoint set: True"
    assert one.strip()
    assert int(stream.rsplit("chunks received:", 1)[1]) > 1
    assert schema.strip() == "['colour', 'fruit']"
    assert conv.count("user |") == 2 and conv.count("assistant |") == 2
    assert via_openai.strip() == "openai:any"


def test_saved_notebooks_have_outputs():
    """The notebooks are committed with the outputs of a run, so they read well unexecuted."""
    for name in NAMES:
        nb = json.loads((NOTEBOOKS / name).read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert sum(bool(c["outputs"]) for c in code) >= len(code) - 1, name
