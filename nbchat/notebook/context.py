"""Tells the core's log which notebook and cell a request comes from (`log.where_hook`).

The notebook is `__session__`, which ipykernel sets from the `JPY_SESSION_NAME` that Jupyter
Server gives a kernel (the notebook's path). The cell is the `cellId` that JupyterLab and
Notebook 7 send with each execute request, or else the `cell_id` of the cell IPython runs (what
`InteractiveShell.run_cell(..., cell_id=...)` was given). Other clients (nbclient) send none:
the log then has no cell, and `cell_key` (what `%%chat` keys a thread's turn by) falls back to
the cell's source.
"""

from __future__ import annotations

from typing import Any

from ..core import log

_last_cell: str | None = None
_runs = 0  # cells run so far (IPython's pre_run_cell events)
_installed: set[int] = set()


def _remember(info: Any) -> None:
    global _last_cell, _runs
    _last_cell = getattr(info, "cell_id", None)
    _runs += 1


def run_number() -> int:
    """How many cells the shell has started running (this one included): two calls in the same
    run of a cell see the same number."""
    return _runs


def cell_key(source: str) -> tuple[str, str]:
    """What identifies the running cell: `("cell", id)` from `where()`, else `("source",
    sha256 of source)` (the cell's text, for clients that send no id: nbclient, the terminal)."""
    cell = where()[1]
    if cell:
        return ("cell", cell)
    import hashlib

    return ("source", hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest())


def where() -> tuple[str | None, str | None]:
    """(notebook path, cell id) of the request being made, each None when unknown: the
    notebook from `__session__`, the cell from the execute request's `cellId` or else the
    `cell_id` IPython last ran (see the module docstring).
    """
    from IPython import get_ipython

    ip = get_ipython()
    if ip is None:
        return None, None
    notebook = ip.user_ns.get("__session__")
    cell = None
    kernel = getattr(ip, "kernel", None)
    if kernel is not None:
        parent = kernel.get_parent() or {}
        cell = (parent.get("metadata") or {}).get("cellId")
    return (str(notebook) if notebook else None), (cell or _last_cell)


def install(shell: Any = None) -> None:
    """Point the core's log at this shell's notebook and cells, and let `context=` names
    resolve in it (nbchat.notebook.references), once per shell."""
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    if shell is None:
        return
    from ..core import summaries
    from . import references

    log.where_hook = where
    summaries.resolver = references.resolve  # context= names: variables, "error", "cell:N"
    if id(shell) not in _installed:
        _installed.add(id(shell))
        shell.events.register("pre_run_cell", _remember)
        shell.events.register("post_run_cell", references.remember_error)
