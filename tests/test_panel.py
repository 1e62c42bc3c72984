"""ChatPanel message handling: front-end messages in, custom messages and traits out."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from pathlib import Path

import pytest
from fakes import FakeProvider
from faultserver import DONE, json_answer, sse_head, text_chunk

from nbchat.core.errors import ProviderError
from nbchat.core.types import ImagePart
from nbchat.notebook.panel import ChatPanel
from nbchat.notebook.widgets import BATCH_INTERVAL, STATIC, Batcher


def png(color: str = "red", size: int = 600) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def recording(panel: ChatPanel) -> list[tuple[dict, list]]:
    sent: list[tuple[dict, list]] = []
    panel.send = lambda content, buffers=None: sent.append((content, list(buffers or [])))  # type: ignore[method-assign]
    return sent


def run(coro):
    return asyncio.run(coro)


def front_end(panel: ChatPanel, content: dict, buffers: list | None = None) -> None:
    """What the browser's `model.send(...)` arrives as in the kernel."""
    panel._on_front_end_msg(panel, content, buffers or [])


def test_deltas_carry_only_new_text_and_are_batched(fake):
    fake.enqueue(*[f"w{i} " for i in range(60)], delay=0.005)
    panel = ChatPanel("fake:echo")
    sent = recording(panel)

    async def main():
        front_end(panel, {"type": "send", "text": "hello"})
        assert panel.busy
        return await panel.wait()

    reply = run(main())
    deltas = [c["text"] for c, _ in sent if c["type"] == "delta"]
    assert "".join(deltas) == reply.text == "".join(f"w{i} " for i in range(60))
    # 60 chunks over ~0.3 s: bounded by the 50 ms interval, not by the chunk count
    assert 1 < len(deltas) < 60 / 3
    assert sent[0][0] == {"type": "start", "model": "fake:echo"}
    assert not panel.busy
    user, answer = panel.transcript
    assert user == {"role": "user", "text": "hello", "images": []}
    assert answer["text"] == reply.text and answer["role"] == "assistant"
    assert "1 in / 60 out tokens" in answer["badge"] and "tok/s" in answer["badge"]
    assert [m.role for m in panel.messages] == ["user", "assistant"]
    assert panel.conversation.replies == [reply]


def test_batcher_flushes_after_interval_without_more_text():
    out: list[dict] = []

    async def main():
        b = Batcher(out.append)
        b.add(0, "a")
        b.add(0, "b")
        await asyncio.sleep(BATCH_INTERVAL * 3)
        return list(out)

    assert run(main()) == [{0: "ab"}]


def test_local_model_turn_fills_transcript_and_badge():
    panel = ChatPanel("local", temperature=0, max_tokens=16)
    sent = recording(panel)

    async def main():
        front_end(panel, {"type": "send", "text": "Say hello."})
        return await panel.wait()

    reply = run(main())
    assert reply.text and not reply.interrupted
    assert "".join(c["text"] for c, _ in sent if c["type"] == "delta") == reply.text
    assert panel.transcript[-1]["text"] == reply.text
    assert panel.transcript[-1]["model"] == "llamacpp:smollm2"
    assert "out tokens" in panel.transcript[-1]["badge"]
    assert panel.messages[-1].text == reply.text


def test_stop_cancels_the_stream_and_keeps_the_partial_reply(fake):
    fake.enqueue(*[f"t{i} " for i in range(200)], delay=0.01)
    panel = ChatPanel("fake:echo")
    sent = recording(panel)

    async def main():
        panel.submit("long please")
        while not any(c["type"] == "delta" for c, _ in sent):
            await asyncio.sleep(0.01)
        front_end(panel, {"type": "stop"})
        return await panel.wait()

    reply = run(main())
    assert reply is not None and reply.interrupted
    assert 0 < len(reply.text) < len("".join(f"t{i} " for i in range(200)))
    assert fake.closed == 1  # the provider's stream was closed
    assert panel.transcript[-1]["interrupted"] is True
    assert "interrupted" in panel.transcript[-1]["badge"]
    assert panel.messages[-1].interrupted and panel.messages[-1].text == reply.text
    assert "".join(c["text"] for c, _ in sent if c["type"] == "delta") == reply.text


def test_stop_on_the_local_model_releases_it_for_the_next_turn():
    panel = ChatPanel("local", temperature=0, max_tokens=300)
    sent = recording(panel)

    async def main():
        panel.submit("Write a long story about a dragon.")
        while not any(c["type"] == "delta" for c, _ in sent):
            await asyncio.sleep(0.01)
        panel.stop()
        first = await panel.wait()
        panel.submit("Say hi.")  # would wait forever if the worker kept the model's lock
        second = await asyncio.wait_for(panel.wait(), 60)
        return first, second

    first, second = run(main())
    assert first.interrupted and first.usage.output_tokens < 300
    assert second.text and not second.interrupted


