"""Reproducible notebooks: the provider notebooks recorded against real loopback servers (the
local model in process, `llama_cpp.server` for Cerebras/NVIDIA/Anyscale, Cog servers for
Replicate and images), every server stopped, then run again with `NBCHAT_REPLAY=strict` under
nbclient with a guard in the kernel that fails on any network connection, HTTP request or
provider call (tests/offline_guard.py). The outputs equal the recorded run's, except that
footers say "replayed"; each output carries its provenance in metadata, through nbconvert and
nbval too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from cogserver import CogServer
from nbclient import NotebookClient
from nbcompare import outputs
from servers import start_llama_server, stop_server

pytestmark = [pytest.mark.server, pytest.mark.timeout(1800)]  # records six notebooks

HERE = Path(__file__).parent
NOTEBOOKS = HERE.parent / "notebooks"
#: notebook -> the servers it talks to
SERVERS = {
    "quickstart.ipynb": "local",
    "cerebras.ipynb": "llama",
    "nvidia.ipynb": "llama",
    "anyscale.ipynb": "llama",
    "replicate.ipynb": "cog",
    "images.ipynb": "cog",
}
REPLAYED = re.compile(r" · replayed")


def clean_env() -> dict[str, str]:
    """The test process's environment without any key, token or base URL."""
    return {k: v for k, v in os.environ.items()
            if not k.endswith(("_API_KEY", "_API_TOKEN", "_BASE_URL", "_API_BASE"))
            and k not in ("NBCHAT_REPLAY", "COG_TEXT_URL", "COG_IMAGE_URL")}


def run(name: str, workdir: Path, env: dict[str, str]) -> nbformat.NotebookNode:
    """Execute a copy of the notebook in `workdir`, in a kernel started with exactly `env`."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(NOTEBOOKS / name, workdir / name)
    nb = nbformat.read(workdir / name, as_version=4)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=180, kernel_name="python3",
                       resources={"metadata": {"path": str(workdir)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return nb


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Each notebook run once against live servers; then the servers are stopped.

    Returns (environment per notebook, executed notebooks, the log's path)."""
    root = tmp_path_factory.mktemp("record")
    log = root / "log.db"
    base = {**clean_env(), "NBCHAT_LOG": str(log)}
    llama_url, llama_proc, llama_log = start_llama_server()
    text, image = CogServer("text"), CogServer("image")
    try:
        text.start()
        image.start()
        envs = {
            "local": base,
            "llama": {**base, "OPENAI_BASE_URL": llama_url, "NVIDIA_BASE_URL": llama_url,
                      "ANYSCALE_BASE_URL": llama_url},
            "cog": {**base, "COG_TEXT_URL": text.url, "COG_IMAGE_URL": image.url},
        }
        env_of = {name: envs[kind] for name, kind in SERVERS.items()}
        done = {name: run(name, root / name.split(".")[0], env_of[name]) for name in SERVERS}
    finally:
        stop_server(llama_proc)
        llama_log.close()  # type: ignore[attr-defined]
        text.stop()
        image.stop()
    return env_of, done, log


@pytest.fixture(scope="module")
def replayed(recorded, tmp_path_factory):
    """The same notebooks, same environments (the servers' URLs now lead nowhere), strict
    replay, the offline guard loaded in every kernel. Returns (notebooks, guard log lines)."""
    env_of, _, _ = recorded
    root = tmp_path_factory.mktemp("replay")
    startup = root / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    shutil.copy(HERE / "offline_guard.py", startup / "00-offline-guard.py")
    guard_log = root / "guard.log"
    done = {}
    for name in SERVERS:
        env = {**env_of[name], "NBCHAT_REPLAY": "strict", "IPYTHONDIR": str(root / "ipython"),
               "NBCHAT_GUARD_LOG": str(guard_log)}
        done[name] = run(name, root / name.split(".")[0], env)
    return done, guard_log.read_text().splitlines()


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


def without_marker(outs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(kind, REPLAYED.sub("", text)) for kind, text in outs]


def test_the_notebooks_chat_through_every_front_end():
    """What the comparison below covers: %%chat cells, the functions, listings, images."""
    sources = "\n".join(c.source for name in SERVERS for c in code_cells(
        nbformat.read(NOTEBOOKS / name, as_version=4)))
    for used in ("%%chat", "nbchat.chat(", "nbchat.stream(", "nbchat.batch(", ".send(",
                 "nbchat.models(", "%models", "--save", "--image", "images="):
        assert used in sources, used


def test_nothing_left_the_kernel_during_replay(replayed):
    _, guard = replayed
    assert guard.count("armed") == len(SERVERS)  # the guard ran in every kernel
    assert [line for line in guard if line != "armed"] == []


