"""Prices, the `max_cost` guard (refuses before anything is sent) and the usage ledger
(`%chat_usage`: this session and the whole log)."""

from __future__ import annotations

import re
import warnings

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import nbchat
from nbchat.core import costs, replay
from nbchat.core.conversation import Conversation
from nbchat.core.errors import BadOption, CostLimit
from nbchat.core.types import Message, Request, Usage
from nbchat.notebook.magics import ChatMagics

#: $10 / $30 per million tokens for the fake model, so that small requests cost something
PRICE = costs.Price(10.0, 30.0, "2026-01-01", "test")


@pytest.fixture
def priced(fake, monkeypatch):
    monkeypatch.setitem(costs.PRICES, "fake:echo", PRICE)
    return fake


def test_every_price_says_when_and_where_it_was_read():
    assert costs.PRICES
    for model, price in costs.PRICES.items():
        assert re.fullmatch(r"[a-z]+:[\w.*-]+", model), model
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", price.date), model
        assert price.source.startswith("https://") or "own machine" in price.source, model
        assert price.input >= 0 and price.output >= 0


def test_local_models_are_free_and_unknown_prices_are_none():
    assert costs.cost_of("llamacpp:smollm2", Usage(1000, 1000)) == 0.0
    assert costs.cost_of("cog:anything", Usage(10, 10)) == 0.0
    assert costs.price_of("openai:smollm2") is None
    assert costs.cost_of("openai:smollm2", Usage(10, 10)) is None
    assert costs.cost_of("openai:gpt-4o-mini", Usage(1_000_000, 1_000_000)) == pytest.approx(
        0.75)


def test_the_estimate_counts_prompt_images_and_max_tokens():
    from nbchat.core.types import ImagePart, Options

    req = Request("echo", (Message.of("system", "x" * 40), Message.of(
        "user", "y" * 400, (ImagePart(b"\x89PNG"),))), Options(max_tokens=50))
    est = costs.estimate("fake:echo", req)
    assert est.input_tokens == 110 + 8 + costs.IMAGE_TOKENS and est.output_tokens == 50
    assert costs.estimate("x:y", Request("y", req.messages)).output_tokens == \
        costs.DEFAULT_OUTPUT_TOKENS


def test_max_cost_refuses_before_anything_is_sent(priced):
    with pytest.raises(CostLimit) as err:
        nbchat.chat("Write an essay. " * 50, model="fake:echo", max_tokens=2000, max_cost=0.01)
    message = str(err.value)
    assert "max_cost=$0.01" in message and "fake:echo" in message
    assert "Lower max_tokens" in message
    assert priced.requests == [] and costs.ledger.rows() == []
    assert len(nbchat.log()) == 0  # nothing happened to log
    reply = nbchat.chat("Hi", model="fake:echo", max_tokens=10, max_cost=0.01)
    assert reply.text == "Hi" and len(priced.requests) == 1


def test_max_cost_without_max_tokens_assumes_the_default_output(priced):
    limit = costs.DEFAULT_OUTPUT_TOKENS * 30 / 1e6  # the output estimate alone costs this
    with pytest.raises(CostLimit, match="max_tokens not set"):
        nbchat.chat("Hi", model="fake:echo", max_cost=limit)


def test_max_cost_per_thread_counts_what_the_thread_spent(priced):
    conv = Conversation(model="fake:echo", max_cost=0.001, max_tokens=10)
    for prompt in ("one", "more"):
        priced.enqueue(*["word "] * 10)
        conv.send(prompt)
    spent = costs.spent(conv.replies)
    assert spent == pytest.approx((1 * 10 + 10 * 30 + 3 * 10 + 10 * 30) / 1e6)
    with pytest.raises(CostLimit, match=rf"plus \${spent:.4f} this thread already spent"):
        conv.send("and more")
    assert len(priced.requests) == 2 and len(conv.replies) == 2
    # the same request alone fits: it is the thread's spending that stops it
    assert Conversation(model="fake:echo", max_tokens=10, max_cost=0.001).send("and more").text


