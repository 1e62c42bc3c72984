"""Replay (nbchat.core.replay): a request equal to a logged one is answered from the log with the
same events; `on` falls through to the provider on a miss, `strict` never does. Every front
end: the Python API, batch, %%chat, the panel and compare."""

from __future__ import annotations

import asyncio
import http.server
import io
import threading

import pytest
from fakes import FakeProvider
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import nbchat
from nbchat.core import log as nblog
from nbchat.core import registry, replay
from nbchat.core.conversation import Conversation
from nbchat.core.errors import ProviderError, ReplayMiss
from nbchat.core.types import Done, ImagePart, Message, Request, Status, ToolCall, Usage
from nbchat.notebook.magics import ChatMagics


def png(color: str = "red", size: int = 8) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def events_of(prompt, model="fake:echo", **options) -> tuple[list, object]:
    """Run one turn and return (its events, its reply)."""
    turn = Conversation(model=model, **options).turn(prompt)

    async def collect():  # Status lines are about waiting, not part of the reply
        return [ev async for ev in turn.events() if not isinstance(ev, Status)]

    return asyncio.run(collect()), turn.reply


def test_same_request_same_events_without_the_provider(fake):
    logprobs = [({"token": "Hel", "logprob": -0.1},), (), ({"token": "!", "logprob": -2.0},)]
    fake.enqueue("Hel", "lo", "!", logprobs=logprobs, images=[ImagePart(png("blue"))],
                 tool_calls=[ToolCall("lookup", {"q": "x"}, "call_1")], finish_reason="tool_calls",
                 reasoning=["Let me ", "think."])
    live, first = events_of("hi", temperature=0)
    assert len(fake.requests) == 1
    replay.set_mode("strict")
    again, second = events_of("hi", temperature=0)
    assert len(fake.requests) == 1  # nothing sent
    assert again == live  # reasoning, text cut the same, logprobs, image bytes, tool call, Done
    assert [type(e).__name__ for e in again] == [
        "ReasoningDelta", "ReasoningDelta", "TextDelta", "TextDelta", "TextDelta", "ImageEvent",
        "ToolCallEvent", "Done"]
    assert second.reasoning == first.reasoning == "Let me think."
    assert second.text == first.text and second.tool_calls == first.tool_calls
    assert second.image_parts == first.image_parts and second.logprobs == first.logprobs
    assert second.usage == first.usage and second.finish_reason == "tool_calls"
    assert second.replayed and not first.replayed
    assert second.log_id == first.log_id  # the entry it came from
    assert (second.time_to_first_token, second.duration) == (
        pytest.approx(first.time_to_first_token, rel=1e-6), pytest.approx(first.duration, rel=1e-6))
    assert second.footer().endswith("· replayed") and "replayed" not in first.footer()
    assert second.provenance["replayed"] is True and first.provenance["replayed"] is False


def test_replays_are_not_logged_again(fake):
    nbchat.chat("hi", model="fake:echo")
    replay.set_mode("on")
    for _ in range(3):
        assert nbchat.chat("hi", model="fake:echo").replayed
    assert len(nbchat.log()) == 1


def test_strict_miss_names_the_model_and_the_prompt(fake):
    nbchat.chat("What is the capital of France?", model="fake:echo")
    replay.set_mode("strict")
    prompt = "What is the capital of Italy? Answer with one word, and nothing else please."
    with pytest.raises(ReplayMiss) as err:
        nbchat.chat(prompt, model="fake:echo", base_url="http://llm.test/v1")
    message = str(err.value)
    assert "fake:echo" in message and "http://llm.test/v1" in message
    assert '"What is the capital of Italy? Answer with one word, and not' in message
    assert "NBCHAT_REPLAY=on" in message  # what to do
    assert len(fake.requests) == 1  # the recording only


