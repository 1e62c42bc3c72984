"""compare / acompare / CompareView / CompareResult."""

from __future__ import annotations

import asyncio

import pytest
from fakes import FakeProvider
from faultserver import DONE, sse_head, text_chunk
from htmlcheck import hrefs, problems

import nbchat
from nbchat.core import registry
from nbchat.core.errors import ConnectionFailed, UnknownModel
from nbchat.core.types import Reply
from nbchat.notebook.compare import CompareResult, CompareView, acompare, compare, stats_of


@pytest.fixture
def two():
    a, b = FakeProvider("fa"), FakeProvider("fb")
    registry.register(a)
    registry.register(b)
    yield a, b
    registry.unregister("fa")
    registry.unregister("fb")


class Gate(FakeProvider):
    """Streams only once `n` streams have started: a sequential compare would never finish."""

    def __init__(self, name: str, n: int) -> None:
        super().__init__(name)
        self.n = n
        self.started = 0
        self.all_in: asyncio.Event | None = None

    async def stream(self, request, endpoint):
        if self.all_in is None:
            self.all_in = asyncio.Event()
        self.started += 1
        if self.started == self.n:
            self.all_in.set()
        await asyncio.wait_for(self.all_in.wait(), 10)
        async for ev in super().stream(request, endpoint):
            yield ev


def test_all_models_stream_at_once():
    gate = Gate("gate", 3)
    registry.register(gate)
    try:
        result = compare(["gate:a", "gate:b", "gate:c"], "hi")
    finally:
        registry.unregister("gate")
    assert list(result) == ["gate:a", "gate:b", "gate:c"]
    assert all(r.text == "hi" and r.error is None for r in result.values())


def test_one_failure_stays_in_its_column(two):
    a, b = two
    a.enqueue("partial ", error=ConnectionFailed("fa dropped the connection; check the server"))
    b.enqueue("fine ", "answer", delay=0.01)
    view = CompareView(["fa:echo", "fb:echo"], temperature=0)
    sent: list[dict] = []
    view.send = lambda content, buffers=None: sent.append(content)  # type: ignore[method-assign]
    result = view.run("question")
    assert result["fb:echo"].text == "fine answer" and result["fb:echo"].error is None
    assert isinstance(result["fa:echo"].error, ConnectionFailed)
    assert result["fa:echo"].text == "partial "
    assert result.errors.keys() == {"fa:echo"}
    col_a, col_b = view.columns
    assert col_a["state"] == "error" and "dropped the connection" in col_a["error"]
    assert col_b["state"] == "done" and col_b["text"] == "fine answer"
    assert col_b["stats"]["output_tokens"] == 2 and col_b["stats"]["duration"] > 0
    # streamed text went out as per-column deltas carrying only new text
    streamed: dict[str, str] = {}
    for msg in sent:
        assert msg["type"] == "delta"
        for k, t in msg["cols"].items():
            streamed[k] = streamed.get(k, "") + t
    assert streamed == {"0": "partial ", "1": "fine answer"}
    assert b.requests[0].options.temperature == 0


def test_options_are_validated_once_for_all_models(two):
    """A schema class counts how often it is turned into JSON schema (once per validation)."""
    calls = []

    class Answer:
        @classmethod
        def model_json_schema(cls):
            calls.append(1)
            return {"type": "object", "properties": {"a": {"type": "string"}}}

    view = CompareView(["fa:echo", "fa:other", "fb:echo"], schema=Answer, temperature=0.5)
    view.send = lambda content, buffers=None: None  # type: ignore[method-assign]
    result = view.run('{"a": "q"}')  # echoed: a reply that fits the schema
    assert all(r.error is None for r in result.values())
    sent = two[0].requests + two[1].requests
    assert len(sent) == 3 and len(calls) == 1
    assert all(r.options.schema_name == "Answer" and r.options.temperature == 0.5 for r in sent)


def test_provider_star_expands_to_its_models(two):
    result = compare(["fa:*"], "hey")
    assert list(result) == ["fa:echo", "fa:other"]
    assert compare(nbchat.models("fb"), "x").keys() == {"fb:echo", "fb:other"}


def test_unknown_model_fails_before_any_request(two):
    with pytest.raises(UnknownModel):
        compare(["fa:echo", "nosuch:model"], "hi")
    assert not two[0].requests


def test_acompare_is_the_async_twin(two):
    two[0].enqueue("A")
    two[1].enqueue("B")
    result = asyncio.run(acompare("fa:echo,fb:echo", "q"))
    assert isinstance(result, CompareResult)
    assert {k: r.text for k, r in result.items()} == {"fa:echo": "A", "fb:echo": "B"}
    assert nbchat.last is result


def test_result_renders_escaped_static_table():
    text = "<script>alert(1)</script> <img src=x onerror=alert(2)> [x](javascript:alert(3))"
    evil = Reply(text=text, model="fa:echo", duration=1.0, time_to_first_token=0.2)
    bad = Reply(model="fb:echo", error=ConnectionFailed("could not reach <host>"))
    result = CompareResult({"fa:echo": evil, "fb:echo": bad}, prompt="<b>q</b>")
    bundle = result._repr_mimebundle_()
    page = bundle["text/html"]
    assert "<script>" not in page and "<img src=x" not in page and "<b>q</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "could not reach &lt;host&gt;" in page
    assert "first token 0.20 s" in page and "1.00 s total" in page
    assert set(bundle) == {"text/html", "text/plain"}  # no Markdown for a second parser
    assert problems(page) == [] and hrefs(page) == []
    assert "== fb:echo ==" in bundle["text/plain"]