def test_unknown_price_with_max_cost_warns_once_and_sends(fake, monkeypatch):
    monkeypatch.setattr(costs, "_unpriced_warned", set())
    with pytest.warns(UserWarning, match="price of fake:echo is unknown"):
        assert nbchat.chat("a", model="fake:echo", max_cost=0.0).text == "a"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert nbchat.chat("b", model="fake:echo", max_cost=0.0).text == "b"


def test_max_cost_is_validated():
    with pytest.raises(BadOption, match="max_cost"):
        nbchat.Conversation(model="local", max_cost=-1)
    with pytest.raises(BadOption, match="max_cost"):
        nbchat.Conversation(model="local", max_cost="a dollar")


def test_the_session_ledger_counts_live_and_replayed_requests(priced):
    priced.enqueue("a", "b")
    nbchat.chat("one", model="fake:echo")
    nbchat.chat("two", model="fake:other")
    replay.set_mode("on")
    nbchat.chat("one", model="fake:echo")
    rows = dict(costs.ledger.rows())
    assert rows["fake:echo"] == costs.ModelUsage(requests=1, replayed=1, input_tokens=1,
                                                 output_tokens=2)
    assert rows["fake:other"].requests == 1


# ---- %config and %chat_usage -----------------------------------------------------------------


@pytest.fixture
def shell():
    ip = InteractiveShell.instance()
    magics = ChatMagics(shell=ip)
    ip.register_magics(magics)
    shown: list[dict] = []
    publish = ip.display_pub.publish
    ip.display_pub.publish = lambda data, metadata=None, **kw: shown.append(data)
    yield ip, shown
    ip.display_pub.publish = publish
    ip.config.pop("ChatMagics", None)
    if magics in ip.configurables:
        ip.configurables.remove(magics)


def test_max_cost_from_config_and_flag(shell, priced):
    ip, _ = shell
    ip.run_cell("%config ChatMagics.max_cost = 0.0001")
    result = ip.run_cell("%%chat -m fake:echo --max-tokens 100\nA long question")
    assert isinstance(result.error_in_exec, UsageError)
    assert "max_cost=$0.0001" in str(result.error_in_exec)
    assert ip.run_cell("%%chat -m fake:echo --max-tokens 100 --max-cost 1\nOK?").error_in_exec \
        is None
    assert len(priced.requests) == 1


def test_chat_usage_shows_session_and_whole_log_with_costs(shell, priced, monkeypatch):
    ip, shown = shell
    priced.enqueue(*["t"] * 1000)
    nbchat.chat("x" * 100, model="fake:echo")
    nbchat.chat("unpriced", model="fake:other")
    replay.set_mode("on")
    nbchat.chat("x" * 100, model="fake:echo")
    costs.ledger.clear()  # as in a new kernel: the whole log still has both
    replay.set_mode("off")
    priced.enqueue("tiny")
    nbchat.chat("again", model="fake:echo")
    shown.clear()
    assert ip.run_cell("%chat_usage").error_in_exec is None
    text = shown[-1]["text/plain"]
    session, whole, prices = text.split("\n\n")
    assert session.startswith("This kernel session: $0.0000")
    assert "fake:echo" in session and "fake:other" not in session
    assert whole.startswith("Whole log (") and "+ ?" in whole.splitlines()[0]
    echo = next(line for line in whole.splitlines() if line.startswith("fake:echo"))
    cost = (1 * 10 + 1000 * 30 + 1 * 10 + 1 * 30) / 1e6
    assert echo.split() == ["fake:echo", "2", "2", "1,001", f"${cost:.4f}"]
    other = next(line for line in whole.splitlines() if line.startswith("fake:other"))
    assert other.split()[-1] == "?"
    assert "2026-01-01" in prices and "not in nbchat's price table" in prices
    assert "<table>" in shown[-1]["text/html"]


def test_chat_usage_when_the_log_is_off(shell, fake, monkeypatch):
    ip, shown = shell
    monkeypatch.setenv("NBCHAT_LOG", "off")
    nbchat.chat("hi", model="fake:echo")
    ip.run_cell("%chat_usage")
    text = shown[-1]["text/plain"]
    assert "fake:echo" in text and "Whole log: not available, the log is off" in text