def test_error_shows_inline_and_gives_the_prompt_back(fake):
    fake.enqueue(error=ProviderError("model overloaded, try again", status=503, provider="fake"))
    panel = ChatPanel("fake:echo")
    sent = recording(panel)

    async def main():
        front_end(panel, {"type": "send", "text": "my precious prompt"})
        await panel.wait()

    run(main())
    assert panel.transcript == [
        {"role": "error", "text": "fake error: HTTP 503: model overloaded, try again"}
    ]
    assert sent[-1][0] == {"type": "error", "prompt": "my precious prompt"}
    assert panel.conversation.history == []  # a retry does not repeat the failed prompt
    assert not panel.busy

    async def retry():
        panel.submit("my precious prompt")
        await panel.wait()

    run(retry())
    assert [e["role"] for e in panel.transcript] == ["user", "assistant"]  # old error dropped


def test_images_to_a_model_that_cannot_see_fail_inline_before_any_request():
    panel = ChatPanel("local")
    sent = recording(panel)

    async def main():
        front_end(panel, {"type": "send", "text": "what is this?"}, [memoryview(png())])
        await panel.wait()

    run(main())
    assert panel.transcript[0]["role"] == "error"
    assert "cannot see images" in panel.transcript[0]["text"]
    assert sent[-1][0]["prompt"] == "what is this?"


def test_attached_images_are_sent_and_thumbnailed(fake):
    panel = ChatPanel("fake:echo")
    recording(panel)
    big = png("blue", 600)

    async def main():
        front_end(panel, {"type": "send", "text": "describe"},
                  [memoryview(big)])
        await panel.wait()

    run(main())
    sent_msg = fake.requests[0].messages[-1]
    assert sent_msg.images[0].data == big
    thumb = panel.transcript[0]["images"][0]
    assert thumb.startswith("data:image/png;base64,")
    from PIL import Image

    img = Image.open(io.BytesIO(base64.b64decode(thumb.split(",", 1)[1])))
    assert max(img.size) == 256


def test_image_replies_go_out_as_bytes_and_into_the_transcript(fake):
    picture = png("green", 32)
    fake.enqueue(images=[ImagePart(picture, "image/png")])
    panel = ChatPanel("fake:echo")
    sent = recording(panel)

    async def main():
        panel.submit("draw a square")
        await panel.wait()

    run(main())
    (msg, buffers), = [(c, b) for c, b in sent if c["type"] == "image"]
    assert bytes(buffers[0]) == picture
    assert panel.transcript[-1]["images"] == [
        "data:image/png;base64," + base64.b64encode(picture).decode()
    ]


def test_controls_reach_the_request(fake):
    other = FakeProvider("other")
    from nbchat.core import registry

    registry.register(other)
    try:
        panel = ChatPanel("fake:echo", system="be brief", temperature=0.5)
        assert panel.temperature == 0.5 and panel.system == "be brief"
        ids = [row["id"] for row in panel.catalog]
        assert "fake:echo" in ids and "other:echo" in ids
        # what the front end does when the user edits the controls
        panel.set_state({"temperature": 0.0, "max_tokens": 7, "system": "be kind",
                         "model": "other:echo"})

        async def main():
            panel.submit("hi")
            await panel.wait()

        run(main())
        req = other.requests[0]
        assert req.options.temperature == 0.0 and req.options.max_tokens == 7
        assert req.messages[0].role == "system" and req.messages[0].text == "be kind"
        assert not fake.requests
    finally:
        registry.unregister("other")


def test_control_specs_come_from_the_declaration(fake, monkeypatch):
    from dataclasses import replace

    import traitlets

    from nbchat.core.errors import BadOption
    from nbchat.core.options import OPTIONS
    from nbchat.notebook.panel import CONTROLS

    panel = ChatPanel("fake:echo")
    state = panel.get_state()
    assert [c["name"] for c in state["controls"]] == list(CONTROLS) == ["temperature",
                                                                        "max_tokens"]
    for spec in state["controls"]:
        option = OPTIONS[spec["name"]]
        assert (spec["type"], spec["min"], spec["max"], spec["step"]) == (
            option.type, option.minimum, option.maximum, option.step)
        assert option.description[1:] in spec["description"] and option.range in spec["description"]
        assert spec["name"] in state  # each control's value is a synced trait of its name
    assert isinstance(panel.traits()["temperature"], traitlets.Float)
    assert isinstance(panel.traits()["max_tokens"], traitlets.Int)
    # a value the front end sends is checked against the same declaration
    with pytest.raises(BadOption, match="temperature"):
        panel.set_state({"temperature": 2.5})
    # and a changed declaration changes what the front end is told
    monkeypatch.setitem(OPTIONS, "temperature", replace(OPTIONS["temperature"], maximum=1.5,
                                                        step=0.25))
    spec = ChatPanel("fake:echo").controls[0]
    assert (spec["max"], spec["step"]) == (1.5, 0.25) and "(0..1.5)" in spec["description"]


