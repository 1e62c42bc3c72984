"""The owner of `nbchat.last`: the most recent result shown in the notebook.

`%%chat`, `ChatPanel` and `CompareView` call `remember()` when a turn finishes; `nbchat.last`
reads `get()`. Nothing else assigns it.
"""

from __future__ import annotations

from typing import Any

from ..core.types import Reply

_last: Any = None


def received(reply: Reply) -> bool:
    """Whether anything of `reply` reached the user: text, images, reasoning, a refusal, tool
    calls or tool steps, or an interruption (which keeps what came). A reply that failed
    before any of these is only its error."""
    return bool(reply.text or reply.image_parts or reply.reasoning or reply.refusal
                or reply.tool_calls or reply.steps or reply.interrupted)


def remember(result: Any) -> None:
    """Keep `result` (a `Reply`, or a `CompareResult` for a comparison) as `nbchat.last`.

    A `Reply` that failed before anything arrived (see `received`) leaves the previous result
    in place: the error is shown where it happened, and the last good reply is not lost. A
    failure after partial text is kept: the partial reply is what the user received."""
    global _last
    if isinstance(result, Reply) and result.error is not None and not received(result):
        return
    _last = result


def get() -> Any:
    """The most recent result, or None before the first one."""
    return _last