def test_on_mode_falls_through_to_the_provider_and_logs_it(fake):
    replay.set_mode("on")
    fake.enqueue("live answer")
    first = nbchat.chat("new question", model="fake:echo")
    assert not first.replayed and len(fake.requests) == 1
    fake.enqueue("a different answer")
    second = nbchat.chat("new question", model="fake:echo")
    assert second.replayed and second.text == "live answer" and len(fake.requests) == 1


def test_newest_finished_reply_answers(fake):
    fake.enqueue("old")
    nbchat.chat("q", model="fake:echo")
    fake.enqueue("new")
    nbchat.chat("q", model="fake:echo")
    fake.enqueue("partial", error=ProviderError("dropped", status=502))
    with pytest.raises(ProviderError):
        nbchat.chat("q", model="fake:echo")
    replay.set_mode("strict")
    assert nbchat.chat("q", model="fake:echo").text == "new"


def test_the_canonical_form_holds_what_changes_the_answer():
    base = Request("m", (Message.of("user", "hi"),))
    key = replay.request_hash("p:m", "http://h/v1", base)
    from dataclasses import replace

    from nbchat.core.options import parse_settings

    def with_opts(**kw):
        return replace(base, options=parse_settings(kw).options)

    assert replay.request_hash("p:m", "http://h/v1", with_opts()) == key  # defaults = none
    changed = [
        replay.request_hash("p:other", "http://h/v1", base),
        replay.request_hash("p:m", "http://other/v1", base),
        replay.request_hash("p:m", "http://h/v1", Request("m", (Message.of("user", "hi!"),))),
        replay.request_hash("p:m", "http://h/v1", Request(
            "m", (Message.of("system", "Be brief."), Message.of("user", "hi")))),
        replay.request_hash("p:m", "http://h/v1", Request(
            "m", (Message.of("user", "hi", (ImagePart(png()),)),))),
        *(replay.request_hash("p:m", "http://h/v1", with_opts(**kw)) for kw in (
            {"temperature": 0}, {"top_p": 0.5}, {"max_tokens": 5}, {"stop": ["x"]},
            {"seed": 1}, {"json": True}, {"schema": {"type": "object"}},
            {"tools": [{"name": "f", "parameters": {}}]}, {"logprobs": 2},
            {"input": {"top_k": 3}},
        )),
    ]
    assert key not in changed and len(set(changed)) == len(changed)


def test_the_key_is_not_part_of_the_request(fake, monkeypatch):
    """Replay works after the key changed or is gone: a notebook re-runs without it."""
    monkeypatch.setattr(type(fake), "key_env", "FAKE_API_KEY")
    first = nbchat.chat("hi", model="fake:echo", api_key="sk-first0123456789")
    replay.set_mode("strict")
    again = nbchat.chat("hi", model="fake:echo", api_key="sk-other0123456789")
    assert again.replayed and again.request_hash == first.request_hash
    monkeypatch.delenv("FAKE_API_KEY", raising=False)
    assert nbchat.chat("hi", model="fake:echo").replayed  # no key at all: no MissingKey
    replay.set_mode("off")
    with pytest.raises(nbchat.errors.MissingKey):
        nbchat.chat("hi", model="fake:echo")
    assert len(fake.requests) == 1


def test_a_failed_request_fails_again_in_strict_mode_and_is_retried_in_on_mode(fake):
    fake.enqueue("part", error=ProviderError("the model is overloaded", status=503,
                                             provider="fake"))
    with pytest.raises(ProviderError) as recorded:
        nbchat.chat("q", model="fake:echo")
    replay.set_mode("strict")
    with pytest.raises(ProviderError) as replayed:
        nbchat.chat("q", model="fake:echo")
    assert str(replayed.value) == str(recorded.value) and replayed.value.status == 503
    assert replayed.value.partial_text == "part"  # the same partial text came first
    assert len(fake.requests) == 1
    replay.set_mode("on")
    fake.enqueue("recovered")
    assert nbchat.chat("q", model="fake:echo").text == "recovered"
    assert len(fake.requests) == 2


