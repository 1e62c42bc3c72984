"""The shipped front end (nbchat/static) is exactly what js/ builds with the lockfile's packages.

The bundles are committed so that installing nbchat needs no Node; this test keeps them honest:
it rebuilds with esbuild from node_modules (installed by `npm ci` from package-lock.json) into a
temp folder and compares bytes. After changing js/, run `npm run build` and commit the result.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from nbchat.notebook.panel import ChatPanel
from nbchat.notebook.widgets import STATIC

ROOT = Path(__file__).resolve().parent.parent


def test_node_modules_match_the_lockfile():
    lock = json.loads((ROOT / "package-lock.json").read_text())
    wrong = []
    for where, meta in lock["packages"].items():
        if not where.startswith("node_modules/") or meta.get("optional"):
            continue  # optional: the esbuild binaries of other platforms
        installed = ROOT / where / "package.json"
        assert installed.exists(), f"{where} is missing: run `npm ci`"
        version = json.loads(installed.read_text())["version"]
        if version != meta["version"]:
            wrong.append(f"{where} {version} (lockfile: {meta['version']})")
    assert not wrong, "node_modules is not package-lock.json's, run `npm ci`: " + ", ".join(wrong)


def test_shipped_bundle_is_what_js_builds(tmp_path):
    node = shutil.which("node")
    assert node, "node not found: install Node.js and npm, then run `npm ci`"
    done = subprocess.run([node, "js/build.mjs", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    built = sorted(p.name for p in tmp_path.iterdir())
    assert built == ["compare.js", "nbchat.css", "panel.js"]
    assert sorted(p.name for p in STATIC.iterdir()) == built  # nothing else ships in static/
    for name in built:
        same = (tmp_path / name).read_bytes() == (STATIC / name).read_bytes()
        assert same, f"nbchat/static/{name} is stale: run `npm run build` and commit it"


def test_widgets_load_the_built_files():
    from nbchat.notebook.compare import CompareView

    for widget, module in ((ChatPanel, "panel.js"), (CompareView, "compare.js")):
        assert str(widget._esm) == (STATIC / module).read_text()
        assert str(widget._css) == (STATIC / "nbchat.css").read_text()
    state = CompareView().get_state()
    assert state["_esm"] == (STATIC / "compare.js").read_text()
    css = state["_css"]
    assert "@font-face" in css and "KaTeX_Main" in css and "url(data:font/woff2;base64," in css
    assert "url(fonts/" not in css and ".woff)" not in css  # no font left to fetch
