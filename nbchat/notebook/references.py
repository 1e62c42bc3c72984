"""What `context=` names in a notebook: variables, the last error and cells' sources.

The core summarizes objects (nbchat.core.summaries); this module turns the names a user types
(`%%chat --context df,error,cell:-1`, `context=["df", "error"]`) into them, reading only what
is named:

- `error`: the last exception raised by a cell, with its traceback (frames in cells shown as
  `In[N]`, IPython's own frames left out, key-shaped text redacted) and the source of the cell
  that raised it;
- `cell:N` or `In[N]`: the source of the cell run as `In[N]` (N > 0), or, for N < 0, the cell
  run |N| cells before the one running now (`cell:-1` is the previous cell);
- `name` or `name.attr`: a variable of the notebook (attributes read with getattr; nothing is
  evaluated).
"""

from __future__ import annotations

import re
import sys
import traceback
from typing import Any

from ..core.errors import BadOption, redact
from ..core.summaries import Described

_CELL = re.compile(r"^(?:cell:\s*(?P<a>-?\d+)|In\[\s*(?P<b>-?\d+)\s*\])$")
_VAR = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")


class LastError:
    """The last exception a cell raised, as seen by `post_run_cell` (`remember_error`)."""

    exc: BaseException | None = None
    count: int | None = None  # the execution count of the cell that raised
    source: str | None = None


def remember_error(result: Any) -> None:
    """`post_run_cell` hook: keep the exception of a cell that failed, and the cell."""
    from IPython.core.error import UsageError

    exc = getattr(result, "error_in_exec", None)
    # a magic's usage message (a %%chat flag, an empty cell) is not the code's error
    if exc is None or isinstance(exc, (KeyboardInterrupt, UsageError)):
        return
    LastError.exc = exc
    LastError.count = getattr(result, "execution_count", None)
    LastError.source = getattr(getattr(result, "info", None), "raw_cell", None)


def _shell() -> Any:
    from IPython import get_ipython

    return get_ipython()


def _cell_number(filename: str, shell: Any) -> int | None:
    mapping = getattr(getattr(shell, "compile", None), "_filename_map", {}) or {}
    number = mapping.get(filename)
    return int(number) if isinstance(number, int) else None


def error_text(exc: BaseException, shell: Any = None) -> str:
    """`exc` as a traceback: frames in cells named `In[N]` with their line, IPython's own frames
    left out, then the exception; key-shaped text redacted (nbchat.core.errors.redact)."""
    lines = ["Traceback (most recent call last):"]
    for frame in traceback.extract_tb(exc.__traceback__):
        if "/IPython/core/" in frame.filename.replace("\\", "/"):
            continue
        number = _cell_number(frame.filename, shell) if shell is not None else None
        where = f"In[{number}]" if number is not None else f'File "{frame.filename}"'
        lines.append(f"  {where}, line {frame.lineno}, in {frame.name}")
        if frame.line:
            lines.append(f"    {frame.line.strip()}")
    lines += [s.rstrip("\n") for s in traceback.format_exception_only(type(exc), exc)]
    return redact("\n".join(lines))


def last_error(shell: Any = None) -> Described:
    """The last error as context: the exception, its traceback and the cell that raised it.
    Raises BadOption when no cell has failed yet."""
    shell = shell or _shell()
    exc, count, source = LastError.exc, LastError.count, LastError.source
    last = getattr(sys, "last_value", None)
    if last is not None and last is not exc:  # raised before the hook was installed
        exc, count, source = last, None, None
        for frame in traceback.extract_tb(last.__traceback__):
            number = _cell_number(frame.filename, shell)
            if number is not None:
                count, source = number, cell_source(number, shell)
                break
    if exc is None:
        raise BadOption("context", "'error': no cell has raised an exception yet")
    text = error_text(exc, shell)
    if source is not None:
        head = f"The cell that raised it (In[{count}]):" if count else "The cell that raised it:"
        text += f"\n\n{head}\n{redact(source.rstrip())}"
    return Described("last error", text)


def running_count(shell: Any) -> int:
    """`N` of the cell running now (`In[N]`): the history stores a cell before running it (the
    shell's `execution_count` already says N + 1 by then in IPython 9, N in IPython 8)."""
    return len(shell.history_manager.input_hist_raw) - 1


def cell_source(number: int, shell: Any = None) -> str:
    """The source of cell `In[number]` (see the module docstring for negative numbers).
    Raises BadOption for a cell that was not run."""
    shell = shell or _shell()
    hist = shell.history_manager.input_hist_raw
    index = running_count(shell) + number if number < 0 else number
    if not 0 < index < len(hist) or (number < 0 and index >= running_count(shell)):
        ran = len(hist) - 1
        raise BadOption("context", f"cell:{number}: no such cell; cells In[1] to In[{ran}] "
                        "have run (cell:-1 is the one before this)")
    return redact(str(hist[index]))  # a cell that set a key sends it as ***


def resolve(name: str) -> Any:
    """The value `name` stands for in this notebook (see the module docstring); raises
    BadOption for a name it does not know."""
    shell = _shell()
    if shell is None:
        raise BadOption("context", f"{name!r}: not in a notebook; pass {{'name': value}}")
    if name == "error":
        return last_error(shell)
    m = _CELL.match(name)
    if m:
        number = int(m.group("a") or m.group("b"))
        index = running_count(shell) + number if number < 0 else number
        return Described(f"source of cell In[{index}]", cell_source(number, shell))
    if not _VAR.match(name):
        raise BadOption("context", f"{name!r}: give a variable name, 'error', 'cell:N' or "
                        "'In[N]'")
    head, *attrs = name.split(".")
    ns = shell.user_ns
    if head not in ns:
        raise BadOption("context", f"{name!r}: no variable {head!r} is defined in the notebook")
    value = ns[head]
    for attr in attrs:
        try:
            value = getattr(value, attr)
        except AttributeError:
            raise BadOption("context", f"{name!r}: {type(value).__name__} has no attribute "
                            f"{attr!r}") from None
    return value
