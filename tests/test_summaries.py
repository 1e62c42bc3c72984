"""Context summaries (nbchat.core.summaries) and `context=` in the core: real pandas and polars
frames, numpy arrays, strings, collections and a matplotlib figure, sent through a scripted
provider that records each request."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import polars as pl
import pytest

import nbchat
from nbchat.core import summaries
from nbchat.core.errors import BadOption
from nbchat.core.summaries import CHARS_PER_TOKEN, Described, summarize

matplotlib.use("Agg")


def sent_text(fake) -> str:
    return fake.requests[-1].messages[-1].text


def test_a_1000x2_array_is_summarized_not_repr_ellipsed(fake):
    """The issue's example: `{arr}` sends 93 characters of repr with "..."; context= sends
    shape, dtype, statistics and a sample of both ends."""
    arr = np.arange(2000.0).reshape(1000, 2)
    nbchat.chat("What is in arr?", model="fake:echo", context={"arr": arr})
    text = sent_text(fake)
    assert "### arr: numpy array" in text
    assert "shape: (1000, 2), dtype: float64" in text
    assert "min: 0, max: 1999, mean: 999.5" in text
    assert "column 1: min 1, max 1999, mean 1000" in text
    assert "[1.998e+03 1.999e+03]" in text and "[0.000e+00 1.000e+00]" in text  # both ends
    assert text.rstrip().endswith("What is in arr?")  # the prompt follows the context


def test_pandas_frame_shape_dtypes_head_tail_describe():
    df = pd.DataFrame({"city": [f"c{i}" for i in range(50)], "temp": np.linspace(0, 49, 50)})
    text = summarize("df", df, 2000).text
    assert "shape: 50 rows x 2 columns" in text
    assert "temp    float64" in text
    assert "head(5):" in text and "c0" in text and "tail(5):" in text and "c49" in text
    assert "describe():" in text and "mean" in text and "24.5" in text
    assert "c25" not in text  # the middle rows are not sent


def test_polars_frame_shape_schema_head_tail_describe():
    df = pl.DataFrame({"city": [f"c{i}" for i in range(50)], "temp": list(range(50))})
    item = summarize("df", df, 2000)
    assert item.kind == "polars DataFrame"
    assert "shape: 50 rows x 2 columns" in item.text
    assert "temp: Int64" in item.text and "city: String" in item.text
    assert "c0" in item.text and "c49" in item.text and "c25" not in item.text
    assert "describe():" in item.text and "null_count" in item.text


@pytest.mark.parametrize("budget", [60, 150, 400, 5000])
def test_every_summary_fits_its_budget(budget):
    values = {
        "df": pd.DataFrame(np.arange(40_000).reshape(2000, 20)),
        "pl": pl.DataFrame({f"c{i}": list(range(3000)) for i in range(12)}),
        "arr": np.random.default_rng(0).normal(size=(300, 300)),
        "text": "word " * 20_000,
        "items": list(range(100_000)),
        "mapping": {f"k{i}": "v" * 300 for i in range(500)},
    }
    for name, value in values.items():
        item = summarize(name, value, budget)
        assert len(item.text) <= budget * CHARS_PER_TOKEN, (name, len(item.text))


def test_long_strings_and_collections_say_how_much_was_left_out():
    text = summarize("s", "a" * 7000 + "THE END", 100).text
    assert text.startswith("7,007 characters:") and text.endswith("THE END")
    assert "characters left out" in text
    many = summarize("xs", list(range(10_000)), 200).text
    assert many.startswith("10,000 items:") and "… and 9,9" in many
    d = summarize("d", {"alpha": 1, "beta": [1, 2]}, 200).text
    assert "'alpha': 1" in d and "'beta': [1, 2]" in d


def test_more_detail_when_the_budget_allows():
    df = pd.DataFrame(np.arange(3000).reshape(300, 10))
    small, large = summarize("df", df, 120).text, summarize("df", df, 3000).text
    assert "describe():" in large and "describe():" not in small
    assert "shape: 300 rows x 10 columns" in small


def test_the_budget_is_shared_by_the_named_objects(fake):
    big = {"a": "x" * 40_000, "b": "y" * 40_000}
    nbchat.chat("q", model="fake:echo", context=big, context_budget=500)
    text = sent_text(fake)
    assert 1500 < len(text) <= 500 * CHARS_PER_TOKEN + 400  # two halves of 1,000 characters
    assert text.count("characters left out") == 2


def test_a_figure_goes_as_an_image_to_a_model_that_can_see(fake):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    ax.set_title("growth")
    nbchat.chat("Describe the plot", model="fake:echo", context={"fig": fig})
    last = fake.requests[-1].messages[-1]
    assert "title: growth" in last.text and "(attached as an image)" in last.text
    assert len(last.images) == 1 and last.images[0].data.startswith(b"\x89PNG")
    plt.close(fig)


def test_a_figure_to_a_model_that_cannot_see_sends_its_description_only(fake):
    import matplotlib.pyplot as plt

    fake.vision = False
    fig, ax = plt.subplots()
    ax.plot([1, 2])
    nbchat.chat("Describe", model="fake:echo", context={"fig": fig})
    last = fake.requests[-1].messages[-1]
    assert not last.images and "the model cannot see" in last.text
    plt.close(fig)


def test_nothing_is_sent_that_was_not_named(fake):
    secret_frame = pd.DataFrame({"do_not_send": [1]})  # noqa: F841 - exists, not named
    nbchat.chat("q", model="fake:echo", context={"n": 5})
    text = sent_text(fake)
    assert "do_not_send" not in text and "### n: int" in text
    nbchat.chat("plain", model="fake:echo")
    assert fake.requests[-1].messages[-1].text == "plain"


def test_conversation_context_goes_with_its_first_turn_only(fake):
    conv = nbchat.Conversation("fake:echo", context={"note": "remember me"})
    conv.send("one")
    conv.send("two")
    first, second = fake.requests
    assert "remember me" in first.messages[-1].text
    assert "remember me" not in second.messages[-1].text
    assert "remember me" in second.messages[0].text  # still in the history it was sent with


def test_names_need_a_notebook_and_bad_values_say_what_to_give(monkeypatch):
    monkeypatch.setattr(summaries, "resolver", None)
    with pytest.raises(BadOption, match="pass {'name': value}"):
        nbchat.Conversation("fake:echo", context=["df"])
    with pytest.raises(BadOption, match="expected names or a"):
        summaries.named([3])


def test_described_text_keeps_head_and_end():
    tb = "Traceback (most recent call last):\n" + "  frame\n" * 2000 + "ZeroDivisionError: x"
    text = summarize("error", Described("last error", tb), 100).text
    assert text.startswith("Traceback") and text.endswith("ZeroDivisionError: x")


def test_chat_panel_sends_its_context_with_the_first_message_and_after_new_chat(fake):
    import asyncio

    from nbchat.notebook.panel import ChatPanel

    frame = pd.DataFrame({"station": ["north", "south"], "rain_mm": [12.5, 3.0]})
    panel = ChatPanel("fake:echo", context={"rain": frame})
    panel.send = lambda content, buffers=None: None  # no front end here

    async def turn(text):
        panel.submit(text)
        return await panel.wait()

    asyncio.run(turn("Which station is wetter?"))
    asyncio.run(turn("And by how much?"))
    panel.new_chat()
    asyncio.run(turn("Start over"))
    first, second, third = (r.messages[-1].text for r in fake.requests)
    assert "### rain: pandas DataFrame" in first and "north" in first and "12.5" in first
    assert "rain" not in second
    assert "### rain: pandas DataFrame" in third


def test_an_object_whose_repr_raises_is_summarized_as_such():
    """A user's object whose __repr__ (or summary) raises does not break --context with an
    internal traceback: its summary says what failed, and the other names still go in."""
    from nbchat.core.summaries import summarize_all

    class Broken:
        def __repr__(self):
            return str(1 / 0)

    items = summarize_all((("k", Broken()), ("n", [1, 2, 3])), 200)
    assert items[0].kind == "Broken" and "summary failed (ZeroDivisionError" in items[0].text
    assert "1, 2, 3" in items[1].text


@pytest.mark.parametrize("reply, code", [
    ("Use this: ```python\nprint('hi')\n``` in a line", None),  # no block: no empty cell
    ("```\n```\n\n```python\nx = 1\n```", "x = 1"),  # an empty block is passed over
    ("Text\n\n    indented = True\n", "indented = True"),
    ("```py\nfirst\n```\n```py\nsecond\n```", "first"),
])
def test_code_takes_the_first_block_that_holds_code(reply, code):
    from nbchat.notebook.magics import first_code_block

    assert first_code_block(reply) == code
