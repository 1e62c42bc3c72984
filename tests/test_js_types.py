"""tsc checks the JSDoc types of the front end's sources in js/ (pinned in package.json;
scripts/test.sh installs it)."""

import pathlib
import shutil
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent


def tsc(*args: str) -> subprocess.CompletedProcess[str]:
    npx = shutil.which("npx")
    assert npx, "npx not found: install Node.js and npm, then run `npm ci` in the repository root"
    assert (ROOT / "node_modules/.bin/tsc").exists(), "TypeScript is not installed: run `npm ci`"
    cmd = [npx, "--no-install", "tsc", "-p", ".", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)


def test_front_end_type_checks():
    done = tsc()
    assert done.returncode == 0, done.stdout + done.stderr


def test_type_check_covers_every_front_end_module():
    checked = {pathlib.Path(line).resolve() for line in tsc("--listFilesOnly").stdout.splitlines()}
    modules = set((ROOT / "js").glob("*.js")) | set((ROOT / "js").glob("*.mjs"))
    assert modules and modules <= checked
