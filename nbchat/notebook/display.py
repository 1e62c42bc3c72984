"""Streaming a reply into a cell output as sanitized HTML, cheaply, ending as one output.

Re-sending the whole reply on every update costs bytes that grow with the square of its
length. Instead the text is cut into blocks where markdown-it-py's own parse says a top-level
block ends (a paragraph, list, quote, table or code fence). An over-long block in progress is
cut at a line break (a code fence closed and reopened around the cut), and a paragraph written
as one long line after a sentence. What finished since the last look is rendered once and
frozen as an output of its own (unless shorter than `min_block_chars`: every output has a
price); only the block in progress (the tail) is re-rendered and re-sent.

An update of the tail is sent at most every `update_interval`, when it shows `growth` times
more text or comes `max_wait` after the last change, and only within a byte budget: what was
sent, plus this update, plus the copies still to come (the block frozen, and, once blocks were
frozen, the whole reply as one output) must stay under `allowance` plus the larger of
`byte_budget` times the text received and `bytes_per_second` times the seconds since the start.
A slow stream (under `slow_chars_per_s`) still changes at least every `max_gap` seconds: its
bytes per second are tiny.

When the reply is done, the blocks give way to the whole reply rendered once, as a single
output (`clear_output(wait=True)`, then one display; images follow it), so a saved notebook
holds one output per reply. That needs the cell to be ours alone: without a `clear` callable
(the magic passes none when `%%chat` is not the whole cell) the blocks stay as they are.

Everything shown goes through `nbchat.core.markdown` (markdown-it-py, then nh3): model output
is untrusted. The outputs are `text/html` only; the reply's Markdown as `text/plain` as well
would cost as many bytes again (the reply stays in `nbchat.last` and the thread's history).
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from typing import Any

from ..core.markdown import parser, render_html
from ..core.render import footer_html

#: bytes a display message carries besides its data (keys, display id, metadata)
MESSAGE_OVERHEAD = 90

Publisher = Callable[[dict[str, Any], "str | None", bool], None]
Clear = Callable[[], None]

#: top-level blocks that nothing after them can change once a blank line follows
_DONE_AFTER_BLANK = {"paragraph_open", "blockquote_open", "table_open"}
#: top-level blocks that are done as soon as their last line is
_DONE_WHEN_COMPLETE = {"heading_open", "hr", "math_block"}


def _blocks(src: str) -> list[tuple[int, int, Any]]:
    """(first line, end line, token) of each top-level block of `src`, from markdown-it."""
    out = []
    for token in parser().parse(src):
        if token.level == 0 and token.nesting >= 0 and token.map is not None:
            out.append((token.map[0], token.map[1], token))
    return out


def _closed_fence(token: Any, lines: list[str], end: int) -> bool:
    """Whether a fence token ends with its closing line (markdown-it runs an unclosed fence
    to the end of the text)."""
    if end - token.map[0] < 2:
        return False
    last = lines[end - 1].strip()
    char = token.markup[0]
    return len(last) >= len(token.markup) and last == char * len(last)


def _cut(lines: list[str], max_chars: int) -> list[list[str]]:
    """Lines grouped into runs of at most `max_chars` (a longer single line stays whole)."""
    runs: list[list[str]] = [[]]
    size = 0
    for line in lines:
        if runs[-1] and size + len(line) > max_chars:
            runs.append([])
            size = 0
        runs[-1].append(line)
        size += len(line)
    return runs


_SENTENCE_END = re.compile(r"[.!?:;][\"')\]*_]*\s+")


def split_blocks(
    text: str, opener: str | None = None, max_chars: int = 1500
) -> tuple[list[str], int, str | None]:
    """Cut the finished blocks off the front of `text`.

    `opener` is the fence line to reopen when `text` starts inside a code fence that an
    earlier cut closed. Returns (finished blocks as they should render, characters of
    `text` consumed, opener for the rest). An unfinished last line decides nothing, except
    that a paragraph written as one line longer than `max_chars` is cut after a sentence.
    """
    blocks, used, rest_opener = _split_lines(text, opener, max_chars)
    rest = text[used:]
    inside_fence = rest_opener is not None or (opener is not None and not blocks)
    if inside_fence or len(rest) <= max_chars or "\n" in rest:
        return blocks, used, rest_opener
    top = [t.type for t in parser().parse(rest) if t.level == 0]
    if top != ["paragraph_open", "paragraph_close"]:
        return blocks, used, rest_opener
    ends = [m.end() for m in _SENTENCE_END.finditer(rest, 0, max_chars)]
    spaces = rest.rfind(" ", 0, max_chars) + 1
    cut = ends[-1] if ends and ends[-1] > max_chars // 3 else spaces
    if cut <= 0:
        return blocks, used, rest_opener
    return [*blocks, rest[:cut]], used + cut, None


def _split_lines(
    text: str, opener: str | None, max_chars: int
) -> tuple[list[str], int, str | None]:
    """`split_blocks` on whole lines: top-level blocks as markdown-it-py parses them."""
    prefix = opener or ""
    complete = text[: text.rfind("\n") + 1]
    if not complete:
        return [], 0, opener
    src = prefix + complete
    lines = src.splitlines(keepends=True)
    found = _blocks(src)
    if not found:
        return [], 0, opener
    starts = [s for s, _, _ in found] + [len(lines)]
    starts[0] = 0  # leading blank lines belong to the first block
    blocks: list[str] = []
    done_lines = 0
    next_opener: str | None = None
    for i, (_, end, token) in enumerate(found):
        begin, stop = starts[i], starts[i + 1]
        last = i == len(found) - 1
        fence = token.type == "fence"
        finished = not last or (
            (fence and _closed_fence(token, lines, end))
            or (token.type in _DONE_WHEN_COMPLETE)
            or (token.type in _DONE_AFTER_BLANK and stop > end)
        )
        body = lines[begin:stop]
        if finished:
            runs = _cut(body, max_chars) if sum(map(len, body)) > max_chars else [body]
        else:
            runs = _cut(body, max_chars)
            if sum(map(len, runs[-1])) > max_chars or len(runs) == 1:
                break  # the block in progress, not over-long yet
            runs = runs[:-1]  # cut the over-long block in progress; its last run stays
        fence_open = lines[begin] if fence else None
        for j, run in enumerate(runs):
            piece = "".join(run)
            if fence_open is not None:
                if j > 0:
                    piece = fence_open + piece
                if j < len(runs) - 1 or not finished:
                    piece += token.markup + "\n"
            blocks.append(piece)
        done_lines = begin + sum(len(r) for r in runs)
        if not finished:
            next_opener = fence_open
            break
    if not blocks:
        return [], 0, opener
    used = sum(len(line) for line in lines[:done_lines]) - len(prefix)
    return blocks, used, next_opener


def ipython_publisher(metadata: Callable[[], dict[str, Any]] | None = None) -> Publisher:
    """Send outputs through IPython's display machinery (raw bundles, optional display ids),
    each with `metadata()` as its output metadata when given (provenance, read at send time)."""
    from IPython.display import display, update_display

    def publish(bundle: dict[str, Any], display_id: str | None, update: bool) -> None:
        meta = metadata() if metadata is not None else None
        if update:
            update_display(bundle, raw=True, display_id=display_id, metadata=meta)
        elif display_id is not None:
            display(bundle, raw=True, display_id=display_id, metadata=meta)
        else:
            display(bundle, raw=True, metadata=meta)

    return publish


def ipython_clear() -> None:
    """Clear the cell's outputs when the next one arrives (no flicker)."""
    from IPython.display import clear_output

    clear_output(wait=True)


