import asyncio

import pytest

import nbchat
from nbchat.core.errors import ProviderError, UnknownModel
from nbchat.core.types import ToolCall


def test_history_carries_over_and_reset_clears(fake):
    conv = nbchat.Conversation("fake:echo", system="be brief", temperature=0.1)
    fake.enqueue("Hello", " there")
    r1 = conv.send("hi")
    assert r1.text == "Hello there" and r1.model == "fake:echo" and r1.finish_reason == "stop"
    fake.enqueue("Again")
    conv.send("more")
    sent = fake.requests[-1]
    assert [m.role for m in sent.messages] == ["system", "user", "assistant", "user"]
    assert sent.messages[2].text == "Hello there"
    assert sent.options.temperature == 0.1
    assert [m.role for m in conv.messages] == ["system", "user", "assistant", "user", "assistant"]
    conv.reset()
    assert [m.role for m in conv.messages] == ["system"]


def test_prompt_as_message_list(fake):
    nbchat.chat([("system", "sys"), ("human", "q1"), {"role": "assistant", "content": "a1"},
                 ("user", "q2")], model="fake:echo")
    assert [m.role for m in fake.requests[-1].messages] == ["system", "user", "assistant", "user"]


def test_interrupted_turn_keeps_partial_text(fake):
    conv = nbchat.Conversation("fake:echo")
    fake.enqueue("one", "two", "three", "four")
    got = []
    gen = conv.stream("go")
    for chunk in gen:
        got.append(chunk)
        if len(got) == 2:
            gen.close()  # what a KeyboardInterrupt in the consumer does
            break
    assert got == ["one", "two"]
    assert fake.closed == 1  # the provider's stream was closed
    last = conv.history[-1]
    assert last.role == "assistant" and last.text == "onetwo" and last.interrupted
    fake.enqueue("next")
    assert conv.send("again").text == "next"


def test_keyboard_interrupt_while_waiting_cancels_the_stream(fake):
    """A KeyboardInterrupt raised while the loop waits for the next token closes the stream."""
    conv = nbchat.Conversation("fake:echo")
    fake.enqueue("a", "b", "c", delay=10)

    def interrupt_soon():
        raise KeyboardInterrupt

    gen = conv.stream("go")
    assert next(gen) == "a"
    from nbchat.core import bridge

    loop = bridge._private_loop()
    loop.call_later(0.05, interrupt_soon)
    with pytest.raises(KeyboardInterrupt):
        next(gen)
    assert fake.closed == 1
    assert conv.history[-1].interrupted and conv.history[-1].text == "a"


def test_error_midstream_keeps_partial_and_history(fake):
    conv = nbchat.Conversation("fake:echo")
    fake.enqueue("part", error=ProviderError("boom", status=500, provider="fake"))
    with pytest.raises(ProviderError) as e:
        conv.send("x")
    assert e.value.partial_text == "part"
    assert conv.history[-1].text == "part" and conv.history[-1].interrupted


def test_error_before_any_text_leaves_history_clean(fake):
    conv = nbchat.Conversation("fake:echo")
    fake.enqueue(error=ProviderError("down", status=503, provider="fake"))
    with pytest.raises(ProviderError):
        conv.send("x")
    assert conv.history == []


def test_tool_calls_and_usage(fake):
    fake.enqueue(tool_calls=[ToolCall("add", {"a": 1, "b": 2}, "c1")], finish_reason="tool_calls")
    r = nbchat.chat("add", model="fake:echo")
    assert r.tool_calls[0].name == "add" and r.tool_calls[0].arguments == {"a": 1, "b": 2}
    assert r.usage.input_tokens == 1 and r.finish_reason == "tool_calls"


