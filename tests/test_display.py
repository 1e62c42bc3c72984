"""The streaming Markdown display: block freezing, throttling, bytes, escaping (virtual clock)."""

from __future__ import annotations

import json

from fakes import realistic_reply

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

    @property
    def bytes(self) -> int:
        return sum(
            len(json.dumps({"data": b, "metadata": {},
                            "transient": {"display_id": d} if d else {}}).encode())
            for b, d, _ in self.messages
        )

    def outputs(self) -> list[str]:
        outs: list[str] = []
        where: dict[str, int] = {}
        for bundle, did, update in self.messages:
            if update:
                outs[where[did]] = bundle["text/markdown"]
            else:
                if did:
                    where[did] = len(outs)
                outs.append(bundle["text/markdown"])
        return outs


def stream(chunks: list[str], seconds_per_chunk: float, **kw) -> tuple[Recorder, StreamingMarkdown]:
    clock, rec = Clock(), Recorder()
    out = StreamingMarkdown(rec, clock=clock, **kw)
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


def test_outputs_equal_the_reply_and_frozen_blocks_are_final():
    chunks = realistic_reply(600)
    rec, out = stream(chunks, 1 / 55)
    text = "".join(chunks)
    joined = "".join(rec.outputs())
    # only the fence reopenings are added; everything else arrives as written
    assert joined.replace("```python\n", "").replace("```\n", "") == \
        text.replace("```python\n", "").replace("```\n", "")
    assert out.blocks == len(rec.outputs())
    assert out.updates == len(rec.messages)


def test_updates_are_throttled():
    chunks = ["tok "] * 1000
    rec, _ = stream(chunks, 0.001)  # 1,000 tokens in one (virtual) second
    assert len(rec.messages) <= 1 / 0.1 + 2
    rec, _ = stream(chunks, 0.001, update_interval=0.25)
    assert len(rec.messages) <= 1 / 0.25 + 2


def test_slow_stream_still_updates_at_least_every_max_wait():
    chunks = ["word "] * 100
    rec, _ = stream(chunks, 0.1, max_wait=1.0)  # 10 s of one paragraph
    updates = [m for m in rec.messages if m[2]]
    assert len(updates) >= 10 - 1


def test_bytes_sent_for_2000_tokens_at_most_3x_the_reply():
    chunks = realistic_reply(2000)
    size = len("".join(chunks).encode())
    for seconds in (1 / 55, 1 / 2000):  # a local model, and a very fast cloud host
        rec, _ = stream(chunks, seconds)
        assert rec.bytes <= 3 * size, (seconds, rec.bytes / size)


def test_resending_everything_would_not_meet_the_target():
    """The measure above can fail: the naive display costs far more than 3x."""
    chunks = realistic_reply(2000)
    size = len("".join(chunks).encode())
    rec, _ = stream(chunks, 1 / 55, max_block_chars=10**9)
    naive = sum(len(json.dumps("".join(chunks[: i + 1]))) for i in range(0, len(chunks), 5))
    assert naive > 3 * size
    assert rec.bytes <= 3 * size


def test_every_output_is_escaped():
    chunks = ["Hi <script>alert(1)</script>\n\n", "![x](https://evil.example/a.png)\n\n",
              "[c](javascript:alert(1)) <img src=x onerror=alert(1)>"]
    rec, _ = stream(chunks, 0.2)
    sent = [b["text/markdown"] for b, _, _ in rec.messages]
    assert sent
    for md in sent:
        assert "<script" not in md and "<img" not in md and "javascript:" not in md
        assert "![" not in md


def test_flush_before_an_image_freezes_the_text():
    clock, rec = Clock(), Recorder()
    out = StreamingMarkdown(rec, clock=clock)
    out.feed("half a paragraph")
    out.flush()
    assert rec.outputs() == ["half a paragraph"]
    out.feed(" and more")  # after the image, text goes into a new output
    out.close()
    assert rec.outputs() == ["half a paragraph", " and more"]
