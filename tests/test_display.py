"""The streaming display: block freezing, throttling, bytes, the single final output,
sanitizing (virtual clock)."""

from __future__ import annotations

import json

import pytest
from fakes import realistic_reply
from htmlcheck import problems, visible_text
from xss_corpus import CORPUS

from nbchat.core.markdown import render_html
from nbchat.notebook import display
from nbchat.notebook.display import StreamingMarkdown, split_blocks


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """Collects what would be sent to the front end, and the outputs as the notebook keeps them."""

    def __init__(self) -> None:
        self.messages: list[tuple[dict, str | None, bool]] = []

    def __call__(self, bundle, display_id, update) -> None:
        self.messages.append((bundle, display_id, update))

    def clear(self) -> None:
        self.messages.append(({}, "clear", False))

    @property
    def bytes(self) -> int:
        return sum(
            len(json.dumps({"data": b, "metadata": {},
                            "transient": {"display_id": d} if d else {}}).encode())
            for b, d, _ in self.messages
        )

    def outputs(self) -> list[str]:
        """Each output's HTML (or its image) as the notebook ends up holding it."""
        outs: list[str] = []
        where: dict[str, int] = {}
        for bundle, did, update in self.messages:
            if did == "clear":
                outs, where = [], {}
                continue
            shown = bundle.get("text/html", bundle.get("image/png"))
            if update:
                outs[where[did]] = shown
            else:
                if did:
                    where[did] = len(outs)
                outs.append(shown)
        return outs


def stream(chunks: list[str], seconds_per_chunk: float, *, merge: bool = True,
           **kw) -> tuple[Recorder, StreamingMarkdown]:
    clock, rec = Clock(), Recorder()
    out = StreamingMarkdown(rec, clear=rec.clear if merge else None, clock=clock, **kw)
    for c in chunks:
        clock.now += seconds_per_chunk
        out.feed(c)
    out.close()
    return rec, out


# ---- block cutting ---------------------------------------------------------------------


def test_paragraphs_and_fences_are_blocks():
    text = "Para one\nstill one\n\nPara two\n```py\nx = 1\n\ny = 2\n```\nafter\n\ntail"
    blocks, used, opener = split_blocks(text)
    assert blocks == ["Para one\nstill one\n\n", "Para two\n", "```py\nx = 1\n\ny = 2\n```\n",
                      "after\n\n"]
    assert text[used:] == "tail" and opener is None


def test_unfinished_line_and_open_fence_stay_in_progress():
    blocks, used, _ = split_blocks("```\ncode\nmore")
    assert blocks == [] and used == 0
    blocks, used, _ = split_blocks("done\n\nhalf a para")
    assert blocks == ["done\n\n"] and used == len("done\n\n")


def test_long_fence_is_cut_at_a_line_and_reopened():
    lines = "".join(f"line {i}\n" for i in range(40))
    text = "```python\n" + lines + "```\n"
    blocks, used, opener = split_blocks(text, max_chars=100)
    assert len(blocks) > 2 and used == len(text) and opener is None
    for b in blocks:  # every block is a complete fence on its own
        assert b.startswith("```python\n") and b.endswith("```\n")
        assert len(b) < 100 + 30
    body = "".join(b[len("```python\n"):-len("```\n")] for b in blocks)
    assert body == lines


def test_cut_inside_a_fence_carries_the_opener_to_the_next_flush():
    text = "```js\n" + "a;\n" * 50
    blocks, used, opener = split_blocks(text, max_chars=60)
    assert opener == "```js\n"
    rest = text[used:] + "b;\n```\n"
    more, _, opener2 = split_blocks(rest, opener, max_chars=60)
    assert more[-1].startswith("```js\n") and more[-1].endswith("b;\n```\n") and opener2 is None


def test_long_prose_with_line_breaks_is_cut():
    text = "".join(f"sentence number {i} goes here\n" for i in range(30))
    blocks, used, _ = split_blocks(text, max_chars=200)
    assert len(blocks) >= 3 and "".join(blocks) == text[:used]


# ---- streaming -------------------------------------------------------------------------


def paragraphs(n: int) -> str:
    return "".join(f"Paragraph {i}: " + "some words here " * 12 + "\n\n" for i in range(n))


def test_a_finished_reply_is_one_output():
    """80 paragraphs used to end as 81 outputs; now the blocks give way to one output."""
    text = paragraphs(80)
    rec, out = stream([text[i:i + 4] for i in range(0, len(text), 4)], 1 / 55)
    assert out.blocks > 10  # it did stream in blocks...
    assert rec.outputs() == [render_html(text)]  # ...and ends as the whole reply, rendered once


def test_realistic_reply_ends_as_its_own_rendering():
    chunks = realistic_reply(600)
    rec, _ = stream(chunks, 1 / 55)
    assert rec.outputs() == [render_html("".join(chunks))]