def test_json_property(fake):
    fake.enqueue('{"a": ', "1}")
    assert nbchat.chat("j", model="fake:echo", json=True).json == {"a": 1}
    fake.enqueue("not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        _ = nbchat.chat("j", model="fake:echo").json


def test_images_are_refused_for_blind_models(fake, tmp_path):
    from PIL import Image

    from nbchat.core.errors import UnsupportedInput

    p = tmp_path / "a.png"
    Image.new("RGB", (4, 4), "red").save(p)
    with pytest.raises(UnsupportedInput, match="cannot see images"):
        nbchat.chat("what is it", model="fake:other", images=[str(p)])
    nbchat.chat("what is it", model="fake:echo", images=[str(p)])
    assert fake.requests[-1].messages[-1].images[0].mime == "image/png"


def test_unknown_model_and_provider():
    with pytest.raises(UnknownModel, match="llamacpp:smollm2"):
        nbchat.Conversation("llamacpp:smolm2")
    with pytest.raises(UnknownModel, match="Did you mean"):
        nbchat.chat("x", model="cerebra:llama3.1-70b")


def test_async_twins_match_sync(fake):
    fake.enqueue("x", "y")
    fake.enqueue("x", "y")
    sync = nbchat.chat("p", model="fake:echo")

    async def main():
        return await nbchat.achat("p", model="fake:echo")

    asy = asyncio.run(main())
    assert (sync.text, sync.usage, sync.finish_reason) == (asy.text, asy.usage, asy.finish_reason)
    fake.enqueue("s", "t")

    async def chunks():
        return [c async for c in nbchat.astream("p", model="fake:echo")]

    assert asyncio.run(chunks()) == ["s", "t"]


def in_kernel_like_loop(coro):
    """Run like a kernel does: a running loop, and SIGINT raising KeyboardInterrupt
    (asyncio.run would install its own SIGINT handler instead)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def test_interrupt_inside_a_running_loop_closes_the_stream(fake):
    """In a kernel: Ctrl-C while a sync call waits on the bridge's loop thread."""
    import _thread
    import threading

    conv = nbchat.Conversation("fake:echo")
    fake.enqueue("a", "b", delay=30)

    async def cell():
        gen = conv.stream("go")
        assert next(gen) == "a"
        threading.Timer(0.2, _thread.interrupt_main).start()
        next(gen)

    with pytest.raises(KeyboardInterrupt):
        in_kernel_like_loop(cell())
    assert fake.closed == 1 and fake.active == 0
    assert conv.history[-1].interrupted and conv.history[-1].text == "a"
    fake.enqueue(first_delay=30)

    async def cell2():
        threading.Timer(0.2, _thread.interrupt_main).start()
        nbchat.chat("x", model="fake:echo")

    with pytest.raises(KeyboardInterrupt):
        in_kernel_like_loop(cell2())
    assert fake.closed == 2 and fake.active == 0


def test_sync_calls_work_inside_a_running_loop(fake):
    """What a Jupyter cell does: a sync call while the kernel's loop is running."""
    fake.enqueue("in", "side")

    async def cell():
        return nbchat.chat("p", model="fake:echo").text, list(nbchat.stream("q", model="fake:echo"))

    text, chunks = asyncio.run(cell())
    assert text == "inside" and chunks == ["q"]


@pytest.mark.parametrize("limit,expected", [(5, 5), (2, 2)])
def test_batch_runs_concurrently_in_order(fake, limit, expected):
    for i in range(5):
        fake.enqueue(f"r{i}", first_delay=0.05)
    replies = nbchat.batch([f"p{i}" for i in range(5)], model="fake:echo", concurrency=limit)
    assert [r.text for r in replies] == [f"r{i}" for i in range(5)]
    assert fake.max_active == expected


def test_a_keyed_turn_replaces_the_turn_with_that_key_and_forks_there(fake):
    from nbchat.core.bridge import run_sync

    conv = nbchat.Conversation(model="fake:echo")
    for key, text in (("a", "one"), ("b", "two"), ("c", "three")):
        run_sync(conv.turn(text, key=key).collect())
    conv.send("unkeyed")  # no key: never replaced
    reply = run_sync(conv.turn("two, again", key="b").collect())
    assert [m.text for m in fake.requests[-1].messages] == ["one", "one", "two, again"]
    assert [m.text for m in conv.history] == ["one", "one", "two, again", "two, again"]
    assert len(conv.replies) == 2
    assert reply.notes == ["replaced its earlier run; dropped the 2 later turns"]
    run_sync(conv.turn("one, again", key="a").collect())
    assert [m.text for m in conv.history] == ["one, again"] * 2


def test_collect_runs_the_stream_in_the_callers_task_and_events_in_a_pump(fake, monkeypatch):
    # collect() (nbchat.chat, nbchat.map's rows) shows no status, so the provider's stream runs
    # in the caller's own task: no pump task and no hand-over (three fewer passes through the
    # event loop a request). events() keeps its pump, which is what lets it speak while waiting.
    tasks: list[asyncio.Task | None] = []
    stream = type(fake).stream

    async def traced(self, request, endpoint):
        tasks.append(asyncio.current_task())
        async for ev in stream(self, request, endpoint):
            yield ev

    monkeypatch.setattr(type(fake), "stream", traced)
    conv = nbchat.Conversation("fake:echo")

    async def both():
        fake.enqueue("one")
        await conv.turn("a").collect()
        fake.enqueue("two")
        async for _ in conv.turn("b").events():
            pass
        return asyncio.current_task()

    caller = asyncio.run(both())
    assert tasks[0] is caller and tasks[1] is not caller
