"""Replies that must survive the wire and waits that must be visible, against a loopback server
that misbehaves the way public bug reports say providers and proxies do (tests/faultserver.py:
real sockets, real timeouts kept short)."""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from faultserver import (
    CLOSE,
    DONE,
    HOLD,
    STALL,
    chunk,
    head,
    json_answer,
    sse_head,
    text_chunk,
)

import nbchat
from nbchat.core import http
from nbchat.core.errors import (
    ConnectionFailed,
    ContextTooLong,
    ProtocolError,
    ProviderError,
    RateLimited,
    TimedOut,
)
from nbchat.core.types import ReasoningDelta, Status, TextDelta

MODEL = "openai:m"


@pytest.fixture
def server(fault_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", fault_server.base)
    return fault_server


def events_of(prompt: str = "hi", **options) -> tuple[list, nbchat.Reply]:
    """Every event a turn yields, and its reply (errors are left to the caller)."""
    turn = nbchat.Conversation(model=MODEL).turn(prompt, **options)
    seen: list = []

    async def go():
        async for ev in turn.events():
            seen.append(ev)

    asyncio.run(go())
    return seen, turn.reply


# ---- replies that are lost or mangled -----------------------------------------------------


def test_an_emoji_split_between_two_chunks_is_joined(server):
    # "Hi \ud83d" then "\ude00" as JSON escapes: the halves of one UTF-16 surrogate pair
    server.script(sse_head(), text_chunk("Hi \ud83d"), text_chunk("\ude00!"),
                  text_chunk(finish="stop"), DONE)
    chunks = list(nbchat.stream("hi", model=MODEL))
    assert "".join(chunks) == "Hi \U0001f600!"
    for c in chunks:
        c.encode("utf-8")  # every piece handed on can be encoded (shown, saved, sent)
    assert nbchat.chat("hi", model=MODEL).text == "Hi \U0001f600!"


def test_half_a_character_that_never_pairs_becomes_a_replacement_character(server):
    server.script(sse_head(), text_chunk("x\ud83d"), text_chunk(finish="stop"), DONE)
    assert nbchat.chat("hi", model=MODEL).text == "x\ufffd"


def test_content_as_a_list_of_typed_parts(server):
    server.script(sse_head(), text_chunk([{"type": "text", "text": "Hello"}]),
                  text_chunk([{"type": "text", "text": " wor"}, {"type": "text", "text": "ld"}]),
                  text_chunk(finish="stop"), DONE)
    assert nbchat.chat("hi", model=MODEL).text == "Hello world"


@pytest.mark.parametrize("bad", [5, {"type": "text", "text": "x"}, [{"type": "text", "text": 1}]])
def test_content_of_another_shape_is_a_protocol_error_that_keeps_the_text(server, bad):
    server.script(sse_head(), text_chunk("Hello"), text_chunk(bad), DONE)
    conv = nbchat.Conversation(model=MODEL)
    with pytest.raises(ProtocolError, match="cannot read.*what arrived is kept") as err:
        conv.send("hi")
    assert err.value.partial_text == "Hello"
    assert conv.history[-1].text == "Hello" and conv.history[-1].interrupted
    assert conv.replies[-1].text == "Hello"


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_a_reply_of_reasoning_only_keeps_it_and_says_why_the_answer_is_empty(server, field):
    server.script(sse_head(), text_chunk(**{field: "Let me think"}),
                  text_chunk(**{field: " about it."}), text_chunk(finish="length"), DONE)
    events, reply = events_of(max_tokens=5)
    assert [e.text for e in events if isinstance(e, ReasoningDelta)] == ["Let me think",
                                                                        " about it."]
    assert reply.text == "" and reply.reasoning == "Let me think about it."
    assert reply.finish_reason == "length"
    assert "no answer" in reply.empty_reason and "finish_reason: length" in reply.empty_reason
    assert "max_tokens" in reply.empty_reason
    shown = reply._repr_mimebundle_()[0]["text/html"]
    assert '<details class="nbchat-reasoning"><summary>Reasoning</summary>' in shown
    assert "Let me think about it." in shown and "finish_reason: length" in shown


def test_reasoning_then_answer_are_kept_apart(server):
    server.script(sse_head(), text_chunk(reasoning_content="Two plus two."),
                  text_chunk("4", reasoning_content=" So four."), text_chunk(finish="stop"),
                  DONE)
    reply = nbchat.chat("2+2?", model=MODEL)
    assert reply.text == "4" and reply.reasoning == "Two plus two. So four."
    assert reply.empty_reason is None


LLAMA_CONTEXT_ERROR = {"error": {
    "code": 400, "message": "the request exceeds the available context size, try increasing it",
    "type": "exceed_context_size_error", "n_prompt_tokens": 4107, "n_ctx": 2048}}


@pytest.mark.parametrize("framing", ["length", "close"])
def test_a_bare_json_error_in_a_200_event_stream_reaches_the_user(server, framing):
    body = json.dumps(LLAMA_CONTEXT_ERROR).encode()
    length = len(body) if framing == "length" else None
    server.script(head(200, "text/event-stream", length=length) + body)
    with pytest.raises(ContextTooLong, match="exceeds the available context size") as err:
        nbchat.chat("hi", model=MODEL)
    assert "closed before" not in str(err.value)


def test_chat_raises_with_the_partial_text_when_the_connection_drops(server):
    server.script(sse_head(), text_chunk("Hello"), text_chunk(" there"), 0.1, CLOSE)
    with pytest.raises(ConnectionFailed, match="dropped before the reply finished") as err:
        nbchat.chat("hi", model=MODEL)
    assert err.value.partial_text == "Hello there"
    assert err.value.reply.text == "Hello there" and err.value.reply.interrupted


def test_sync_calls_from_a_thread_pool_all_succeed(server):
    server.script(sse_head(), text_chunk("a"), 0.2, text_chunk("b", finish="stop"), DONE)

    def one(i: int) -> str:
        if i % 2:
            return "".join(nbchat.stream(f"q{i}", model=MODEL))
        return nbchat.chat(f"q{i}", model=MODEL).text

    with ThreadPoolExecutor(4) as pool:
        started = time.monotonic()
        texts = list(pool.map(one, range(8)))
        took = time.monotonic() - started
    assert texts == ["ab"] * 8
    assert took < 8 * 0.2  # they ran at the same time
    assert nbchat.chat("main", model=MODEL).text == "ab"  # and the main thread still works


# ---- waits that look like hangs ----------------------------------------------------------


def test_a_server_that_never_answers_fails_at_the_first_byte_limit_saying_so(server):
    server.script(STALL)
    started = time.monotonic()
    with pytest.raises(TimedOut, match=r"no answer from 127\.0\.0\.1 within 0\.5 s") as err:
        nbchat.chat("hi", model=MODEL, timeout={"first_byte": 0.5})
    assert err.value.limit == "first_byte" and "not retried" in str(err.value)
    assert time.monotonic() - started < 3
    assert len(server.requests) == 1


def test_limits_per_provider_and_for_all(server):
    server.script(STALL)
    http.configure(provider="openai", first_byte_timeout=0.4)
    with pytest.raises(TimedOut, match="within 0.4 s"):
        nbchat.chat("hi", model=MODEL)
    http.configure(first_byte_timeout=0.3, provider=None)  # the provider's own still wins
    with pytest.raises(TimedOut, match="within 0.4 s"):
        nbchat.chat("hi", model=MODEL)
    with pytest.raises(TimedOut, match="within 0.2 s"):  # and the call's over both
        nbchat.chat("hi", model=MODEL, timeout={"first_byte": 0.2})


def test_the_wait_for_the_answer_is_shown_with_its_time(server):
    server.script(1.3, sse_head(), text_chunk("late"), 1.2, text_chunk(" and later"),
                  text_chunk(finish="stop"), DONE)
    events, reply = events_of()
    status = [e.message for e in events if isinstance(e, Status)]
    assert status[0] == "waiting for openai, 1 s"
    assert "waiting for more from openai, 1 s" in status
    texts = [e for e in events if isinstance(e, (TextDelta, Status))]
    # each status is cleared ("") before the text that ends the wait
    assert [e.message for e in texts if isinstance(e, Status)][-1] == ""
    assert reply.text == "late and later"


def test_a_retry_after_wait_is_shown_counting_down(server):
    server.script(json_answer(429, {"error": {"message": "slow down"}}, Retry_After="2"))
    server.script(sse_head(), text_chunk("ok", finish="stop"), DONE)
    events, reply = events_of()
    status = [e.message for e in events if isinstance(e, Status)]
    assert reply.text == "ok"
    assert status[0] == "openai: rate limited (HTTP 429), retrying in 2 s"
    assert "openai: rate limited (HTTP 429), retrying in 1 s" in status
    assert status[-1] == ""


def test_a_retry_after_beyond_the_budget_is_reported_at_once(server):
    server.script(json_answer(429, {"error": {"message": "slow down"}}, Retry_After="30"))
    started = time.monotonic()
    with pytest.raises(RateLimited, match="slow down; retry in 30 s"):
        nbchat.chat("hi", model=MODEL, timeout=2)
    assert time.monotonic() - started < 1.5
    assert len(server.requests) == 1


def test_keep_alive_pings_do_not_keep_a_silent_stream_open(server):
    server.script(sse_head(), *[chunk(b": ping\n\n"), 0.1] * 60, HOLD)
    started = time.monotonic()
    with pytest.raises(TimedOut, match=r"nothing arrived for 0\.5 s \(idle timeout\).*keep-alive"):
        nbchat.chat("hi", model=MODEL, timeout={"idle": 0.5})
    assert time.monotonic() - started < 3


def test_a_trickle_ends_at_the_total_limit_and_keeps_its_text(server):
    server.script(sse_head(), *[text_chunk("a"), 0.2] * 60, HOLD)
    started = time.monotonic()
    with pytest.raises(TimedOut, match=r"stopped after 1 s, the total time") as err:
        nbchat.chat("hi", model=MODEL, timeout=1)
    assert time.monotonic() - started < 3
    assert err.value.limit == "total" and 3 <= len(err.value.partial_text) <= 6
    assert set(err.value.partial_text) == {"a"}


@pytest.mark.parametrize("wait", ["before headers", "retry-after", "mid-stream"])
def test_stop_ends_any_wait_at_once(server, wait):
    script = {
        "before headers": (STALL,),
        "retry-after": (json_answer(503, {"error": {"message": "busy"}}, Retry_After="30"),),
        "mid-stream": (sse_head(), text_chunk("partial"), HOLD),
    }[wait]
    server.script(*script)
    conv = nbchat.Conversation(model=MODEL)

    async def go() -> float:
        task = asyncio.ensure_future(conv.asend("hi"))
        await asyncio.sleep(0.8)
        assert not task.done()
        stopped = time.monotonic()
        task.cancel()  # what the panel's Stop does
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return time.monotonic() - stopped

    assert asyncio.run(go()) < 1.0
    if wait == "mid-stream":
        assert conv.replies[-1].text == "partial" and conv.replies[-1].interrupted


def test_an_interrupt_ends_a_sync_wait_at_once(server):
    server.script(STALL)
    timer = threading.Timer(0.8, _thread.interrupt_main)  # what a kernel interrupt does
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            nbchat.chat("hi", model=MODEL)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 2.0


def test_a_5_mb_error_body_is_shown_as_a_short_head_and_kept_whole(server):
    big = "x" * 5_000_000
    server.script(json_answer(400, {"error": {"message": "bad request: " + big}}))
    with pytest.raises(ProviderError) as err:
        nbchat.chat("hi", model=MODEL)
    assert len(str(err.value)) < 1000 and "more characters in the error's .body" in str(err.value)
    assert big in err.value.body and len(err.value.body) > 5_000_000
    text = b"y" * 5_000_000
    server.only(head(400, "text/plain", length=len(text)) + text)
    with pytest.raises(ProviderError) as err:
        nbchat.chat("hi", model=MODEL)
    assert len(str(err.value)) < 1000 and err.value.body == text.decode()