def test_without_clear_the_blocks_stay_and_hold_the_whole_text():
    """When the cell is not ours alone the frozen blocks stay: together they say everything."""
    chunks = realistic_reply(600)
    rec, out = stream(chunks, 1 / 55, merge=False)
    outputs = rec.outputs()
    assert len(outputs) == out.blocks > 5
    shown = "".join(visible_text(o) for o in outputs).split()
    assert shown == visible_text(render_html("".join(chunks))).split()
    frozen = [m for m in rec.messages if not m[1] or m[2]]  # every display without an id is final
    assert all(problems(m[0]["text/html"]) == [] for m in frozen)


def test_only_the_tail_is_rendered_per_update(monkeypatch):
    """Rendering work while streaming is bounded by the block size, not the reply so far."""
    rendered: list[int] = []
    real = display.render_html
    monkeypatch.setattr(display, "render_html", lambda t: rendered.append(len(t)) or real(t))
    text = paragraphs(200)
    stream([text[i:i + 4] for i in range(0, len(text), 4)], 1 / 55, max_block_chars=800)
    *streaming, final = rendered
    assert final == len(text)  # the one whole rendering, at the end
    assert max(streaming) <= 800 + 300
    assert sum(streaming) <= 4 * len(text)  # linear in the reply


def test_updates_are_throttled():
    """Messages follow the update interval, not the tokens: each look at the text may freeze
    what finished and update the tail; then the final clear and output."""
    chunks = ["tok "] * 1000
    rec, _ = stream(chunks, 0.001)  # 1,000 tokens in one (virtual) second
    assert len(rec.messages) <= 2 * (1 / 0.1) + 3
    rec, _ = stream(chunks, 0.001, update_interval=0.25)
    assert len(rec.messages) <= 2 * (1 / 0.25) + 3


@pytest.mark.parametrize("seconds_per_word", [0.1, 0.5])
def test_slow_stream_is_never_silent_for_long(seconds_per_word):
    """A slow stream's bytes per second are tiny: its output changes at least every max_gap."""
    clock, rec = Clock(), Recorder()
    out = StreamingMarkdown(rec, clear=rec.clear, clock=clock, max_gap=2.5)
    times = []
    for _ in range(100):
        clock.now += seconds_per_word
        before = len(rec.messages)
        out.feed("word ")
        if len(rec.messages) > before:
            times.append(clock.now)
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert max(gaps) <= 2.5 + seconds_per_word + 1e-9
    assert len(times) >= 100 * seconds_per_word / 2.5


@pytest.mark.parametrize("seconds", [1 / 55, 1 / 2000])  # a local model, a fast cloud host
def test_bytes_sent_for_2000_tokens_at_most_3x_the_reply(seconds):
    chunks = realistic_reply(2000)
    size = len("".join(chunks).encode())
    rec, _ = stream(chunks, seconds)
    assert len(rec.outputs()) == 1
    assert rec.bytes <= 3 * size, rec.bytes / size


def test_resending_everything_would_not_meet_the_target():
    """The measure above can fail: the naive display costs far more than 3x."""
    chunks = realistic_reply(2000)
    size = len("".join(chunks).encode())
    naive = sum(len(json.dumps(render_html("".join(chunks[: i + 1]))))
                for i in range(0, len(chunks), 5))
    assert naive > 3 * size


@pytest.mark.parametrize("per_chunk", [1, 7])
def test_every_message_is_sanitized(per_chunk):
    """The whole corpus, streamed one character (or seven) per chunk: every message sent,
    live or frozen or final, is inert."""
    text = "\n\n".join(p for _, p in CORPUS)
    chunks = [text[i:i + per_chunk] for i in range(0, len(text), per_chunk)]
    rec, _ = stream(chunks, 0.003, max_block_chars=300)
    assert len(rec.messages) > 10
    for bundle, _, _ in rec.messages:
        assert problems(bundle.get("text/html", "")) == []


def test_an_image_splits_the_text_and_the_end_puts_it_after():
    clock, rec = Clock(), Recorder()
    out = StreamingMarkdown(rec, clear=rec.clear, clock=clock)
    out.feed("half a paragraph")
    out.image(b"PNG")
    assert rec.outputs() == [render_html("half a paragraph"), "UE5H"]
    out.feed(" and more")  # after the image, text goes into a new output
    out.close()
    assert rec.outputs() == [render_html("half a paragraph and more"), "UE5H"]


def test_without_clear_an_image_stays_between_its_texts():
    clock, rec = Clock(), Recorder()
    out = StreamingMarkdown(rec, clock=clock)
    out.feed("before")
    out.image(b"PNG")
    out.feed("after")
    out.close()
    assert rec.outputs() == [render_html("before"), "UE5H", render_html("after")]


def test_a_short_reply_is_one_output_without_clearing():
    rec, _ = stream(["Hello", " there"], 0.2)
    assert rec.outputs() == [render_html("Hello there")]
    assert not any(d == "clear" for _, d, _ in rec.messages)