def cost(bundle: dict[str, Any]) -> int:
    """Bytes a display message with this data takes on the wire (JSON, UTF-8), about."""
    return len(json.dumps(bundle, ensure_ascii=False).encode()) + MESSAGE_OVERHEAD


class StreamingMarkdown:
    """One reply's text output: `feed()` chunks as they come, `image()` images, then `close()`.

    `publish` sends the streamed pieces (they give way to the final output, so they carry no
    output metadata); `final_publish` (default: `publish`) sends the reply's final output,
    e.g. with its provenance as metadata.
    """

    def __init__(
        self,
        publish: Publisher | None = None,
        *,
        clear: Clear | None = None,
        final_publish: Publisher | None = None,
        update_interval: float = 0.1,
        byte_budget: float = 2.6,
        allowance: int = 1000,
        growth: float = 1.5,
        max_wait: float = 1.0,
        max_gap: float = 2.5,
        max_block_chars: int = 400,
        min_block_chars: int = 250,
        slow_chars_per_s: float = 140.0,
        bytes_per_second: float = 250.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._publish = publish or ipython_publisher()
        self._final_publish = final_publish or self._publish
        self._clear = clear
        self.update_interval = update_interval
        self.byte_budget = byte_budget
        self.allowance = allowance
        self.growth = growth
        self.max_wait = max_wait
        self.max_gap = max_gap
        self.max_block_chars = max_block_chars
        self.min_block_chars = min_block_chars
        self.slow_chars_per_s = slow_chars_per_s
        self.bytes_per_second = bytes_per_second
        self._clock = clock
        self._live_chars = 0  # length of the block in progress when it was last sent
        self._start = clock()
        self._last = clock()  # when the output last changed (an update or a frozen block)
        self._chunks: list[str] = []
        self._text: list[str] = []  # everything fed, for the final output
        self._received = 0  # characters fed
        self._received_at_last = 0  # characters fed when the output last changed
        self._pending = ""  # text after the last frozen block
        self._opener: str | None = None
        self._live_id: str | None = None
        self._checked = clock()  # when the text was last looked at
        self._frozen_bytes = 0  # what the frozen blocks cost: about what the final one will
        self._outputs: list[dict[str, Any]] = []  # text and image bundles, in order shown
        self.sent_bytes = 0  # estimated payload sent so far
        self.updates = 0  # messages sent (displays and updates), for tests and benchmarks
        self.blocks = 0  # frozen blocks

    def feed(self, text: str) -> None:
        """Take the next chunk of reply text; at most every `update_interval` seconds, freeze the
        blocks it finished and update the block in progress, within the byte budget.
        """
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

    def _send(self, bundle: dict[str, Any], display_id: str | None, update: bool,
              final: bool = False) -> None:
        self.updates += 1
        self.sent_bytes += cost(bundle)
        (self._final_publish if final else self._publish)(bundle, display_id, update)

    def _freeze(self, block: str, last: bool = False) -> None:
        """Freeze `block` as an output; `last`: it is the reply's only output, kept as is."""
        bundle = {"text/html": render_html(block)}
        if self._live_id is not None:
            self._send(bundle, self._live_id, True, final=last)
            self._live_id = None
            self._live_chars = 0
        elif block.strip():
            self._send(bundle, None, False, final=last)
        else:
            return
        self._frozen_bytes += cost(bundle)
        self._last, self._received_at_last = self._clock(), self._received
        self._outputs.append(bundle)
        self.blocks += 1

    def _flush(self, now: float, *, final: bool, last: bool = False) -> None:
        self._checked = now
        if self._chunks:
            joined = "".join(self._chunks)
            self._text.append(joined)
            self._pending += joined
            self._chunks = []
        blocks, used, opener = split_blocks(self._pending, self._opener, self.max_block_chars)
        if blocks:
            group = "".join(blocks)  # what finished since the last look goes out as one output
            rest = self._pending[used:]
            if len(group) >= self.min_block_chars:
                self._freeze(group)
                self._pending, self._opener = rest, opener
            else:  # too short to be worth an output: it stays in the tail, as complete Markdown
                self._pending, self._opener = group + (opener or "") + rest, None
        live = (self._opener or "") + self._pending
        if final:
            if live.strip() or self._live_id is not None:
                # the reply's only text output stays: it is sent as a final one
                self._freeze(live, last=last and self.blocks == 0)
            self._pending, self._opener = "", None
            return
        if not live.strip():
            return
        # a slow stream's bytes per second are tiny: it gets an update every max_gap whatever
        # the budget says; a fast one shows progress through its frozen blocks
        slow = self._received - self._received_at_last < self.max_gap * self.slow_chars_per_s
        overdue = now - self._last >= self.max_gap and slow
        if len(live) < self._live_chars * self.growth and now - self._last < self.max_wait:
            return  # spend the budget on updates that show a good deal more
        # this update, its block's final copy, and (once there are frozen blocks to replace)
        # the whole reply as one output at the end; estimated before rendering anything
        size = self._estimate(live)
        merging = self._clear is not None and self._frozen_bytes > 0
        to_come = size + (self._frozen_bytes + size if merging else 0)
        # bytes grow with the text (the target for a normal stream) or with time (so that a
        # slower stream still changes about once a second), whichever allows more
        allowed = self.allowance + max(self.byte_budget * self._received,
                                       self.bytes_per_second * (now - self._start))
        if self.sent_bytes + size + to_come > allowed and not overdue:
            return
        bundle = {"text/html": render_html(live)}
        self._live_chars, self._last, self._received_at_last = len(live), now, self._received
        if self._live_id is None:
            self._live_id = self._new_id()
            self._send(bundle, self._live_id, False)
        else:
            self._send(bundle, self._live_id, True)

    def _estimate(self, text: str) -> int:
        """What rendering `text` will cost, from what blocks cost so far (HTML runs ~10%
        longer than its Markdown, plus the container and the message)."""
        return int(len(text) * 1.1) + 60 + MESSAGE_OVERHEAD

    def flush(self) -> None:
        """Show everything received so far (e.g. before an image output)."""
        self._flush(self._clock(), final=True)

    def image(self, png: bytes) -> None:
        """An image output after the text so far."""
        self.flush()
        bundle = image_bundle(png)
        self._outputs.append(bundle)
        self._send(bundle, None, False)

    def close(self, others: bool = False) -> None:
        """Freeze the tail; then, if the cell is ours and holds more than the reply's one text
        output (several blocks, or `others`: outputs shown before it, such as an emptied
        status line), replace them all by the whole reply as one output (its images after it).
        """
        ours = self._clear is not None
        self._flush(self._clock(), final=True, last=not (others and ours) and not self._outputs)
        texts = sum(1 for b in self._outputs if "text/html" in b)
        if self._clear is None or (texts < 2 and not others):
            return
        self._clear()
        text = "".join(self._text)
        if text.strip():
            self._send({"text/html": render_html(text)}, None, False, final=True)
        for bundle in self._outputs:
            if "image/png" in bundle:
                self._send(bundle, None, False, final=True)
        self._outputs = []


def reply_output(text: str) -> dict[str, Any]:
    """A whole reply's text as one output (the `--no-stream` path)."""
    return {"text/html": render_html(text)}


def image_bundle(png: bytes) -> dict[str, Any]:
    """An image output that saves in the notebook (base64 PNG, as nbformat stores it)."""
    return {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": "<image>"}


def footer_bundle(text: str) -> dict[str, Any]:
    """The footer line under a reply as an output bundle: sanitized `text/html` (`footer_html`)
    and the line itself as `text/plain`.
    """
    return {"text/html": footer_html(text), "text/plain": text}
