"""The owner of `nbchat.last`: the most recent result shown in the notebook.

`%%chat`, `ChatPanel` and `CompareView` call `remember()` when a turn finishes; `nbchat.last`
reads `get()`. Nothing else assigns it.
"""

from __future__ import annotations

from typing import Any

_last: Any = None


def remember(result: Any) -> None:
    """Keep `result` (a `Reply`, or a `CompareResult` for a comparison) as `nbchat.last`."""
    global _last
    _last = result


def get() -> Any:
    """The most recent result, or None before the first one."""
    return _last
