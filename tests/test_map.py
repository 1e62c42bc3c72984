"""`nbchat.map` (nbchat.core.mapping): real pandas and polars frames, lists; failing rows, 429s
from a loopback server of the test's own, resuming from the reply log, schemas with the local
model, the progress bar, and an interrupt in a real kernel."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pandas as pd
import polars as pl
import pytest
from faultserver import DONE, STALL, json_answer, sse_head, text_chunk

import nbchat
from nbchat.core import registry
from nbchat.core.errors import BadOption, ProviderError
from nbchat.core.provider import Provider
from nbchat.core.types import Done, Event, ModelInfo, Request, TextDelta, Usage


class Picky(Provider):
    """Echoes the prompt in upper case; fails a prompt that contains "bad"."""

    name = "picky"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def known_models(self) -> list[ModelInfo]:
        return [ModelInfo(id="picky:m", provider="picky", key_set=True)]

    def model_info(self, model: str) -> ModelInfo | None:
        return self.known_models()[0]

    async def stream(self, request: Request, endpoint) -> AsyncIterator[Event]:
        text = request.messages[-1].text
        self.prompts.append(text)
        if "bad" in text:
            raise ProviderError("picky: refused", status=400)
        if "crash" in text:
            raise RuntimeError("picky crashed")  # not an nbchat error: still only its row
        yield TextDelta(text.upper())
        yield Done("stop", Usage(1, 1))


@pytest.fixture
def picky():
    p = Picky()
    registry.register(p)
    yield p
    registry.unregister("picky")


def test_pandas_frame_gets_a_new_column_aligned_with_its_rows(picky):
    df = pd.DataFrame({"city": ["oslo", "lima", "pune", "kyiv"], "temp": [3.5, 19.0, 31.2, 8]})
    out = nbchat.map("{city} is at {temp:.0f} C", df, model="picky:m", column="said",
                     concurrency=3, progress=False)
    assert list(out["said"]) == ["OSLO IS AT 4 C", "LIMA IS AT 19 C", "PUNE IS AT 31 C",
                                 "KYIV IS AT 8 C"]
    assert "said" not in df.columns and "said_error" not in out.columns  # input unchanged


def test_polars_frame_gets_a_new_column(picky):
    df = pl.DataFrame({"word": ["a", "b", "c"]})
    out = nbchat.map("say {word}", df, model="picky:m", column="reply", progress=False)
    assert isinstance(out, pl.DataFrame) and out["reply"].to_list() == ["SAY A", "SAY B", "SAY C"]


def test_lists_of_dicts_and_of_strings(picky):
    res = nbchat.map("hi {name}", [{"name": "ann"}, {"name": "bo"}], model="picky:m",
                     progress=False)
    assert [r.text for r in res] == ["HI ANN", "HI BO"] and res.errors == {}
    res = nbchat.map("Translate: {text}", ["un", "deux"], model="picky:m", progress=False)
    assert [r.text for r in res] == ["TRANSLATE: UN", "TRANSLATE: DEUX"]
    res = nbchat.map("Summarize:", ["one two"], model="picky:m", progress=False)
    assert res[0].text == "SUMMARIZE:\n\nONE TWO"  # no field: the row follows the template


def test_a_failing_row_keeps_its_error_and_the_others_go_on(picky):
    df = pd.DataFrame({"w": ["good", "bad", "fine", "bad too", "ok"]})
    out = nbchat.map("{w}", df, model="picky:m", column="r", concurrency=2, progress=False)
    assert [None if pd.isna(v) else v for v in out["r"]] == ["GOOD", None, "FINE", None, "OK"]
    assert "picky: refused" in out["r_error"][1] and pd.isna(out["r_error"][0])
    res = nbchat.map("{w}", df.to_dict("records") + [{"w": "crash"}, {"w": "last"}],
                     model="picky:m", progress=False, concurrency=1)
    assert set(res.errors) == {1, 3, 5} and res[1].error is res.errors[1] and res[0].error is None
    assert isinstance(res.errors[5], RuntimeError) and res[6].text == "LAST"


def test_a_field_that_names_no_column_fails_before_sending(picky):
    with pytest.raises(BadOption, match=r"\{citty\} names no column \(columns: city\)"):
        nbchat.map("{citty}", [{"city": "x"}], model="picky:m", progress=False)
    assert picky.prompts == []
    res = nbchat.map('{"k": {city}} {{city}}', [{"city": 1}], model="picky:m", progress=False)
    assert res[0].text == '{"K": 1} {{CITY}}'  # JSON braces and {{doubled}} stay as typed
    with pytest.raises(BadOption, match="column= needs a DataFrame"):
        nbchat.map("{x}", [{"x": 1}], model="picky:m", column="r")


def test_rows_with_a_logged_reply_are_not_sent_again(picky):
    rows = [{"w": w} for w in ("one", "bad", "three", "four")]
    first = nbchat.map("{w}", rows, model="picky:m", progress=False)
    assert len(picky.prompts) == 4 and set(first.errors) == {1} and first.reused == 0
    rows[1] = {"w": "two"}  # fixed: only this row is new
    second = nbchat.map("{w}", rows, model="picky:m", progress=False)
    assert picky.prompts[4:] == ["two"]  # the three logged replies were not sent again
    assert second.reused == 3 and [r.text for r in second] == ["ONE", "TWO", "THREE", "FOUR"]
    assert all(r.replayed for i, r in enumerate(second) if i != 1)
    nbchat.map("{w}", rows, model="picky:m", progress=False, resume=False)
    assert len(picky.prompts) == 9  # resume=False sends every row


def test_the_log_is_read_once_and_looked_up_only_for_rows_it_answers(picky, monkeypatch):
    from nbchat.core import log as nblog

    looked: list[str] = []
    find = nblog.Log.find

    def counted(self, request_hash):
        looked.append(request_hash)
        return find(self, request_hash)

    monkeypatch.setattr(nblog.Log, "find", counted)
    rows = [{"w": w} for w in ("one", "two", "one", "three")]
    first = nbchat.map("{w}", rows, model="picky:m", concurrency=1, progress=False)
    # nothing logged yet: no row is looked up, but the repeated row comes from the log (the
    # first "one" finished before it was sent)
    assert picky.prompts == ["one", "two", "three"] and first.reused == 1
    assert looked == [first[0].request_hash]
    looked.clear()
    rows.append({"w": "four"})
    second = nbchat.map("{w}", rows, model="picky:m", concurrency=2, progress=False)
    assert picky.prompts[3:] == ["four"] and second.reused == 4
    assert sorted(looked) == sorted(r.request_hash for r in second[:4])  # not the new row


def test_429s_slow_the_whole_batch_instead_of_failing_rows(fault_server):
    from nbchat.core.mapping import _spare

    limited = json_answer(429, {"error": {"message": "slow down"}}, Retry_After="0.3")
    # a 429 for each of the first three requests of every row the map works on at once (the
    # HTTP layer retries each request twice): each of those rows ends up RateLimited once
    workers = 4 + _spare(4)
    for _ in range(3 * workers):
        fault_server.script(limited)
    fault_server.script(sse_head(), text_chunk("ok", finish="stop"), DONE)
    res = nbchat.map("row {text}", [str(i) for i in range(6)], model="openai:m",
                     base_url=fault_server.base, concurrency=4, progress=False)
    assert res.errors == {} and [r.text for r in res] == ["ok"] * 6
    assert res.throttles >= 1
    seen = fault_server.requests
    assert len(seen) == 3 * workers + 6  # every row was answered, none given up


def test_concurrency_bounds_the_requests_on_the_wire(fault_server):
    # the map has more workers than slots (`_spare`): they build and finish rows outside the
    # slots, but no more than `concurrency` requests are ever answered at once
    fault_server.only(sse_head(), 0.2, text_chunk("ok", finish="stop"), DONE)
    res = nbchat.map("{text}", [f"r{i}" for i in range(24)], model="openai:m",
                     base_url=fault_server.base, concurrency=8, progress=False)
    assert res.errors == {} and len(fault_server.requests) == 24
    assert fault_server.most_at_once == 8


def test_a_row_waiting_for_a_slot_is_not_idle(fault_server):
    # the spare workers wait for a slot inside their turn: the idle limit is for a silent
    # server, not for other rows' requests (each reply streams for 0.5 s, never silent 0.3 s)
    steps = [sse_head()]
    for _ in range(5):
        steps += [text_chunk("a"), 0.1]
    fault_server.only(*steps, text_chunk(finish="stop"), DONE)
    res = nbchat.map("{text}", [f"r{i}" for i in range(10)], model="openai:m",
                     base_url=fault_server.base, concurrency=4, progress=False,
                     timeout={"idle": 0.3})
    assert res.errors == {} and [r.text for r in res] == ["aaaaa"] * 10
    assert len(fault_server.requests) == 10


def test_an_interrupted_result_says_which_rows_were_not_sent():
    from nbchat.core.mapping import MapResult, _State, result
    from nbchat.core.types import Reply

    state = _State(4, [Reply(model="m", text="a"), Reply(model="m"), None, None], {})
    state.errors[1] = ProviderError("refused", status=400)
    res = result(state, None, "list", None, None, interrupted=True)
    assert isinstance(res, MapResult)
    assert repr(res).splitlines()[0] == (
        "MapResult(1 done, 1 failed, 0 reused, 2 not sent (interrupted))")


def test_a_plain_tool_may_call_nbchat_chat_inside_a_map(fault_server):
    # the tool runs in a worker thread with its own event loop, and sees the row's context:
    # neither the worker's connection pool nor the row's slot may be used from there
    call = {"index": 0, "id": "c1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "oslo"}'}}
    for _ in range(2):  # per row: the tool call, the tool's own chat, the answer
        fault_server.script(sse_head(), text_chunk(None, tool_calls=[call], finish="tool_calls"),
                            DONE)
        fault_server.script(sse_head(), text_chunk("sunny", finish="stop"), DONE)
        fault_server.script(sse_head(), text_chunk("done", finish="stop"), DONE)

    def get_weather(city: str) -> str:
        """The weather in a city."""
        return nbchat.chat(f"weather in {city}?", model="openai:m",
                           base_url=fault_server.base).text

    res = nbchat.map("{text}", ["r0", "r1"], model="openai:m", base_url=fault_server.base,
                     tools=[get_weather], concurrency=1, progress=False)
    assert res.errors == {} and [r.text for r in res] == ["done", "done"]
    assert [step.result for step in res[0].steps] == ["sunny"]


def test_a_waiting_row_is_served_first_once_it_has_waited_starve_seconds(monkeypatch):
    import asyncio

    from nbchat.core import mapping

    monkeypatch.setattr(mapping, "STARVE", 0.3)

    async def scenario() -> tuple[int, float]:
        limiter = mapping.AdaptiveLimiter(1)
        assert await limiter.acquire()  # a busy worker holds the one slot
        waiting = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0.01)
        started, taken_back = time.monotonic(), 0
        while time.monotonic() - started < 3:
            # the busy worker gives the slot back and asks again at once: it is served first
            # (a freed slot goes to whoever asks), until the other has waited STARVE
            await limiter.release()
            if not await limiter.acquire(time.monotonic() + 0.05):
                break
            taken_back += 1
            await asyncio.sleep(0.02)  # its request; the other wakes and finds no slot
        assert waiting.done() and waiting.result()
        return taken_back, time.monotonic() - started

    taken_back, waited = asyncio.run(scenario())
    assert taken_back >= 5 and 0.25 <= waited <= 1.0


def test_schema_rows_come_back_parsed_with_the_local_model():
    schema = {"type": "object", "properties": {"color": {"type": "string"}},
              "required": ["color"]}
    res = nbchat.map("What color is a {thing}? Answer in JSON.", [{"thing": "banana"},
                     {"thing": "leaf"}], model="local", schema=schema, temperature=0,
                     max_tokens=40, progress=False, concurrency=2)
    assert res.errors == {}
    assert all(isinstance(v, dict) and isinstance(v["color"], str) for v in res)


def test_schema_is_sent_to_the_provider_and_a_reply_that_is_not_json_fails_its_row(fake):
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    fake.enqueue('{"x": 1}')
    fake.enqueue("not json")
    res = nbchat.map("{text}", ["a", "b"], model="fake:echo", schema=schema, concurrency=1,
                     progress=False)
    assert fake.requests[0].options.schema == schema and fake.requests[0].options.json
    assert res[0] == {"x": 1} and res[1] is None and "not valid JSON" in str(res.errors[1])


def test_the_progress_bar_counts_done_and_failed(picky, capsys):
    nbchat.map("{text}", ["a", "bad", "c"], model="picky:m", concurrency=1)
    err = capsys.readouterr().err
    assert "nbchat.map" in err and "3/3" in err and "failed=1" in err


def test_batch_still_works(fake):
    replies = nbchat.batch(["a", "b", "c"], model="fake:echo", concurrency=2)
    assert [r.text for r in replies] == ["a", "b", "c"]


def test_an_interrupt_in_a_kernel_keeps_what_finished(fault_server):
    jupyter_client = pytest.importorskip("jupyter_client")
    from test_context_kernel import run

    fault_server.script(sse_head(), text_chunk("done", finish="stop"), DONE)
    fault_server.script(sse_head(), text_chunk("done", finish="stop"), DONE)
    fault_server.script(STALL)
    km = jupyter_client.KernelManager(kernel_name="python3")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        msg = kc.execute(
            "import nbchat\n"
            f"out = nbchat.map('{{text}}', list('abcde'), model='openai:m', "
            f"base_url='{fault_server.base}', concurrency=1, progress=False)")
        deadline = time.monotonic() + 60
        while len(fault_server.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)  # two rows answered, the third one waiting on the server
        assert len(fault_server.requests) == 3
        km.interrupt_kernel()
        shown, _ = run(kc, "print(out.interrupted, [r.text if r else None for r in out], "
                           "sorted(out.errors))")
        assert shown.strip() == "True ['done', 'done', None, None, None] [2, 3, 4]"
        assert msg
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


# ---- rows of any kind, read once --------------------------------------------------------


def test_a_generator_of_rows_is_read_once_and_every_row_is_sent(fault_server):
    fault_server.script(sse_head(), text_chunk("ok", finish="stop"), DONE)  # repeats
    res = nbchat.map("{text}", (x for x in ["h1", "h2", "h3"]), model="openai:m",
                     base_url=fault_server.base, progress=False, concurrency=2)
    assert [r.text for r in res] == ["ok", "ok", "ok"] and res.errors == {}
    sent = sorted(s.json()["messages"][-1]["content"] for s in fault_server.requests)
    assert sent == ["h1", "h2", "h3"]


def test_iterators_tuples_ranges_and_amap_take_any_iterable(picky):
    import asyncio

    res = nbchat.map("say {text}", iter(["a", "b"]), model="picky:m", progress=False)
    assert [r.text for r in res] == ["SAY A", "SAY B"]
    res = nbchat.map("n={text}", range(3), model="picky:m", progress=False)
    assert [r.text for r in res] == ["N=0", "N=1", "N=2"]  # numbers fill {text}
    res = nbchat.map("hi {name}", ({"name": n} for n in ("ann", "bo")), model="picky:m",
                     progress=False)
    assert [r.text for r in res] == ["HI ANN", "HI BO"]
    res = asyncio.run(nbchat.amap("x {text}", (s for s in ("p", "q")), model="picky:m",
                                  progress=False))
    assert [r.text for r in res] == ["X P", "X Q"]
    assert nbchat.map("{text}", iter([]), model="picky:m", progress=False) == []
    with pytest.raises(BadOption, match="row 1 is a list"):
        nbchat.map("{text}", ["a", ["b"]], model="picky:m", progress=False)


# ---- fields that name real columns ------------------------------------------------------


def test_fields_naming_columns_with_spaces_or_int_names_fill(picky):
    df = pd.DataFrame({"first name": ["Ann", "Bo"], "unit price": [2.25, 3.0]})
    out = nbchat.map("Hi {first name}, {unit price:.1f} {\"k\": 1}", df, model="picky:m",
                     column="r", progress=False)
    assert picky.prompts == ['Hi Ann, 2.2 {"k": 1}', 'Hi Bo, 3.0 {"k": 1}']  # JSON as typed
    assert list(out["r"]) == ['HI ANN, 2.2 {"K": 1}', 'HI BO, 3.0 {"K": 1}']
    nbchat.map("{0} {1}", pd.DataFrame({0: ["a"], 1: ["b"]}), model="picky:m", progress=False)
    assert picky.prompts[-1] == "a b"
    with pytest.raises(BadOption, match=r"\{first nme\} names no column .*did you mean "
                                        r"\{first name\}"):
        nbchat.map("Hi {first nme}", df, model="picky:m", progress=False)
    with pytest.raises(BadOption, match=r"\{2\} names no column \(columns: 0, 1\)"):
        nbchat.map("{2}", pd.DataFrame({0: ["a"], 1: ["b"]}), model="picky:m", progress=False)
    assert len(picky.prompts) == 3  # the bad templates sent nothing


def test_a_row_missing_a_key_other_rows_have_is_named(picky):
    rows = [{"name": "ann"}, {"name": "bo"}, {"nick": "cy"}]
    with pytest.raises(BadOption, match=r"row 2 has no 'name'") as err:
        nbchat.map("hi {name}", rows, model="picky:m", progress=False)
    assert "double" not in str(err.value) and picky.prompts == []


def test_missing_values_are_sent_as_empty_text_with_one_warning(picky):
    df = pd.DataFrame({"w": ["a", None, float("nan")],
                       "t": pd.to_datetime(["2024-01-02", None, "2024-01-03"])})
    with pytest.warns(UserWarning, match=r"missing values .* in t, w were sent as empty "
                                         "text") as seen:
        nbchat.map("[{w}] [{t:%Y}]", df, model="picky:m", progress=False, concurrency=1)
    assert picky.prompts == ["[a] [2024]", "[] []", "[] [2024]"]
    assert len([w for w in seen if "missing values" in str(w.message)]) == 1
    with pytest.warns(UserWarning, match="missing values"):
        nbchat.map("[{w}]", pl.DataFrame({"w": ["a", None]}), model="picky:m", progress=False,
                   concurrency=1)
    assert picky.prompts[3:] == ["[a]", "[]"]


# ---- a batch that is always rate limited --------------------------------------------------


def test_always_429_ends_each_row_at_its_timeout_and_the_bar_says_why(fault_server, capsys):
    from nbchat.core.errors import RateLimited, TimedOut
    from nbchat.core.mapping import RATE_LIMIT_TRIES

    fault_server.script(json_answer(429, {"error": {"message": "slow down"}},
                                    Retry_After="0.3"))  # every request, forever
    res = nbchat.map("{text}", ["a", "b", "c"], model="openai:m", base_url=fault_server.base,
                     concurrency=2, timeout=1)
    assert set(res.errors) == {0, 1, 2}
    assert all(isinstance(e, (RateLimited, TimedOut)) and "timeout" in str(e)
               for e in res.errors.values())
    # each row gave up when its second ran out, not after every try (3 HTTP attempts each)
    assert len(fault_server.requests) < 3 * 3 * RATE_LIMIT_TRIES
    err = capsys.readouterr().err
    assert "rate limited, retrying in" in err and "3/3" in err and "failed=3" in err


# ---- column=, schemas in polars, unknown keywords ----------------------------------------


def test_a_map_run_again_on_its_own_result_replaces_its_column_with_a_warning(picky):
    """The notebook habit `df = nbchat.map(..., df, column="label")`, run twice: the second run
    replaces `label` in its result, says so, and drops the first run's `label_error` when no
    row failed; the frame passed in is not changed."""
    df = pd.DataFrame({"review": ["good", "fine"], "label": ["old", "old"],
                       "label_error": ["stale", None]})
    with pytest.warns(UserWarning, match="already has a column 'label'"):
        out = nbchat.map("{review}", df, model="picky:m", column="label", progress=False)
    assert list(out["label"]) == ["GOOD", "FINE"] and "label_error" not in out.columns
    assert list(df["label"]) == ["old", "old"] and "label_error" in df.columns  # untouched
    frame = pl.DataFrame({"review": ["good"], "label_error": ["stale"]})
    out = nbchat.map("{review}", frame, model="picky:m", column="label", progress=False)
    assert out["label"].to_list() == ["GOOD"] and "label_error" not in out.columns


def test_polars_keeps_the_parsed_objects_of_a_class_schema(fake):
    from dataclasses import dataclass

    @dataclass
    class P:
        x: int

    for frame in (pl.DataFrame({"w": ["a", "b"]}), pd.DataFrame({"w": ["a", "b"]})):
        fake.enqueue('{"x": 1}')
        fake.enqueue('{"x": 2}')
        out = nbchat.map("{w}", frame, model="fake:echo", schema=P, column="p",
                         concurrency=1, progress=False)
        values = out["p"].to_list() if isinstance(out, pl.DataFrame) else list(out["p"])
        assert values == [P(1), P(2)] and all(isinstance(v, P) for v in values)


def test_an_unknown_keyword_lists_maps_own_parameters_and_the_close_match(picky):
    from nbchat.core.errors import UnknownOption

    with pytest.raises(UnknownOption, match="Did you mean 'concurrency'") as err:
        nbchat.map("{text}", ["a"], model="picky:m", concurency=2)
    for name in ("column", "progress", "resume", "temperature"):
        assert name in str(err.value)
    with pytest.raises(UnknownOption, match="Did you mean 'column'"):
        nbchat.map("{text}", ["a"], model="picky:m", colum="x")
    assert picky.prompts == []