@pytest.mark.parametrize("name", list(SERVERS))
def test_replayed_outputs_equal_the_recorded_run(name, recorded, replayed):
    _, live, _ = recorded
    again, _ = replayed
    cells = list(zip(code_cells(live[name]), code_cells(again[name]), strict=True))
    assert not [o for _, c in cells for o in c.outputs if o.output_type == "error"]
    for old, new in cells:
        assert without_marker(outputs(new)) == outputs(old), old.source
    chats = [new for old, new in cells if old.source.startswith("%%chat")]
    for cell in chats:  # every %%chat footer says where its reply came from
        footer = [o for o in cell.outputs if "nbchat" in o.get("metadata", {})][-1]
        assert footer.data["text/plain"].endswith(" · replayed"), cell.source
        assert footer.metadata["nbchat"]["replayed"] is True


def test_outputs_carry_their_provenance(recorded, replayed):
    env_of, live, log = recorded
    again, _ = replayed
    first = code_cells(live["quickstart.ipynb"])
    second = code_cells(again["quickstart.ipynb"])
    pairs = [(a, b) for a, b in zip(first, second, strict=True)
             if any("nbchat" in o.get("metadata", {}) for o in a.outputs)]
    assert len(pairs) >= 5  # nbchat.chat's Reply and each %%chat cell
    import sqlite3

    conn = sqlite3.connect(log)
    logged = {row[0]: row[1:] for row in conn.execute(
        "SELECT id, model, request_hash, output_tokens FROM replies")}
    conn.close()
    for a, b in pairs:
        meta_a = [o.metadata["nbchat"] for o in a.outputs if "nbchat" in o.get("metadata", {})]
        meta_b = [o.metadata["nbchat"] for o in b.outputs if "nbchat" in o.get("metadata", {})]
        final_a, final_b = meta_a[-1], meta_b[-1]
        assert final_a["replayed"] is False and final_b["replayed"] is True
        assert final_a["log_id"] == final_b["log_id"] and final_a["log_id"] in logged
        model, request_hash, output_tokens = logged[final_a["log_id"]]
        assert final_a["model"] == final_b["model"] == model == "llamacpp:smollm2"
        assert final_a["request_hash"] == final_b["request_hash"] == request_hash
        assert final_a["usage"]["output_tokens"] == output_tokens
        assert final_a["options"]["temperature"] == 0.0
        assert final_a["duration"] == final_b["duration"] > 0
        assert final_a["endpoint"] is None  # in process
    cerebras = [o.metadata["nbchat"] for c in code_cells(live["cerebras.ipynb"])
                for o in c.outputs if "nbchat" in o.get("metadata", {})]
    assert cerebras[-1]["endpoint"] == env_of["cerebras.ipynb"]["OPENAI_BASE_URL"]


def test_provenance_survives_nbconvert_and_nbval(tmp_path):
    """`jupyter nbconvert --execute` keeps the metadata; the executed notebook then passes
    `pytest --nbval` replayed strictly from the log, offline."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext nbchat"),
        nbformat.v4.new_code_cell("%%chat -m local -t 0 --seed 3 --max-tokens 12\nSay hi."),
        nbformat.v4.new_code_cell(
            "import nbchat\nnbchat.chat('Name a colour.', model='local', temperature=0, "
            "seed=3, max_tokens=8)"),
    ]
    path = tmp_path / "prov.ipynb"
    nbformat.write(nb, path)
    env = {**clean_env(), "NBCHAT_LOG": str(tmp_path / "log.db")}
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook",
                    "--execute", "--output", "executed.ipynb", str(path)],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    executed = tmp_path / "executed.ipynb"
    done = json.loads(executed.read_text())
    metas = [o["metadata"]["nbchat"] for c in done["cells"] for o in c.get("outputs", [])
             if "nbchat" in o.get("metadata", {})]
    assert metas and all(m["model"] == "llamacpp:smollm2" and m["log_id"] for m in metas)
    assert {m["replayed"] for m in metas} == {False}
    # a second conversion (to a notebook again) keeps it, as saving does
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook",
                    "--output", "copy.ipynb", str(executed)],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)
    copy = json.loads((tmp_path / "copy.ipynb").read_text())
    assert [o.get("metadata") for c in copy["cells"] for o in c.get("outputs", [])] == \
        [o.get("metadata") for c in done["cells"] for o in c.get("outputs", [])]
    cfg = tmp_path / "sanitize.cfg"
    cfg.write_text("[replayed]\nregex:  · replayed\nreplace: \n")
    nbval = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval",
         "--nbval-sanitize-with", str(cfg), "--rootdir", str(tmp_path), "executed.ipynb"],
        cwd=tmp_path, env={**env, "NBCHAT_REPLAY": "strict"}, capture_output=True, text=True,
        timeout=300,
    )
    assert nbval.returncode == 0, nbval.stdout[-3000:]
    assert "3 passed" in nbval.stdout
