"""notebooks/replicate.ipynb and notebooks/images.ipynb, run by nbclient and by nbval against
local Cog servers.

Without REPLICATE_API_TOKEN the notebooks use `cog:` models at COG_TEXT_URL / COG_IMAGE_URL.
Each code cell's fresh outputs are compared with the outputs saved in the notebook, after
removing what varies between runs (timings in footers, memory addresses); images are compared
by size and pixels. To refresh the saved outputs: `python tests/test_replicate_notebooks.py`.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from cogserver import CogServer
from htmlcheck import visible_text
from nbclient import NotebookClient
from nbcompare import VARYING, sanitize
from PIL import Image

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
NAMES = ("replicate.ipynb", "images.ipynb")

pytestmark = pytest.mark.server

def execute(name: str, workdir: Path, env: dict[str, str]) -> nbformat.NotebookNode:
    """Run a copy of the notebook in `workdir` (files it saves land there)."""
    shutil.copy(NOTEBOOKS / name, workdir / name)
    nb = nbformat.read(workdir / name, as_version=4)
    saved = dict(os.environ)
    os.environ.update(env)
    os.environ.pop("REPLICATE_API_TOKEN", None)
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(workdir)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return nb


def summary(cell: nbformat.NotebookNode) -> list[tuple]:
    """What a cell showed, without what varies between runs."""
    out: list[tuple] = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            out.append(("stream", o["name"], sanitize(o["text"])))
        elif o["output_type"] == "error":
            out.append(("error", o["ename"], o["evalue"]))
        else:
            data = o.get("data", {})
            item: list = [o["output_type"], tuple(sorted(data))]
            for mime in ("text/html", "text/plain"):
                if mime in data:
                    item.append(sanitize("".join(data[mime])))
            if "image/png" in data:
                img = Image.open(io.BytesIO(base64.b64decode(data["image/png"]))).convert("RGB")
                item.append((img.size, img.resize((8, 8)).tobytes()))
            out.append(tuple(item))
    return out


@pytest.fixture(scope="module")
def cog_env():
    with CogServer("text") as text, CogServer("image") as image:
        yield {"COG_TEXT_URL": text.url, "COG_IMAGE_URL": image.url}


@pytest.fixture(scope="module")
def executed(cog_env, tmp_path_factory):
    """Each notebook run once: name -> (executed notebook, its working folder)."""
    out = {}
    for name in NAMES:
        workdir = tmp_path_factory.mktemp(name.split(".")[0])
        out[name] = (execute(name, workdir, cog_env), workdir)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_and_matches_its_saved_outputs(name, executed):
    saved = nbformat.read(NOTEBOOKS / name, as_version=4)
    ran = executed[name][0]
    saved_code = [c for c in saved.cells if c.cell_type == "code"]
    ran_code = [c for c in ran.cells if c.cell_type == "code"]
    assert len(saved_code) == len(ran_code)
    assert sum(1 for c in saved_code if c.outputs) >= 5, "the notebook was saved without outputs"
    for i, (old, new) in enumerate(zip(saved_code, ran_code, strict=True)):
        assert summary(new) == summary(old), f"{name}: code cell {i} differs:\n{new.source}"
    assert not [o for c in ran_code for o in c.outputs if o["output_type"] == "error"]


def test_notebooks_pass_nbval(cog_env, tmp_path):
    """`pytest --nbval` on both notebooks. nbval ignores `update_display_data`, so it sees only
    the first flush of a streaming cell: those cells carry the `nbval-ignore-output` tag (the
    test above compares them in full)."""
    cfg = tmp_path / "sanitize.cfg"
    cfg.write_text("".join(f"[s{i}]\nregex: {pat.pattern}\nreplace: {repl}\n\n"
                           for i, (pat, repl) in enumerate(VARYING)))
    for name in NAMES:  # nbval runs a notebook in its folder, where --save writes
        shutil.copy(NOTEBOOKS / name, tmp_path / name)
    cells = sum(c.cell_type == "code" for n in NAMES for c in nbformat.read(tmp_path / n, 4).cells)
    env = {k: v for k, v in os.environ.items() if k != "REPLICATE_API_TOKEN"}
    env.update(cog_env)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval",
         "--nbval-sanitize-with", str(cfg), "--rootdir", str(tmp_path),
         *NAMES],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, run.stdout[-3000:]
    assert f"{cells} passed" in run.stdout, run.stdout[-500:]


def test_the_chain_draws_what_the_text_model_described(executed):
    nb, tmp_path = executed["images.ipynb"]
    texts = [visible_text("".join(o.get("data", {}).get("text/html", ""))) for c in nb.cells
             if c.cell_type == "code" for o in c.outputs]
    assert any("Acme Rocket Co." in t for t in texts)
    assert any("The logo of Acme Rocket Co.: a red circle above a blue square" in t for t in texts)
    assert (executed["replicate.ipynb"][1] / "rocket.png").exists()
    logo = Image.open(tmp_path / "logo.png").convert("RGB")
    assert logo.getpixel((32, 64)) == (220, 30, 30) and logo.getpixel((96, 64)) == (30, 60, 220)


if __name__ == "__main__":  # refresh the saved outputs
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    with CogServer("text") as t, CogServer("image") as im:
        env = {"COG_TEXT_URL": t.url, "COG_IMAGE_URL": im.url}
        for nb_name in NAMES:
            with tempfile.TemporaryDirectory() as d:
                done = execute(nb_name, Path(d), env)
                nbformat.write(done, NOTEBOOKS / nb_name)
                print("saved", nb_name)
