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


def _blocks(lang: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [b.split("```", 1)[0] for b in text.split(f"```{lang}\n")[1:]]


def test_readme_run_command_starts_lab_as_root_too():
    """Lab refuses to start as root (containers, CI images) without --allow-root."""
    run = next(b for b in _blocks("bash") if "jupyter lab" in b)
    assert "--allow-root" in run.split("jupyter lab", 1)[1]


def test_readme_panel_example_runs_after_load_ext():
    """The README's panel example, after `%load_ext nbchat`, in a real IPython shell."""
    from IPython.testing.globalipapp import start_ipython

    block = next(b for b in _blocks("python") if "ChatPanel(" in b)
    head = block.split("\n\n", 1)[0] + "\n" + next(
        line for line in block.splitlines() if "ChatPanel(" in line
    )
    ip = start_ipython()
    ip.run_line_magic("load_ext", "nbchat")
    result = ip.run_cell(head)
    assert result.error_in_exec is None, result.error_in_exec
    assert type(ip.user_ns["panel"]).__name__ == "ChatPanel"
