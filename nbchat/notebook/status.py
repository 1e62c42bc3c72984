"""Small cell outputs beside a streamed reply: the status line, the reasoning, the empty note.

- `StatusLine` shows what the turn waits for ("waiting for cerebras, 12 s", "rate limited
  (HTTP 429), retrying in 20 s") in one output that it updates in place, and empties once the
  reply arrives or the turn ends, so a saved notebook keeps no stale status.
- `reasoning_bundle` is a reasoning model's thinking, collapsed under a "Reasoning" label.
- `note_bundle` says plainly why a reply has no answer (`Reply.empty_reason`).

All of it is sanitized HTML (`nbchat.core.markdown.clean`, as every output is): the reasoning
comes from the model and is rendered like the reply; the other two are escaped text.
"""

from __future__ import annotations

import html
from typing import Any

from ..core.markdown import clean, text_html
from ..core.render import reasoning_html
from .display import Publisher, StreamingMarkdown


def status_bundle(message: str) -> dict[str, Any]:
    """The status line's bundle: `message…` as escaped, sanitized HTML and as text; an empty
    message gives an empty `text/plain` only (the line is cleared).
    """
    if not message:
        return {"text/plain": ""}
    text = html.escape(message)
    return {"text/html": clean(f'<p class="nbchat-status"><em>{text}…</em></p>'),
            "text/plain": f"{message}…"}


class StatusLine:
    """One output line for `Status` events; created on the first one, emptied by `clear()`."""

    def __init__(self, publish: Publisher) -> None:
        self._publish = publish
        self._id: str | None = None
        self.shown = ""

    def show(self, message: str) -> None:
        """Show `message` (no-op when it is already shown): the first non-empty one creates the
        output, later ones update it in place.
        """
        if message == self.shown:
            return
        if self._id is None:
            if not message:
                return
            self._id = StreamingMarkdown._new_id()
            self._publish(status_bundle(message), self._id, False)
        else:
            self._publish(status_bundle(message), self._id, True)
        self.shown = message

    def clear(self) -> None:
        """Empty the line (the reply arrived or the turn ended); nothing if it was never shown."""
        self.show("")

    @property
    def created(self) -> bool:
        """Whether the line was ever shown (its output, emptied or not, is in the cell)."""
        return self._id is not None


def reasoning_bundle(reasoning: str) -> dict[str, Any]:
    """The reasoning, collapsed under a "Reasoning" label."""
    return {"text/html": reasoning_html(reasoning),
            "text/plain": f"Reasoning:\n{reasoning.strip()}"}


def note_bundle(note: str) -> dict[str, Any]:
    """The note saying why a reply has no answer, as escaped, sanitized HTML and as text."""
    return {"text/html": text_html(note, "nbchat-note"), "text/plain": note}