def test_an_interrupted_reply_is_not_replayed(fake):
    fake.enqueue(*[f"w{i} " for i in range(50)], delay=0.01)

    async def stop_early():
        turn = Conversation(model="fake:echo").turn("long")
        agen = turn.events()
        async for _ in agen:
            break
        await agen.aclose()
        return turn.reply

    assert asyncio.run(stop_early()).interrupted
    replay.set_mode("strict")
    with pytest.raises(ReplayMiss):
        nbchat.chat("long", model="fake:echo")


def test_paced_replay_keeps_the_recorded_gaps_and_instant_replay_none(fake, monkeypatch):
    fake.enqueue("a", "b", "c", "d", delay=0.05)
    first = nbchat.chat("slow", model="fake:echo")
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay, *args):
        waits.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(replay.asyncio, "sleep", sleep)
    replay.set_mode("strict")
    assert nbchat.chat("slow", model="fake:echo").text == "abcd"
    assert all(w == 0 for w in waits)
    waits.clear()
    replay.set_mode("strict", paced=True)
    assert nbchat.chat("slow", model="fake:echo").text == "abcd"
    # the sleeps here return at once, so each wait is its event's recorded time
    assert all(later >= earlier - 0.005 for earlier, later in zip(waits, waits[1:],
                                                                   strict=False))
    assert waits[-1] == pytest.approx(first.duration, abs=0.02)
    gaps = [later - earlier for earlier, later in zip(waits[:3], waits[1:4], strict=True)]
    assert all(gap >= 0.045 for gap in gaps)


def test_stream_and_batch_replay(fake):
    chunks = list(nbchat.stream("count", model="fake:echo"))
    nbchat.batch(["a", "b", "c"], model="fake:echo", concurrency=2)
    replay.set_mode("strict")
    assert list(nbchat.stream("count", model="fake:echo")) == chunks
    replies = nbchat.batch(["a", "b", "c"], model="fake:echo", concurrency=2)
    assert [r.text for r in replies] == ["a", "b", "c"] and all(r.replayed for r in replies)
    assert len(fake.requests) == 4


def test_a_conversation_replays_turn_by_turn(fake):
    conv = Conversation(model="fake:echo", system="terse")
    fake.enqueue("Hello Ada.")
    conv.send("I am Ada.")
    fake.enqueue("You are Ada.")
    conv.send("Who am I?")
    replay.set_mode("strict")
    again = Conversation(model="fake:echo", system="terse")
    assert again.send("I am Ada.").text == "Hello Ada."
    assert again.send("Who am I?").text == "You are Ada."  # the history matched too
    with pytest.raises(ReplayMiss):
        Conversation(model="fake:echo").send("Who am I?")  # no history: another request


class ImageServer:
    """A loopback HTTP server with one PNG, counting GETs."""

    def __init__(self) -> None:
        self.hits = 0
        body = png("green", 16)
        server_self = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server_self.hits += 1
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cat.png"
        self.body = body
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_strict_replay_does_not_fetch_image_urls(fake):
    server = ImageServer()
    try:
        conv = Conversation(model="fake:echo")
        conv.send("What is this?", images=[server.url])
        assert server.hits == 1
        replay.set_mode("on")
        again = Conversation(model="fake:echo")
        reply = again.send("What is this?", images=[server.url])
        assert reply.replayed and server.hits == 1  # answered without fetching
        assert again.history[0].images[0].data == server.body  # the history has the bytes
        replay.set_mode("on")
        fake.enqueue("a new answer")
        fresh = Conversation(model="fake:echo").send("And this?", images=[server.url])
        assert not fresh.replayed and server.hits == 2  # a miss fetches, then asks
        assert fake.requests[-1].messages[-1].images[0].data == server.body
    finally:
        server.stop()
    replay.set_mode("strict")
    assert Conversation(model="fake:echo").send("What is this?", images=[server.url]).replayed