def test_result_looks_up_aliases():
    reply = Reply(text="x", model="llamacpp:smollm2")
    result = CompareResult({"llamacpp:smollm2": reply})
    assert result["local"] is reply
    with pytest.raises(KeyError):
        result["fa:nothing"]


def test_compare_with_the_local_model_and_a_missing_key():
    result = compare(["local", "openai:gpt-4o-mini"], "Name a color.",
                     temperature=0, max_tokens=12)
    local = result["local"]
    assert local.text and local.error is None and local.usage.output_tokens
    nv = result["openai:gpt-4o-mini"]
    assert nv.error is not None and "OPENAI_API_KEY" in str(nv.error)


def test_last_expression_is_shown_once_in_ipython(two):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shown: list[dict] = []
    publish = shell.display_pub.publish
    shell.display_pub.publish = lambda data, *a, **k: shown.append(data)  # type: ignore[method-assign]
    try:
        shell.run_cell("import nbchat\nr = nbchat.compare(['fa:echo', 'fb:echo'], 'hello')\nr")
        # not displayed by compare outside a kernel: shown once, by the display hook
        assert len(shown) == 1 and "hello" in shown[0]["text/html"]
        shell.user_ns["r"]._shown_in = shell.execution_count  # as compare() in a kernel does
        shown.clear()
        shell.run_cell("r")
        assert shown == []  # not twice in the same cell...
        shell.execution_count += 1
        shell.run_cell("r")
        assert len(shown) == 1  # ...but again in a later cell
    finally:
        shell.display_pub.publish = publish  # type: ignore[method-assign]
        InteractiveShell.clear_instance()


def test_a_column_that_waits_says_what_for(two, fault_server):
    fa, _ = two
    fa.enqueue("quick")
    fault_server.script(1.3, sse_head(), text_chunk("slow", finish="stop"), DONE)
    view = CompareView(["fa:echo", "openai:m"], base_url=fault_server.base)
    sent: list[dict] = []
    view.send = lambda content, buffers=None: sent.append(content)  # type: ignore[method-assign]
    result = asyncio.run(view.arun("hi"))
    status = [m for m in sent if m["type"] == "status"]
    assert {"type": "status", "col": 1, "text": "waiting for openai, 1 s"} in status
    assert status[-1] == {"type": "status", "col": 1, "text": ""}
    assert result["openai:m"].text == "slow" and result["fa:echo"].text == "quick"


def test_a_failed_column_says_how_long_it_took_to_fail_not_a_total():
    slow = Reply(model="fa:echo", error=ConnectionFailed("gone"), duration=1.5)
    at_once = Reply(model="fb:echo", error=ConnectionFailed("no key"), duration=0.0001)
    fine = Reply(text="**ok**", model="fc:echo", duration=2.0)
    result = CompareResult({"fa:echo": slow, "fb:echo": at_once, "fc:echo": fine})
    page = result._repr_html_()
    assert "failed after 1.50 s" in page and "failed after 0.00 s" in page
    assert "0.00 s total" not in page and "2.00 s total" in page
    assert stats_of(slow)["failed"] and not stats_of(fine)["failed"]
    # the finished table renders the Markdown the live columns render, in equal columns
    assert "<strong>ok</strong>" in page
    assert page.count("width:33.333%") == 6  # head and body cell of each column
    assert "table-layout:fixed" in page


def test_finished_table_shows_tool_steps_and_refusals(two):
    """A model that called tools shows each call and its result collapsed above its answer, as
    the panel and %%chat do; a refusal shows as one. Names, arguments and results stay text."""
    from nbchat.core.types import ToolCall

    a, b = two
    hostile = '<img src=x onerror="alert(1)">'

    def lookup(q: str) -> str:
        """Look something up.

        Args:
            q: what to look up
        """
        return f"found {hostile}"

    for fake in two:
        fake.enqueue(tool_calls=[ToolCall("lookup", {"q": hostile}, "c1")],
                     finish_reason="tool_calls")
        fake.enqueue("The answer.")
    result = compare(["fa:echo", "fb:echo"], "find it", tools=[lookup])
    assert [len(r.steps) for r in result.values()] == [1, 1]
    result["fb:echo"].refusal = f"no {hostile}"
    bundle = result._repr_mimebundle_()
    page = bundle["text/html"]
    assert page.count("nbchat-tool-step") == 2 and "found &lt;img" in page
    assert page.index("lookup(") < page.index("The answer.")
    assert "Refused: no &lt;img" in page and problems(page) == []
    assert '[tool] lookup({"q": "<img' in bundle["text/plain"]
    assert f"Refused: no {hostile}" in bundle["text/plain"]


@pytest.mark.server
def test_provider_star_lists_the_server_given_by_base_url(llama_server, monkeypatch):
    """`-m 'openai:*' --base-url URL` (and `compare("openai:*", ..., base_url=URL)`) compares
    the models that server lists, not those of the provider's default endpoint."""
    from test_magics import Shell

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    result = compare("openai:*", "Hi", base_url=llama_server, max_tokens=2, temperature=0)
    assert list(result) == ["openai:smollm2"] and not result.errors
    shell = Shell()
    try:
        shell.ok(f"%%chat -m openai:* --base-url {llama_server} --max-tokens 2 --as r\nHi")
        assert list(shell.ip.user_ns["r"]) == ["openai:smollm2"]
    finally:
        shell.close()
