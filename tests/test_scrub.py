"""Keys nbchat holds never travel onward inside text: a key echoed back in a reply's stream
(split across chunks anywhere), in a tool's error or result, or in named context comes out as
`***`; a stream ended by `[DONE]` with no finish_reason is reported as cut off, keeping its text.
"""

from __future__ import annotations

import asyncio
import re
import secrets

import pytest
from faultserver import DONE, record, sse_head, text_chunk
from IPython.core.interactiveshell import InteractiveShell

import nbchat
from nbchat.core.credentials import Secret
from nbchat.core.errors import ConnectionFailed, KeyScrubber
from nbchat.core.options import tool_of
from nbchat.core.tools import run_calls
from nbchat.core.types import ToolCall

KEY = "zzscrub-" + secrets.token_hex(12)
Secret(KEY)  # what resolving a key does: nbchat now knows the value


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 11, 40])
def test_a_key_split_at_every_place_comes_out_scrubbed_and_nothing_else_changes(size):
    text = f"start {KEY} middle {KEY[:5]} not a key, {KEY}{KEY} end z"
    scrub = KeyScrubber()
    out = "".join(scrub.feed(text[i:i + size]) for i in range(0, len(text), size)) + scrub.flush()
    # at most HOLD - 1 (3) characters of a key's head may have gone out before the rest came
    heads = "|".join(re.escape(KEY[:k]) for k in (3, 2, 1))
    assert re.sub(rf"(?:{heads})?\*\*\*", "***", out) == (
        f"start *** middle {KEY[:5]} not a key, ****** end z")
    assert KEY[:4] not in out.replace(f"middle {KEY[:5]} not", "")


def test_ordinary_text_is_never_held_back_even_when_it_starts_like_a_key():
    scrub = KeyScrubber()
    assert scrub.feed("the end: " + KEY[:3]) == "the end: " + KEY[:3]  # shorter than HOLD
    assert scrub.feed("x and more") == "x and more"
    assert scrub.feed("then " + KEY[:3]) == "then " + KEY[:3]
    assert scrub.feed(KEY[3:] + " was it") == "*** was it"  # the rest of a key, scrubbed


def test_text_without_keys_passes_as_the_same_object():
    scrub = KeyScrubber()
    piece = "hello world"
    assert scrub.feed(piece) is piece


@pytest.fixture
def server(fault_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", fault_server.base)
    return fault_server


def test_a_key_echoed_in_the_stream_is_scrubbed_from_the_reply_and_the_history(server):
    server.only(sse_head(), text_chunk(f"headers: Bearer {KEY[:9]}"),
                text_chunk(f"{KEY[9:]}; again {KEY}"), text_chunk(".", finish="stop"), DONE)
    conv = nbchat.Conversation(model="openai:m", api_key=KEY)
    reply = conv.send("hi")
    assert reply.text == "headers: Bearer ***; again ***."
    assert KEY not in repr(conv.messages) and KEY[9:] not in repr(conv.messages)


def test_done_without_a_finish_reason_is_a_cut_off_reply_that_keeps_its_text(server):
    head = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    server.only(sse_head(), record({**head, "choices": [{"index": 0, "delta": {
        "role": "assistant", "content": "Half a"}, "finish_reason": None}]}), DONE)
    with pytest.raises(ConnectionFailed, match="no finish_reason.*interrupt_requests") as err:
        nbchat.chat("hi", model="openai:m", api_key="k")
    assert err.value.partial_text == "Half a"


def test_a_role_chunk_then_done_is_not_an_empty_answer(server):
    head = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    server.only(sse_head(), record({**head, "choices": [{"index": 0, "delta": {
        "role": "assistant", "content": ""}, "finish_reason": None}]}), DONE)
    with pytest.raises(ConnectionFailed, match="cut off"):
        nbchat.chat("hi", model="openai:m", api_key="k")


def test_a_tools_error_and_result_reach_the_model_without_the_key():
    def fails(x: int) -> str:
        raise RuntimeError(f"auth with {KEY} refused")

    def returns(x: int) -> str:
        return f"env says OPENAI_API_KEY={KEY}"

    tools = [tool_of(fails), tool_of(returns)]
    calls = [ToolCall("fails", {"x": 1}, "a"), ToolCall("returns", {"x": 2}, "b")]
    steps = asyncio.run(run_calls(calls, tools))
    assert all(KEY not in f"{s.result} {s.error}" for s in steps)  # what the model and cell get
    assert "refused" in steps[0].result and "***" in steps[0].result
    assert steps[1].result.endswith("=***")


def test_named_context_and_a_failing_cells_source_go_without_the_key(monkeypatch):
    from nbchat.notebook import references

    ip = InteractiveShell.instance()
    try:
        ip.user_ns["config_text"] = f"api_key = {KEY}"
        ip.run_line_magic("load_ext", "nbchat")
        ip.run_cell(f'secret = "sk-proj-{"a" * 24}"\n1 / 0  # {KEY}', store_history=True)
        described = references.last_error(ip)
        assert "ZeroDivisionError" in described.text and "1 / 0" in described.text
        assert KEY not in described.text and "sk-proj-aaaa" not in described.text
        source = references.cell_source(1, ip)
        assert KEY not in source
        msgs, _ = nbchat.core.conversation.with_context(
            [nbchat.Message.of("user", "look")], (("config_text", ip.user_ns["config_text"]),),
            500)
        assert KEY not in repr(msgs) and "api_key = ***" in repr(msgs)
    finally:
        ip.run_line_magic("unload_ext", "nbchat")
        InteractiveShell.clear_instance()