def test_replay_does_not_fetch_image_url_parts_of_messages(fake):
    """`image_url` parts by URL in the messages (the NVIDIA page's shape) replay offline too."""
    server = ImageServer()

    def ask():
        return Conversation(model="fake:echo").send([{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": server.url}}]}])

    try:
        ask()
        assert server.hits == 1
        replay.set_mode("on")
        reply = ask()
        assert reply.replayed and server.hits == 1  # answered without fetching
    finally:
        server.stop()
    replay.set_mode("strict")
    assert ask().replayed  # the server is gone: still answered from the log


def test_model_listings_replay(fake, monkeypatch):
    listed = nbchat.models("fake")
    assert [m.id for m in listed] == ["fake:echo", "fake:other"]

    async def down(**kw):
        raise ProviderError("the listing endpoint is down", status=503)

    monkeypatch.setattr(fake, "list_models", down)
    replay.set_mode("strict")
    assert nbchat.models("fake") == listed  # from the log, not the provider
    other = FakeProvider("unlogged")
    registry.register(other)
    try:
        with pytest.raises(ReplayMiss, match="no logged model list for unlogged"):
            nbchat.models("unlogged")
    finally:
        registry.unregister("unlogged")


def test_log_off_or_unreadable_in_strict_mode_is_a_clear_error(fake, monkeypatch):
    import os

    with open(os.environ["NBCHAT_LOG"], "wb") as fh:
        fh.write(b"not sqlite" * 100)
    replay.set_mode("strict")
    with pytest.raises(ReplayMiss, match="cannot read the log"), pytest.warns(nblog.LogWarning):
        nbchat.chat("x", model="fake:echo")
    replay.set_mode("on")
    assert nbchat.chat("x", model="fake:echo").text == "x"  # on: goes live
    monkeypatch.setenv("NBCHAT_LOG", "off")
    replay.set_mode("strict")
    with pytest.raises(ReplayMiss, match="NBCHAT_LOG=off"):
        nbchat.chat("x", model="fake:echo")


def test_nbchat_replay_environment_variable(fake, monkeypatch):
    nbchat.chat("env", model="fake:echo")
    monkeypatch.setenv("NBCHAT_REPLAY", "strict")
    assert replay.mode() == "strict"
    assert nbchat.chat("env", model="fake:echo").replayed
    with pytest.raises(ReplayMiss):
        nbchat.chat("not logged", model="fake:echo")
    monkeypatch.setenv("NBCHAT_REPLAY", "sometimes")
    with pytest.raises(nbchat.errors.UsageError, match="use on, strict or off"):
        nbchat.chat("env", model="fake:echo")


# ---- notebook front ends -------------------------------------------------------------------


@pytest.fixture
def shell():
    ip = InteractiveShell.instance()
    magics = ChatMagics(shell=ip)
    ip.register_magics(magics)
    shown: list[dict] = []
    publish = ip.display_pub.publish

    def record(data, metadata=None, *, update=False, **kw):
        shown.append({"data": data, "metadata": metadata or {}, "update": update})

    ip.display_pub.publish = record
    yield ip, shown, magics
    ip.display_pub.publish = publish
    if magics in ip.configurables:
        ip.configurables.remove(magics)


def test_chat_magic_replays_with_the_same_outputs_and_says_so(shell, fake):
    ip, shown, _ = shell
    fake.enqueue("First paragraph.\n\n", "Second ", "paragraph.", images=[ImagePart(png())])
    assert ip.run_cell("%%chat -m fake:echo --new\nTell me.").error_in_exec is None
    recorded = [s["data"] for s in shown if not s["update"]]
    shown.clear()
    ip.run_cell("%chat_replay strict")
    assert replay.mode() == "strict"
    assert ip.run_cell("%%chat -m fake:echo --new\nTell me.").error_in_exec is None
    again = [s["data"] for s in shown if not s["update"]]
    assert len(fake.requests) == 1
    assert again[:-1] == recorded[:-1]  # the text blocks and the image
    footer = again[-1]["text/plain"]
    assert footer.endswith(" · replayed") and footer[: -len(" · replayed")] == \
        recorded[-1]["text/plain"]
    meta = shown[-1]["metadata"]["nbchat"]
    assert meta["replayed"] is True and meta["model"] == "fake:echo"
    assert meta["log_id"] == nbchat.log(n=1).iloc[0]["id"]
    result = ip.run_cell("%%chat -m fake:echo --new\nSomething else.")
    assert isinstance(result.error_in_exec, UsageError)
    assert "no logged reply for fake:echo" in str(result.error_in_exec)


def test_chat_replay_magic_modes(shell, capsys):
    ip, _, _ = shell
    ip.run_cell("%chat_replay on --paced")
    assert replay.mode() == "on" and replay.paced()
    assert "replay: on at the recorded pace" in capsys.readouterr().out
    ip.run_cell("%chat_replay")
    assert "replay: on" in capsys.readouterr().out
    ip.run_cell("%chat_replay off")
    assert replay.mode() == "off"
    assert ip.run_cell("%chat_replay sometimes").error_in_exec is not None


def test_the_panel_replays(fake):
    from nbchat.notebook.panel import ChatPanel

    fake.enqueue("Paris", " is the capital.")

    async def turn(panel):
        panel.send = lambda *a, **k: None
        panel.submit("Capital of France?")
        return await panel.wait()

    first_panel = ChatPanel("fake:echo")
    first = asyncio.run(turn(first_panel))
    replay.set_mode("strict")
    panel = ChatPanel("fake:echo")
    again = asyncio.run(turn(panel))
    assert again.text == first.text and again.replayed and len(fake.requests) == 1
    entry = panel.transcript[-1]
    assert entry["badge"].endswith("replayed") and entry["provenance"]["replayed"] is True
    assert first_panel.transcript[-1]["provenance"]["log_id"] == entry["provenance"]["log_id"]


def test_compare_replays_every_column(fake):
    other = FakeProvider("second")
    registry.register(other)
    try:
        fake.enqueue("one")
        other.enqueue("two")
        first = nbchat.compare(["fake:echo", "second:echo"], "Same prompt", temperature=0)
        replay.set_mode("strict")
        again = nbchat.compare(["fake:echo", "second:echo"], "Same prompt", temperature=0)
    finally:
        registry.unregister("second")
    assert {k: r.text for k, r in again.items()} == {k: r.text for k, r in first.items()}
    assert all(r.replayed for r in again.values())
    assert len(fake.requests) == len(other.requests) == 1
    assert "replayed" in again._repr_html_()
    meta = again.metadata()["nbchat"]
    assert set(meta) == {"fake:echo", "second:echo"} and meta["fake:echo"]["replayed"]


def test_max_cost_never_refuses_a_replay(fake, monkeypatch):
    from nbchat.core import costs

    monkeypatch.setitem(costs.PRICES, "fake:echo", costs.Price(1000.0, 1000.0, "2026-01-01", "t"))
    nbchat.chat("pricey", model="fake:echo", max_tokens=5)
    replay.set_mode("on")
    assert nbchat.chat("pricey", model="fake:echo", max_tokens=5, max_cost=0.0).replayed


def test_done_usage_is_replayed_as_sent(fake):
    """A server that sends no usage: the turn counts deltas; the replay does the same."""

    class NoUsage(FakeProvider):
        async def stream(self, request, endpoint):
            async for ev in super().stream(request, endpoint):
                yield Done(ev.finish_reason, Usage()) if isinstance(ev, Done) else ev

    quiet = NoUsage("quiet")
    registry.register(quiet)
    try:
        quiet.enqueue("a", "b", "c")
        first = nbchat.chat("q", model="quiet:echo")
        replay.set_mode("strict")
        again = nbchat.chat("q", model="quiet:echo")
    finally:
        registry.unregister("quiet")
    assert first.usage == again.usage == Usage(None, 3)
