"""`.ci/run`: runs the README's test command, and "no tests collected" is a failure."""

import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in readme
    assert "bash scripts/test.sh" in (ROOT / ".ci/run").read_text()
    assert "python -m pytest" in (ROOT / "scripts/test.sh").read_text()


@pytest.mark.parametrize("pytest_rc, ci_rc", [(0, 0), (1, 1), (5, 1)])
def test_exit_code_5_fails_ci(tmp_path, pytest_rc, ci_rc):
    (tmp_path / ".ci").mkdir()
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / ".ci/run", tmp_path / ".ci/run")
    (tmp_path / "scripts/test.sh").write_text(f"exit {pytest_rc}\n")
    done = subprocess.run(["bash", str(tmp_path / ".ci/run")], capture_output=True, text=True)
    assert done.returncode == ci_rc
    assert ("no tests" in done.stderr) == (pytest_rc == 5)