def test_new_chat_and_exports(fake):
    fake.enqueue("Here is <b>bold</b> and ", "`code`")
    panel = ChatPanel("fake:echo")
    sent = recording(panel)

    async def main():
        panel.submit("hi")
        await panel.wait()

    run(main())
    md = panel.to_markdown()
    assert md.startswith("**You**\n\n<div") and "<p>hi</p>" in md
    assert "&lt;b&gt;bold&lt;/b&gt;" in md and "<code>code</code>" in md
    data = json.loads(panel.to_json())
    assert data["model"] == "fake:echo"
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
    front_end(panel, {"type": "export", "format": "markdown"})
    assert sent[-1][0]["type"] == "export" and sent[-1][0]["content"] == md
    assert sent[-1][0]["filename"] == "chat.md"
    front_end(panel, {"type": "new"})
    assert panel.transcript == [] and panel.messages == []


def test_transcript_is_synced_state_and_not_touched_per_token(fake):
    fake.enqueue(*["x"] * 50, delay=0.002)
    panel = ChatPanel("fake:echo")
    recording(panel)
    changes: list[int] = []
    panel.observe(lambda ch: changes.append(len(ch["new"])), names="transcript")

    async def main():
        panel.submit("hi")
        await panel.wait()

    run(main())
    assert changes == [2]  # one update, at the end of the turn
    state = panel.get_state()
    assert state["transcript"][1]["text"] == "x" * 50
    assert state["_esm"] == (STATIC / "panel.js").read_text()


@pytest.mark.parametrize("name", ["panel.js", "picker.js", "compare.js", "markdown.js", "dom.js"])
def test_front_end_sources_never_parse_html_themselves(name):
    """Our own modules build DOM nodes; the one HTML string (markdown-it's output) goes to
    DOMPurify, which returns a DOM fragment, so nothing is parsed after it was checked."""
    js = (Path(__file__).parent.parent / "js" / name).read_text()
    for risky in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                  "new Function", "DOMParser", "createContextualFragment", "http://", "https://"):
        assert risky not in js, risky
    if name == "markdown.js":
        assert "RETURN_DOM_FRAGMENT: /** @type {const} */ (true)" in js


def test_api_key_stays_out_of_widget_state_and_exports(fake):
    secret = "sk-panelsecret123456"
    panel = ChatPanel("fake:echo", api_key=secret)
    recording(panel)

    async def main():
        panel.submit("hi")
        await panel.wait()

    run(main())
    assert fake.endpoints[0].api_key.get() == secret
    state = json.dumps({k: v for k, v in panel.get_state().items() if k != "_esm"})
    assert secret not in state and secret not in panel.to_json()
    assert secret not in panel.to_markdown() and secret not in repr(panel.conversation)


# ---- waits and reasoning from the wire (loopback server: tests/faultserver.py) -------------


def test_the_status_trait_shows_a_retry_wait_and_stop_ends_it_at_once(fault_server):
    fault_server.script(json_answer(429, {"error": {"message": "slow"}}, Retry_After="30"))
    panel = ChatPanel("openai:m", base_url=fault_server.base)
    recording(panel)
    seen: list[str] = []
    panel.observe(lambda change: seen.append(change["new"]), names="status")

    async def main():
        panel.submit("hi")
        while not panel.status:
            await asyncio.sleep(0.02)
        stopped = time.monotonic()
        front_end(panel, {"type": "stop"})
        await panel.wait()
        return time.monotonic() - stopped

    assert run(main()) < 1.0
    assert seen[0] == "openai: rate limited (HTTP 429), retrying in 30 s"
    assert panel.status == "" and not panel.busy


def test_reasoning_and_the_empty_answer_note_reach_the_transcript(fault_server):
    fault_server.script(sse_head(), text_chunk(reasoning_content="Thinking <b>hard</b>."),
                        text_chunk(finish="length"), DONE)
    panel = ChatPanel("openai:m", base_url=fault_server.base)
    recording(panel)

    async def main():
        panel.submit("hi")
        return await panel.wait()

    reply = run(main())
    entry = panel.transcript[-1]
    assert entry["reasoning"] == reply.reasoning == "Thinking <b>hard</b>."
    assert "finish_reason: length" in entry["note"] and entry["badge"]
    md = panel.to_markdown()
    assert "<summary>Reasoning</summary>" in md and "&lt;b&gt;hard&lt;/b&gt;" in md
    assert "<b>" not in md and "finish_reason: length" in md
