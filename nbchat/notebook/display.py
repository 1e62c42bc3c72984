"""Streaming Markdown into a cell output, cheaply.

Re-sending the whole reply on every update costs bytes that grow with the square of its
length. Instead the reply is cut into blocks (paragraphs, code fences, and over-long blocks
split at a line break, a code fence closed and reopened around the cut). A finished block is
sent once more, in full, and frozen as its own output; only the block in progress is updated,
at a bounded rate (`update_interval`) and within a byte budget: an update is sent only if
everything sent so far, plus it, plus the final copy of its block, stays under
`byte_budget` times the text received (plus a small allowance, so the first words show at
once), and it shows `growth` times more text or comes `max_wait` after the last one. A very
slow stream still gets an update every `max_gap` seconds: its bytes per second are tiny.
Every block goes through `safe_markdown`: model output is untrusted.
"""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Callable
from typing import Any

from ..core.render import closes_fence, fence_opener, safe_markdown

#: bytes a display message carries besides its Markdown (keys, display id, metadata)
MESSAGE_OVERHEAD = 90

Publisher = Callable[[dict[str, Any], "str | None", bool], None]


def split_blocks(
    text: str, opener: str | None = None, max_chars: int = 1500
) -> tuple[list[str], int, str | None]:
    """Cut the finished blocks off the front of `text`.

    `opener` is the fence line to reopen when `text` starts inside a code fence that an
    earlier cut closed. Returns (finished blocks as they should render, characters of
    `text` consumed, opener for the rest).
    """
    blocks: list[str] = []
    start = pos = 0
    prefix = opener or ""
    fence: str | None = None
    open_line: str | None = opener
    if opener is not None:
        opened = fence_opener(opener)
        fence = opened[0] if opened else "```"
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # an unfinished line decides nothing
        end = pos + len(line)
        if fence is None:
            opened = fence_opener(line)
            if opened:
                if text[start:pos].strip():  # a fence interrupts a paragraph
                    blocks.append(prefix + text[start:pos])
                    prefix, start = "", pos
                fence, open_line = opened[0], line
            elif not line.strip():
                if text[start:pos].strip():
                    blocks.append(prefix + text[start:end])
                    prefix, start = "", end
            elif end - start > max_chars:
                blocks.append(prefix + text[start:end])
                prefix, start = "", end
        else:
            closes = closes_fence(line, fence)
            if closes:
                blocks.append(prefix + text[start:end])
                prefix, start = "", end
                fence = open_line = None
            elif end - start > max_chars:
                blocks.append(prefix + text[start:end] + fence + "\n")
                prefix, start = open_line or fence + "\n", end
        pos = end
    return blocks, start, (prefix or None)


def ipython_publisher() -> Publisher:
    """Send outputs through IPython's display machinery (raw bundles, optional display ids)."""
    from IPython.display import display, update_display

    def publish(bundle: dict[str, Any], display_id: str | None, update: bool) -> None:
        if update:
            update_display(bundle, raw=True, display_id=display_id)
        elif display_id is not None:
            display(bundle, raw=True, display_id=display_id)
        else:
            display(bundle, raw=True)

    return publish


class StreamingMarkdown:
    """One reply's text output: `feed()` chunks as they come, then `close()`."""

    def __init__(
        self,
        publish: Publisher | None = None,
        *,
        update_interval: float = 0.1,
        byte_budget: float = 2.5,
        allowance: int = 1000,
        growth: float = 1.5,
        max_wait: float = 1.0,
        max_gap: float = 2.5,
        max_block_chars: int = 1500,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._publish = publish or ipython_publisher()
        self.update_interval = update_interval
        self.byte_budget = byte_budget
        self.allowance = allowance
        self.growth = growth
        self.max_wait = max_wait
        self.max_gap = max_gap
        self.max_block_chars = max_block_chars
        self._clock = clock
        self._live_chars = 0  # length of the block in progress when it was last sent
        self._last = clock()  # when it was last sent
        self._chunks: list[str] = []
        self._received = 0  # characters fed
        self._pending = ""  # text after the last frozen block
        self._opener: str | None = None
        self._live_id: str | None = None
        self._checked = clock()  # when the text was last looked at
        self.sent_bytes = 0  # estimated payload sent so far
        self.updates = 0  # messages sent (displays and updates), for tests and benchmarks
        self.blocks = 0  # frozen blocks

    def feed(self, text: str) -> None:
        self._chunks.append(text)
        self._received += len(text)
        now = self._clock()
        if now - self._checked >= self.update_interval:
            self._flush(now, final=False)

    _ids = 0
    _id_prefix = ""

    @classmethod
    def _new_id(cls) -> str:
        """Short display ids (they ride on every update): a random prefix and a counter."""
        if not cls._id_prefix:
            import uuid

            cls._id_prefix = "nbchat-" + uuid.uuid4().hex[:8] + "-"
        cls._ids += 1
        return f"{cls._id_prefix}{cls._ids}"

    @staticmethod
    def _cost(markdown: str) -> int:
        return len(markdown) + markdown.count("\n") + MESSAGE_OVERHEAD

    def _send(self, markdown: str, display_id: str | None, update: bool) -> None:
        self.updates += 1
        self.sent_bytes += self._cost(markdown)
        self._publish({"text/markdown": markdown}, display_id, update)

    def _freeze(self, block: str) -> None:
        md = safe_markdown(block)
        if self._live_id is not None:
            self._send(md, self._live_id, True)
            self._live_id = None
            self._live_chars = 0
        elif block.strip():
            self._send(md, None, False)
        self.blocks += 1

    def _flush(self, now: float, *, final: bool) -> None:
        self._checked = now
        if self._chunks:
            self._pending += "".join(self._chunks)
            self._chunks = []
        blocks, used, opener = split_blocks(self._pending, self._opener, self.max_block_chars)
        if blocks:
            for block in blocks:
                self._freeze(block)
            self._pending = self._pending[used:]
            self._opener = opener
        live = (self._opener or "") + self._pending
        if final:
            if live.strip() or self._live_id is not None:
                self._freeze(live)
            self._pending, self._opener = "", None
            return
        if not live.strip():
            return
        md = safe_markdown(live)
        cost = self._cost(md)  # this update, and again for the block's final copy
        overdue = now - self._last >= self.max_gap
        if (self.sent_bytes + 2 * cost > self.byte_budget * self._received + self.allowance
                and not overdue):
            return
        if len(live) < self._live_chars * self.growth and now - self._last < self.max_wait:
            return  # spend the budget on updates that show a good deal more
        self._live_chars, self._last = len(live), now
        if self._live_id is None:
            self._live_id = self._new_id()
            self._send(md, self._live_id, False)
        else:
            self._send(md, self._live_id, True)

    def flush(self) -> None:
        """Show everything received so far (e.g. before an image output)."""
        self._flush(self._clock(), final=True)

    def close(self) -> None:
        self._flush(self._clock(), final=True)


def image_bundle(png: bytes) -> dict[str, Any]:
    """An image output that saves in the notebook (base64 PNG, as nbformat stores it)."""
    return {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": "<image>"}


def footer_bundle(text: str) -> dict[str, Any]:
    return {"text/markdown": f"<sub>{html.escape(text)}</sub>", "text/plain": text}
