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


def test_429s_slow_the_whole_batch_instead_of_failing_rows(fault_server):
    limited = json_answer(429, {"error": {"message": "slow down"}}, Retry_After="0.3")
    for _ in range(9):  # three requests' worth of 429s (each retried twice by the HTTP layer)
        fault_server.script(limited)
    fault_server.script(sse_head(), text_chunk("ok", finish="stop"), DONE)
    res = nbchat.map("row {text}", [str(i) for i in range(6)], model="openai:m",
                     base_url=fault_server.base, concurrency=4, progress=False)
    assert res.errors == {} and [r.text for r in res] == ["ok"] * 6
    assert res.throttles >= 1
    seen = fault_server.requests
    assert len(seen) == 9 + 6  # every row was answered, none given up


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
