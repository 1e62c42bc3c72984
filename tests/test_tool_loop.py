"""The tool loop, manual tool turns, structured output and refusals (issue 12).

Against a real `llama_cpp.server` (forced tool calls with SmolLM2; it refuses `content: null`),
the in-process local model, the scripted `fake:` provider where a model's behaviour must be
chosen (repeated calls, parallel calls, wrong shapes), and recorded wire data (MockTransport)
for what only a cloud host sends (a refusal) or reads (`strict`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import pathlib
import signal
import threading
import time

import httpx
import pytest
from fakes import recorded_openai_style
from faultserver import DONE, sse_head, text_chunk
from IPython.core.error import UsageError
from test_magics import Shell

import nbchat
from nbchat.core import registry
from nbchat.core.conversation import NOT_ANSWERED
from nbchat.core.errors import BadOption, SchemaMismatch, ToolStepLimit
from nbchat.core.options import parse_settings, schema_of, tool_of
from nbchat.core.render import reply_html, tool_calls_html, tool_step_html, tool_step_text
from nbchat.core.tools import DENIED, NOT_FINISHED
from nbchat.core.types import ToolCall, ToolResultEvent
from nbchat.notebook.panel import ChatPanel
from nbchat.providers.openai import OpenAIProvider

SERVER = "openai:smollm2"
WIRE = pathlib.Path(__file__).parent / "wire"
BASE = "http://models.test/v1"


def get_weather(city: str) -> str:
    """Current weather for a city.

    Args:
        city: the city name
    """
    get_weather.calls.append(city)  # type: ignore[attr-defined]
    return "sunny, 23 C"


@pytest.fixture
def weather():
    get_weather.calls = []  # type: ignore[attr-defined]
    return get_weather


@pytest.fixture
def server(llama_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", llama_server)
    return llama_server


# ---- the loop against real models ----------------------------------------------------------


@pytest.mark.server
def test_python_tool_loop_runs_the_function_and_answers_with_its_result(server, weather):
    conv = nbchat.Conversation(model=SERVER, tools=[weather], tool_choice="get_weather",
                               max_tokens=40, temperature=0)
    reply = conv.send("What is the weather in Paris?")
    assert weather.calls == ["Paris"]
    [step] = reply.steps
    assert step.call.name == "get_weather" and step.result == "sunny, 23 C" and step.call.id
    assert reply.tool_calls == [] and reply.finish_reason in ("stop", "length")
    assert "sunny" in reply.text.lower()  # the answer is built on the function's result
    roles = [m.role for m in conv.history]
    assert roles == ["user", "assistant", "tool", "assistant"]
    assert conv.history[2].tool_call_id == conv.history[1].tool_calls[0].id
    # the thread goes on after a tool loop (the history with tool calls is accepted)
    assert conv.send("Thanks!", tools=None).error is None


def test_local_model_tool_loop(weather):
    """In process: the generic chat template cannot choose, so after the results the model is
    asked without tools (else the one tool would be forced again until the step limit)."""
    reply = nbchat.chat("What is the weather in Paris?", tools=[weather], max_tokens=40,
                        temperature=0)
    assert weather.calls == ["Paris"] and [s.call.name for s in reply.steps] == ["get_weather"]
    assert reply.text and not reply.tool_calls


@pytest.mark.server
def test_chat_magic_runs_tools_and_shows_each_call(server, weather):
    shell = Shell()
    shell.ip.user_ns.update(get_weather=weather, deny=lambda call: False)
    flags = f"-m {SERVER} -t 0 --max-tokens 40 --tool-choice get_weather --thread tl"
    try:
        shell.ok(f"%%chat {flags} --new --tools get_weather,get_weather --as r\nWeather in Paris?")
        html = "".join(shell.html())
        reply = shell.ip.user_ns["r"]
        assert "nbchat-tool-step" in html and "get_weather" in html and "sunny, 23 C" in html
        assert reply.steps[0].result == "sunny, 23 C" and "sunny" in reply.text.lower()
        assert "1 tool call in 2 requests" in reply.footer()
        # approval denied: the function does not run, the model hears so
        shell.ok(f"%%chat {flags} --new --tools get_weather --approve deny --as r2\n"
                 "Weather in Paris?")
        r2 = shell.ip.user_ns["r2"]
        assert weather.calls == ["Paris"] and r2.steps[0].denied
        assert r2.steps[0].result == DENIED and "denied" in "".join(shell.html())
    finally:
        shell.close()


@pytest.mark.server
def test_panel_runs_tools_and_keeps_the_steps(server, weather):
    panel = ChatPanel(SERVER, tools=[weather], tool_choice="get_weather", max_tokens=40,
                      temperature=0)
    sent: list[dict] = []
    panel.send = lambda content, buffers=None: sent.append(content)  # type: ignore[method-assign]

    async def main():
        panel._on_front_end_msg(panel, {"type": "send", "text": "Weather in Paris?"}, [])
        return await panel.wait()

    reply = asyncio.run(main())
    assert weather.calls == ["Paris"] and reply.steps[0].result == "sunny, 23 C"
    [tool] = [m for m in sent if m["type"] == "tool"]
    assert tool["call"] == 'get_weather({"city": "Paris"})' and tool["result"] == "sunny, 23 C"
    assert panel.transcript[-1]["steps"] == [{"call": tool["call"], "result": "sunny, 23 C"}]


def test_panel_confirm_button_denies_and_runs(fake, weather):
    panel = ChatPanel("fake:echo", tools=[weather], approve=True)
    sent: list[dict] = []
    panel.send = lambda content, buffers=None: sent.append(content)  # type: ignore[method-assign]
    call = ToolCall("get_weather", {"city": "Oslo"}, "c1")
    fake.enqueue(tool_calls=[call], finish_reason="tool_calls")
    fake.enqueue("It is denied.")
    fake.enqueue(tool_calls=[call], finish_reason="tool_calls")
    fake.enqueue("Sunny in Oslo.")

    async def answer(ok: bool):
        task = panel.submit("Weather in Oslo?")
        while not any(m["type"] == "approve" for m in sent):
            await asyncio.sleep(0.01)
        [ask] = [m for m in sent if m["type"] == "approve"]
        assert ask["call"] == 'get_weather({"city": "Oslo"})' and panel.status
        panel._on_front_end_msg(panel, {"type": "approval", "id": ask["id"], "ok": ok}, [])
        sent.clear()
        return await task

    denied = asyncio.run(answer(False))
    assert weather.calls == [] and denied.steps[0].denied
    assert fake.requests[1].messages[-1].text == DENIED
    ran = asyncio.run(answer(True))
    assert weather.calls == ["Oslo"] and ran.text == "Sunny in Oslo."


def test_approval_hook_sees_each_call_and_denied_calls_reach_the_model(fake, weather):
    seen = []
    calls = [ToolCall("get_weather", {"city": "Oslo"}, "a"),
             ToolCall("get_weather", {"city": "Rome"}, "b")]
    fake.enqueue(tool_calls=calls, finish_reason="tool_calls")
    fake.enqueue("done")
    reply = nbchat.chat("weather?", model="fake:echo", tools=[weather],
                        approve=lambda c: seen.append(c.arguments["city"]) or c.id == "b")
    assert seen == ["Oslo", "Rome"] and weather.calls == ["Rome"]
    tool_msgs = [m for m in fake.requests[1].messages if m.role == "tool"]
    assert [(m.tool_call_id, m.text) for m in tool_msgs] == [("a", DENIED), ("b", "sunny, 23 C")]
    assert [s.denied for s in reply.steps] == [True, False]


def test_step_limit_stops_with_a_clear_error_keeping_what_arrived(fake, weather):
    for _ in range(3):
        fake.enqueue("thinking", tool_calls=[ToolCall("get_weather", {"city": "Oslo"}, "x")],
                     finish_reason="tool_calls")
    conv = nbchat.Conversation(model="fake:echo", tools=[weather], max_tool_steps=2)
    with pytest.raises(ToolStepLimit, match="after 2 rounds") as err:
        conv.send("weather?")
    reply = err.value.reply
    assert len(reply.steps) == 2 and reply.tool_calls[0].name == "get_weather"
    assert reply.text == "thinking" and len(fake.requests) == 3
    # the thread goes on: the unrun call is answered before the next message
    fake.enqueue("ok")
    conv.send("never mind", tools=None)
    msgs = fake.requests[-1].messages
    assert [m.role for m in msgs[-3:]] == ["assistant", "tool", "user"]
    assert msgs[-2].text == NOT_ANSWERED and msgs[-2].tool_call_id == "x"


def test_parallel_async_calls_run_concurrently(fake):
    started: dict[str, asyncio.Event] = {}

    async def lookup(key: str) -> str:
        """Look a key up."""
        started.setdefault(key, asyncio.Event()).set()
        other = "b" if key == "a" else "a"
        # each call waits until the other one has started: only possible if they overlap
        await asyncio.wait_for(started.setdefault(other, asyncio.Event()).wait(), 5)
        return key.upper()

    fake.enqueue(tool_calls=[ToolCall("lookup", {"key": "a"}, "1"),
                             ToolCall("lookup", {"key": "b"}, "2")], finish_reason="tool_calls")
    fake.enqueue("A and B")
    reply = nbchat.chat("look up a and b", model="fake:echo", tools=[lookup])
    assert [s.result for s in reply.steps] == ["A", "B"] and not any(s.error for s in reply.steps)


def test_bad_arguments_and_raising_tools_become_results_the_model_reads(fake):
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        raise RuntimeError("adder broken")

    fake.enqueue(tool_calls=[ToolCall("add", {"a": "x", "b": 2}, "1"),
                             ToolCall("add", {"a": 1, "b": 2}, "2")], finish_reason="tool_calls")
    fake.enqueue("sorry")
    reply = nbchat.chat("1+2?", model="fake:echo", tools=[add])
    bad, broken = reply.steps
    assert bad.result.startswith("error: the arguments do not fit add") and "a" in bad.error
    assert broken.result == "error: RuntimeError: adder broken"


def test_events_include_a_result_event_per_call(fake, weather):
    fake.enqueue(tool_calls=[ToolCall("get_weather", {"city": "Oslo"}, "1")],
                 finish_reason="tool_calls")
    fake.enqueue("fine")

    async def main():
        turn = nbchat.Conversation(model="fake:echo", tools=[weather]).turn("w?")
        return [ev async for ev in turn.events()]

    events = asyncio.run(main())
    [result] = [e for e in events if isinstance(e, ToolResultEvent)]
    assert result.step.result == "sunny, 23 C"


def test_schema_only_tools_stop_at_the_call_as_before(fake):
    fake.enqueue(tool_calls=[ToolCall("lookup", {"q": "x"}, "1")], finish_reason="tool_calls")
    reply = nbchat.chat("hi", model="fake:echo",
                        tools=[{"type": "function", "function": {"name": "lookup"}}])
    assert reply.tool_calls[0].name == "lookup" and reply.steps == []


def test_a_call_to_an_unknown_tool_is_answered_and_the_loop_goes_on(fault_server, weather):
    """The model calls `os_system`, which it was not given: nothing runs, the model reads
    which tools there are, and answers (a loopback server scripts the two replies)."""
    call = {"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "os_system", "arguments": '{"cmd": "ls"}'}}
    fault_server.script(sse_head(), text_chunk(tool_calls=[call]),
                        text_chunk(finish="tool_calls"), DONE)
    fault_server.script(sse_head(), text_chunk("Sunny, I think."), text_chunk(finish="stop"),
                        DONE)
    reply = nbchat.chat("Weather in Paris?", model="openai:x", base_url=fault_server.base,
                        tools=[weather])
    expected = "error: no such tool 'os_system'; available: get_weather"
    assert reply.error is None and reply.text == "Sunny, I think."
    assert reply.finish_reason == "stop" and reply.tool_calls == []
    [step] = reply.steps
    assert step.call.name == "os_system" and step.result == expected and step.error
    assert weather.calls == []
    second = fault_server.requests[1].json()["messages"]
    assert second[-1] == {"role": "tool", "tool_call_id": "call_1", "content": expected}
    assert second[-2]["tool_calls"][0]["function"]["name"] == "os_system"


def test_an_unknown_call_next_to_a_real_one_both_get_answers(fault_server, weather):
    calls = [{"index": i, "id": f"call_{i}", "type": "function",
              "function": {"name": name, "arguments": args}}
             for i, (name, args) in enumerate([("get_weather", '{"city": "Oslo"}'),
                                               ("nope", "{}")])]
    fault_server.script(sse_head(), text_chunk(tool_calls=calls),
                        text_chunk(finish="tool_calls"), DONE)
    fault_server.script(sse_head(), text_chunk("ok"), text_chunk(finish="stop"), DONE)
    reply = nbchat.chat("hi", model="openai:x", base_url=fault_server.base, tools=[weather])
    assert weather.calls == ["Oslo"]
    assert [s.result for s in reply.steps] == [
        "sunny, 23 C", "error: no such tool 'nope'; available: get_weather"]
    assert reply.text == "ok" and not reply.tool_calls


# ---- the manual tool turn -------------------------------------------------------------------


@pytest.mark.server
def test_manual_tool_turn_is_accepted_by_llama_server(server):
    """The assistant tool-call message went out with content null (llama_cpp.server: HTTP 500)
    and the ("tool", text) answer with an empty tool_call_id."""
    history = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        ("tool", "sunny, 23 C"),
    ]
    reply = nbchat.chat(history, model=SERVER, max_tokens=30, temperature=0)
    assert reply.error is None and reply.text
    sent = nbchat.Conversation(model=SERVER).turn(history).request.messages
    assert sent[1].tool_calls[0].id == "call_1" and sent[2].tool_call_id == "call_1"


@pytest.mark.server
def test_chat_magic_thread_goes_on_after_a_reply_that_is_only_a_tool_call(server):
    shell = Shell()
    shell.ip.user_ns["lookup"] = {"type": "function", "function": {
        "name": "lookup", "description": "Look up a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}
    flags = f"-m {SERVER} -t 0 --max-tokens 30 --thread only-call"
    try:
        shell.ok(f"%%chat {flags} --new --tools lookup --tool-choice lookup --as r1\nParis?")
        assert shell.ip.user_ns["r1"].tool_calls
        shell.ok(f"%%chat {flags} --as r2\nSay hello.")
        shell.ok(f"%%chat {flags} --as r3\nSay bye.")
        assert shell.ip.user_ns["r3"].text
    finally:
        shell.close()


def test_tool_results_bind_to_the_call_they_answer(fake):
    conv = nbchat.Conversation(model="fake:echo")
    fake.enqueue(tool_calls=[ToolCall("a", {}, "id-a"), ToolCall("b", {}, "id-b")],
                 finish_reason="tool_calls")
    conv.send("go", tools=[{"name": "a"}, {"name": "b"}])
    fake.enqueue("done")
    conv.send([("tool", "A"), {"role": "tool", "content": "B"}])
    tool_msgs = [m for m in fake.requests[-1].messages if m.role == "tool"]
    assert [(m.tool_call_id, m.text) for m in tool_msgs] == [("id-a", "A"), ("id-b", "B")]
    with pytest.raises(BadOption, match="no call is waiting"):
        conv.send(("tool", "C"))


def test_replayed_history_keeps_its_tool_calls(fake):
    history = [{"role": "user", "content": "w?"},
               {"role": "assistant", "tool_calls": [{"id": "c9", "type": "function", "function": {
                   "name": "get_weather", "arguments": {"city": "Oslo"}}}]},
               {"role": "tool", "tool_call_id": "c9", "content": "rain"}]
    nbchat.chat(history, model="fake:echo")
    assistant = fake.requests[0].messages[1]
    assert assistant.tool_calls == (ToolCall("get_weather", {"city": "Oslo"}, "c9"),)
    assert fake.requests[0].messages[2].tool_call_id == "c9"


HISTORY = [("user", "w?"),
           {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
           ("tool", "rain"), ("user", "and now?")]


@pytest.mark.parametrize("model", ["openai:m", "cerebras:llama3.1-8b",
                                   "nvidia:meta/llama-3.1-8b-instruct",
                                   "anyscale:meta-llama/Meta-Llama-3-8B-Instruct"])
def test_histories_with_tool_calls_round_trip_on_every_openai_style_host(model, monkeypatch):
    sse = (WIRE / "openai_text_usage.sse").read_bytes()
    with recorded_openai_style(model, monkeypatch, BASE, sse) as bodies:
        nbchat.chat(HISTORY, model=model)
    msgs = bodies[0]["messages"]
    assert msgs[1] == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]}
    assert msgs[2] == {"role": "tool", "tool_call_id": "c1", "content": "rain"}


def test_local_model_takes_a_history_with_tool_calls():
    reply = nbchat.chat(HISTORY, max_tokens=8, temperature=0)
    assert reply.error is None and reply.finish_reason in ("stop", "length")


# ---- structured output ----------------------------------------------------------------------


@pytest.fixture
def Joke():  # noqa: N802 (a class, named as the tests use it)
    """A pydantic model with two string fields, for `schema=`."""
    pydantic = pytest.importorskip("pydantic")

    class Joke(pydantic.BaseModel):
        setup: str
        punchline: str

    return Joke


def test_schema_mismatch_is_retried_with_the_error_then_parsed(fake, Joke):  # noqa: N803
    fake.enqueue('{"setup": 1}')
    fake.enqueue('{"setup": "Why?", "punchline": "Because."}')
    reply = nbchat.chat("a joke", model="fake:echo", schema=Joke)
    assert isinstance(reply.parsed, Joke) and reply.parsed.punchline == "Because."
    retry = fake.requests[1].messages
    assert retry[-2].text == '{"setup": 1}' and "setup" in retry[-1].text
    assert "punchline" in retry[-1].text and "does not fit" in retry[-1].text


def test_a_schema_retry_in_a_cell_labels_the_rejected_attempt_before_the_answer(
        fake, Joke):  # noqa: N803
    fake.enqueue('{"setup": 1}')
    fake.enqueue('{"setup": "Why?", "punchline": "Because."}')
    shell = Shell()
    shell.ip.user_ns["Joke"] = Joke
    try:
        shell.ok("%%chat -m fake:echo --new --schema Joke --as r\na joke")
        html = "".join(shell.html())
        assert isinstance(shell.ip.user_ns["r"].parsed, Joke)
        bad, note, good = html.find(": 1}"), html.find("did not fit the schema"), html.find(
            "Because.")
        assert -1 < bad < note < good, html  # the rejected text, the label, then the answer
        assert "punchline" in html[note:good]  # the label says what did not fit
    finally:
        shell.close()


def test_schema_mismatch_after_the_retries_raises_holding_the_raw_text(fake):
    @dataclasses.dataclass
    class Joke:
        setup: str

    fake.enqueue('{"setup": 1}')
    fake.enqueue('{"setup": 2}')
    with pytest.raises(SchemaMismatch, match="does not fit the schema") as err:
        nbchat.chat("a joke", model="fake:echo", schema=Joke)
    assert err.value.raw == '{"setup": 2}' and len(err.value.errors) == 2
    assert len(fake.requests) == 2
    fake.enqueue('{"setup": 3}')
    with pytest.raises(SchemaMismatch):
        nbchat.chat("a joke", model="fake:echo", schema=Joke, schema_retries=0)
    assert len(fake.requests) == 3


def test_plain_json_schema_gives_a_checked_dict(fake):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    fake.enqueue('{"n": "three"}')
    fake.enqueue('```json\n{"n": 3}\n```')
    reply = nbchat.chat("n?", model="fake:echo", schema=schema)
    assert reply.parsed == {"n": 3}
    assert "n: 'three' is not of type 'integer'" in fake.requests[1].messages[-1].text


def test_local_model_structured_output_into_a_dataclass():
    @dataclasses.dataclass
    class Person:
        name: str
        age: int

    reply = nbchat.chat("Invent a person. Answer in JSON.", schema=Person, max_tokens=60,
                        temperature=0)
    assert isinstance(reply.parsed, Person) and isinstance(reply.parsed.age, int)


def test_tool_shaped_schema_is_recognised_or_refused():
    tool = {"type": "function", "function": {"name": "person", "parameters": {
        "type": "object", "properties": {"name": {"type": "string"}}}}}
    assert schema_of(tool) == (tool["function"]["parameters"], "person")
    with pytest.raises(BadOption, match="tool schema without 'parameters'"):
        parse_settings({"schema": {"type": "function", "function": {"name": "x"}}})


# ---- refusal and strict on the wire ---------------------------------------------------------


@pytest.fixture
def wire_host(monkeypatch, sleeps):
    bodies: list[dict] = []
    answers: list[bytes] = []

    def handler(req: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(req.content))
        return httpx.Response(200, content=answers.pop(0),
                              headers={"content-type": "text/event-stream"})

    registry.register(OpenAIProvider(transport=httpx.MockTransport(handler)))
    monkeypatch.setenv("OPENAI_BASE_URL", BASE)
    yield bodies, answers
    registry.unregister("openai")


def test_refusal_reaches_the_reply_the_cell_and_the_panel(wire_host):
    bodies, answers = wire_host
    answers += [(WIRE / "openai_refusal.sse").read_bytes()] * 3
    reply = nbchat.chat("something bad", model="openai:gpt-4o")
    assert reply.refusal == "I'm sorry, I can't help with <b>that</b>."
    assert reply.text == "" and reply.finish_reason == "stop" and reply.empty_reason is None
    shell = Shell()
    try:
        shell.ok("%%chat -m openai:gpt-4o --new\nsomething bad")
        html = "".join(shell.html())
        assert "Refused: I&#39;m sorry" in html or "Refused: I'm sorry" in html
        assert "<b>" not in html and "&lt;b&gt;that" in html
    finally:
        shell.close()
    panel = ChatPanel("openai:gpt-4o")
    panel.send = lambda content, buffers=None: None  # type: ignore[method-assign]

    async def main():
        panel.submit("something bad")
        return await panel.wait()

    asyncio.run(main())
    assert panel.transcript[-1]["refusal"] == reply.refusal


def test_user_written_tool_schema_goes_on_the_wire_as_written(wire_host):
    bodies, answers = wire_host
    answers.append((WIRE / "openai_text_usage.sse").read_bytes())
    tool = {"type": "function", "function": {
        "name": "get_weather", "strict": True, "description": "Weather.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"], "additionalProperties": False}},
        "x-owner": "me"}
    nbchat.chat("w?", model="openai:gpt-4o", tools=[tool])
    assert bodies[0]["tools"] == [tool]


def test_max_cost_counts_every_request_of_a_tool_loop(fake, weather, monkeypatch):
    from nbchat.core import costs
    from nbchat.core.errors import CostLimit

    monkeypatch.setitem(costs.PRICES, "fake:*", costs.Price(0.0, 1e6, "test", "test"))  # $1/token
    fake.enqueue("hmm", tool_calls=[ToolCall("get_weather", {"city": "Oslo"}, "1")],
                 finish_reason="tool_calls")
    fake.enqueue("fine")
    conv = nbchat.Conversation(model="fake:echo", tools=[weather], max_tokens=1, max_cost=1.5)
    with pytest.raises(CostLimit, match=r"plus \$1\.0000 this thread already spent"):
        conv.send("w?")  # the tool round cost $1: the answer's request would pass $1.50
    assert weather.calls == ["Oslo"] and len(fake.requests) == 1


# ---- a slow tool is not a silent wait --------------------------------------------------------


def test_a_slow_tool_says_what_runs_and_for_how_long(fake, monkeypatch):
    """While the model's tool calls run, the turn says so after `STATUS_AFTER` and then every
    `STATUS_EVERY` (the cell's status line, the panel's status), and empties the line once they
    are done; the same as a wait for the provider. `collect()` (the Python API) has no one to
    tell and runs them without a timer."""
    from nbchat.core.conversation import Conversation
    from nbchat.core.types import Status

    _fast_status(monkeypatch)

    async def slow_lookup(q: str) -> str:
        """Look something up slowly.

        Args:
            q: what to look up
        """
        await asyncio.sleep(float(q))
        return "found"

    fake.enqueue(tool_calls=[ToolCall("slow_lookup", {"q": "1.2"}, "c1")],
                 finish_reason="tool_calls")
    fake.enqueue("Done.")

    async def main():
        conv = Conversation(model="fake:echo", tools=[slow_lookup])
        return [ev async for ev in conv.turn("go").events()]

    events = asyncio.run(main())
    kinds = [type(e).__name__ for e in events]
    statuses = [e.message for e in events if isinstance(e, Status)]
    running = [m for m in statuses if m.startswith("running slow_lookup")]
    # said soon, then again as the seconds go by (each line once)
    assert running[-1] == "running slow_lookup (the model's tool call), 1 s", statuses
    assert len(set(running)) == len(running) and running[0].endswith((", 0 s", ", 1 s"))
    # emptied before the result is shown, then the answer streams
    assert statuses[statuses.index(running[-1]) + 1] == ""
    assert kinds.index("ToolResultEvent") > max(i for i, k in enumerate(kinds) if k == "Status"
                                                and events[i].message.startswith("running"))
    assert events[-1].__class__.__name__ == "Done"

    shell = Shell()
    shell.ip.user_ns.update(slow_lookup=slow_lookup)
    fake.enqueue(tool_calls=[ToolCall("slow_lookup", {"q": "0.3"}, "c2")],
                 finish_reason="tool_calls")
    fake.enqueue("Done again.")
    try:
        shell.ok("%%chat -m fake:echo --tools slow_lookup\ngo")
        status = [m for m in shell.messages if "nbchat-status" in m["data"].get("text/html", "")]
        assert any("running slow_lookup" in m["data"]["text/html"] for m in status), status
    finally:
        shell.close()


def test_reply_json_of_a_refusal_or_a_broken_json_reply_says_what_happened():
    """`reply.json` where JSON was asked for: a refusal says the model refused (not "ask with
    json=True", which the user did); JSON mode not kept says so; JSON not asked for says how."""
    from nbchat.core.errors import ReplyNotJSON
    from nbchat.core.options import parse_settings
    from nbchat.core.types import Reply

    refused = Reply(text="", refusal="I can't help with that.", json_mode=True)
    with pytest.raises(ReplyNotJSON, match="the model refused.*I can't help"):
        refused.json  # noqa: B018
    schema = parse_settings({"schema": {"type": "object"}}).options
    broken = Reply(text="Sure! {", options=schema)
    with pytest.raises(ReplyNotJSON, match="did not keep to it"):
        broken.json  # noqa: B018
    with pytest.raises(ReplyNotJSON, match="ask with json=True or schema="):
        Reply(text="plain words").json  # noqa: B018


# ---- where tools run, approval, interrupts, display size, partial answers ------------------


def _fast_status(monkeypatch):
    from nbchat.core import loop, waits

    monkeypatch.setattr(waits, "STATUS_AFTER", 0.05)
    monkeypatch.setattr(loop, "STATUS_EVERY", 0.05)


def test_a_plain_tool_runs_off_the_loop_so_the_status_ticks(fake, monkeypatch):
    """`def f(): time.sleep(...)` used to run on nbchat's loop: no status, no interrupt, a
    frozen panel kernel. It runs in a worker thread, and the status line says it runs."""
    from nbchat.core.conversation import Conversation
    from nbchat.core.types import Status

    _fast_status(monkeypatch)
    threads: list[threading.Thread] = []

    def slow_lookup(q: str) -> str:
        """Look something up slowly."""
        threads.append(threading.current_thread())
        time.sleep(0.4)
        return "found"

    fake.enqueue(tool_calls=[ToolCall("slow_lookup", {"q": "x"}, "c1")],
                 finish_reason="tool_calls")
    fake.enqueue("Done.")

    async def main():
        conv = Conversation(model="fake:echo", tools=[slow_lookup])
        return [ev async for ev in conv.turn("go").events()], threading.current_thread()

    events, loop_thread = asyncio.run(main())
    assert threads and threads[0] is not loop_thread
    statuses = [e.message for e in events if isinstance(e, Status)]
    assert any(m.startswith("running slow_lookup (the model's tool call), ") for m in statuses)
    [result] = [e for e in events if isinstance(e, ToolResultEvent)]
    assert result.step.result == "found" and result.step.duration >= 0.4


def test_plain_tools_run_one_at_a_time_while_async_ones_run_alongside(fake):
    plain_started, async_done = threading.Event(), threading.Event()
    active, most, order = [0], [0], []
    guard = threading.Lock()

    def count(n: int) -> int:
        """Count (not thread-safe, like much user code)."""
        with guard:
            active[0] += 1
            most[0] = max(most[0], active[0])
        plain_started.set()
        ok = async_done.wait(3) if n == 1 else True  # only if the loop is free meanwhile
        time.sleep(0.05)
        order.append(n)
        with guard:
            active[0] -= 1
        if not ok:
            raise RuntimeError("the async tool did not run while this one ran")
        return n

    async def watch() -> str:
        """Wait for a plain tool to start."""
        for _ in range(300):
            if plain_started.is_set():
                async_done.set()
                return "saw it"
            await asyncio.sleep(0.01)
        return "never saw it"

    fake.enqueue(tool_calls=[ToolCall("count", {"n": 1}, "1"), ToolCall("count", {"n": 2}, "2"),
                             ToolCall("watch", {}, "3")], finish_reason="tool_calls")
    fake.enqueue("ok")
    reply = nbchat.chat("go", model="fake:echo", tools=[count, watch])
    assert [s.result for s in reply.steps] == ["1", "2", "saw it"]
    assert most == [1] and order == [1, 2]


def test_a_plain_tool_may_call_nbchat_itself_inside_a_running_loop(fake):
    """In a notebook the sync call runs on nbchat's loop thread; a tool that called
    nbchat.chat there failed ("would wait for itself")."""
    def ask(q: str) -> str:
        """Ask the model."""
        return nbchat.chat(q, model="fake:echo").text

    fake.enqueue(tool_calls=[ToolCall("ask", {"q": "inner?"}, "c1")], finish_reason="tool_calls")
    fake.enqueue("inner answer")
    fake.enqueue("outer answer")

    async def kernel():  # a sync call inside a running loop, as in a kernel's cell
        return nbchat.chat("go", model="fake:echo", tools=[ask])

    reply = asyncio.run(kernel())
    [step] = reply.steps
    assert step.error is None and step.result == "inner answer"
    assert reply.text == "outer answer"


def test_the_approval_wait_is_not_reported_as_running(fake, weather, monkeypatch):
    """The panel's Run/Deny says "waiting for you ..."; the loop's timer used to overwrite it
    with "running get_weather" while nothing ran. The timer covers the run phase only."""
    _fast_status(monkeypatch)
    panel = ChatPanel("fake:echo", tools=[weather], approve=True)
    sent: list[dict] = []
    panel.send = lambda content, buffers=None: sent.append(content)  # type: ignore[method-assign]
    statuses: list[str] = []
    panel.observe(lambda change: statuses.append(change["new"]), names="status")
    fake.enqueue(tool_calls=[ToolCall("get_weather", {"city": "Oslo"}, "c1")],
                 finish_reason="tool_calls")
    fake.enqueue("Sunny in Oslo.")

    async def main():
        task = panel.submit("Weather in Oslo?")
        while not any(m["type"] == "approve" for m in sent):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # the user takes a while; several status periods go by
        waiting, before = panel.status, list(statuses)
        [ask] = [m for m in sent if m["type"] == "approve"]
        panel._on_front_end_msg(panel, {"type": "approval", "id": ask["id"], "ok": True}, [])
        return waiting, before, await task

    waiting, before, reply = asyncio.run(main())
    assert waiting == "waiting for you to run or deny get_weather"
    # (once approved, a run that takes longer than STATUS_AFTER may say "running": it runs)
    assert not any(s.startswith("running") for s in before), before
    assert weather.calls == ["Oslo"] and reply.text == "Sunny in Oslo."


def test_an_interrupt_while_tools_run_in_a_cell_keeps_what_ran(fake):
    """Interrupting %%chat while its tools ran showed no "interrupted", left nbchat.last
    without steps, and told the model next turn that calls which ran were "not run"."""
    release = threading.Event()

    def quick(n: int) -> str:
        """Quick."""
        return f"quick {n}"

    def stuck(n: int) -> str:
        """Stuck until released."""
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # a kernel interrupt
        release.wait(5)
        return "late"

    calls = [ToolCall("quick", {"n": 1}, "c1"), ToolCall("stuck", {"n": 2}, "c2"),
             ToolCall("quick", {"n": 3}, "c3")]
    fake.enqueue("Let me look.", tool_calls=calls, finish_reason="tool_calls")
    shell = Shell()
    shell.ip.user_ns.update(quick=quick, stuck=stuck)
    try:
        result = shell.run("%%chat -m fake:echo --new --thread intr --tools quick,stuck\ngo")
        release.set()
        assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
        assert "interrupted" in str(result.error_in_exec)
        reply = nbchat.last
        assert reply.interrupted and reply.finish_reason == "interrupted"
        assert [(s.call.id, s.result) for s in reply.steps] == [("c1", "quick 1")]
        outputs = shell.final_outputs()
        assert any("quick 1" in o for o in outputs)  # the call that ran is shown
        assert "interrupted" in outputs[-1]  # the footer says so
        history = shell.thread("intr").history
        assert [(m.role, m.tool_call_id, m.text) for m in history[-3:]] == [
            ("tool", "c1", "quick 1"), ("tool", "c2", NOT_FINISHED), ("tool", "c3", NOT_FINISHED)]
        fake.enqueue("ok")
        shell.ok("%%chat -m fake:echo --thread intr\nnext")
        tool_msgs = [(m.tool_call_id, m.text) for m in fake.requests[-1].messages
                     if m.role == "tool"]
        assert tool_msgs == [("c1", "quick 1"), ("c2", NOT_FINISHED), ("c3", NOT_FINISHED)]
    finally:
        release.set()
        shell.close()


def test_a_stopped_panel_keeps_the_steps_that_finished(fake):
    stuck_started = asyncio.Event()

    async def quick(n: int) -> str:
        """Quick."""
        return f"quick {n}"

    async def stuck(n: int) -> str:
        """Never ends."""
        stuck_started.set()
        await asyncio.sleep(60)
        return "late"

    fake.enqueue(tool_calls=[ToolCall("quick", {"n": 1}, "c1"), ToolCall("stuck", {"n": 2}, "c2")],
                 finish_reason="tool_calls")
    panel = ChatPanel("fake:echo", tools=[quick, stuck])
    panel.send = lambda content, buffers=None: None  # type: ignore[method-assign]

    async def main():
        task = panel.submit("go")
        await asyncio.wait_for(stuck_started.wait(), 5)
        await asyncio.sleep(0.01)
        panel.stop()
        return await task

    reply = asyncio.run(main())
    assert reply.interrupted and [s.result for s in reply.steps] == ["quick 1"]
    entry = panel.transcript[-1]
    assert entry["interrupted"] and entry["steps"] == [
        {"call": 'quick({"n": 1})', "result": "quick 1"}]
    assert [m.text for m in panel.conversation.history if m.role == "tool"] == [
        "quick 1", NOT_FINISHED]


def test_huge_tool_arguments_and_results_are_clipped_where_shown_only(fake):
    """A 3 MB argument and a 2 MB result went into the cell whole (a 10 MB notebook)."""
    big = "x" * 3_000_000

    def echo(text: str) -> str:
        """Echo a lot."""
        return "y" * 2_000_000

    fake.enqueue(tool_calls=[ToolCall("echo", {"text": big}, "c1")], finish_reason="tool_calls")
    fake.enqueue("done")
    shell = Shell()
    shell.ip.user_ns["echo"] = echo
    try:
        shell.ok("%%chat -m fake:echo --new --tools echo --as r\ngo")
        shown = "".join(shell.html()) + "".join(m["data"].get("text/plain", "")
                                                for m in shell.messages)
        reply = shell.ip.user_ns["r"]
    finally:
        shell.close()
    assert len(shown) < 30_000 and "… (2,998,012 more characters)" in shown  # {"text": ...}
    assert "… (1,998,000 more characters)" in shown
    # the reply and the model get them whole
    [step] = reply.steps
    assert step.call.arguments["text"] == big and len(step.result) == 2_000_000
    second = fake.requests[1].messages
    assert second[-2].tool_calls[0].arguments["text"] == big and len(second[-1].text) == 2_000_000
    # the panel's entries and compare use the same clipped texts; un-run calls too
    head, result = tool_step_text(step)
    assert len(head) < 2100 and len(result) < 2100
    assert len(tool_step_html(step)) < 5000
    fake.enqueue(tool_calls=[ToolCall("lookup", {"q": big}, "c9")], finish_reason="tool_calls")
    only_call = nbchat.chat("hi", model="fake:echo", tools=[{"name": "lookup"}])
    assert len(tool_calls_html(only_call)) < 5000 and len(reply_html(only_call)) < 10_000


def test_answering_one_of_parallel_calls_by_hand_answers_the_others_as_not_run(fake):
    """OpenAI refuses (HTTP 400) a history where some calls of a message have no result."""
    conv = nbchat.Conversation(model="fake:echo", tools=[{"name": "a"}])
    fake.enqueue(tool_calls=[ToolCall("a", {}, f"id{i}") for i in (1, 2, 3)],
                 finish_reason="tool_calls")
    conv.send("go")
    fake.enqueue("done")
    conv.send(("tool", "only one answer"))
    expected = [("id1", "only one answer"), ("id2", NOT_ANSWERED), ("id3", NOT_ANSWERED)]
    tool_msgs = [(m.tool_call_id, m.text) for m in fake.requests[-1].messages if m.role == "tool"]
    assert tool_msgs == expected
    fake.enqueue("more")
    conv.send("and then?")  # the history keeps the filled answers
    tool_msgs = [(m.tool_call_id, m.text) for m in fake.requests[-1].messages if m.role == "tool"]
    assert tool_msgs == expected


def test_a_tool_taking_kwargs_gets_the_arguments_no_parameter_takes(fake):
    got: list = []

    def search(**filters) -> str:
        """Search with any filters."""
        got.append(filters)
        return "3 hits"

    def near(city: str, **extra) -> str:
        """Places near a city."""
        got.append((city, extra))
        return "2 places"

    fake.enqueue(tool_calls=[ToolCall("search", {"color": "red", "size": 2}, "1"),
                             ToolCall("near", {"city": "Oslo", "radius": 5}, "2")],
                 finish_reason="tool_calls")
    fake.enqueue("ok")
    reply = nbchat.chat("find", model="fake:echo", tools=[search, near])
    assert [s.result for s in reply.steps] == ["3 hits", "2 places"]
    assert got == [{"color": "red", "size": 2}, ("Oslo", {"radius": 5})]
    sent = {t.name: t.parameters for t in fake.requests[0].options.tools}
    assert sent["search"]["additionalProperties"] is True  # the model is told it may
    assert "additionalProperties" not in tool_of(get_weather).parameters


def test_a_consumer_that_stops_at_a_tool_result_keeps_every_call_that_ran(fake, weather):
    fake.enqueue(tool_calls=[ToolCall("get_weather", {"city": "Oslo"}, "a"),
                             ToolCall("get_weather", {"city": "Rome"}, "b")],
                 finish_reason="tool_calls")
    conv = nbchat.Conversation(model="fake:echo", tools=[weather])

    async def main():
        turn = conv.turn("w?")
        async with contextlib.aclosing(turn.events()) as events:
            async for ev in events:
                if isinstance(ev, ToolResultEvent):
                    break  # the consumer stops after the first result it is handed
        return turn.reply

    reply = asyncio.run(main())
    assert reply.interrupted and [s.call.id for s in reply.steps] == ["a", "b"]
    assert [(m.tool_call_id, m.text) for m in conv.history if m.role == "tool"] == [
        ("a", "sunny, 23 C"), ("b", "sunny, 23 C")]
