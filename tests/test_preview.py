"""`nbchat.count` and previews (nbchat.core.preview): the local model's own tokenizer, checked
against what the model reports for the same request; estimates elsewhere, marked as such."""

from __future__ import annotations

import numpy as np

import nbchat
from nbchat.core import log as nblog
from nbchat.core.bridge import run_sync
from nbchat.core.preview import apreview


def test_count_for_the_local_model_is_its_own_tokenizer():
    prompt = "Name three rivers in Europe."
    n = nbchat.count(prompt, model="local", system="Be brief.")
    assert n.estimated is False and "own tokenizer" in n.method
    reply = nbchat.chat(prompt, model="local", system="Be brief.", max_tokens=1, temperature=0)
    assert n == reply.usage.input_tokens  # what llama.cpp evaluated for the same request


def test_count_includes_the_context_and_matches_the_local_model():
    arr = np.arange(200.0).reshape(100, 2)
    plain = nbchat.count("Describe arr.", model="local")
    with_ctx = nbchat.count("Describe arr.", model="local", context={"arr": arr})
    assert with_ctx > plain + 50
    reply = nbchat.chat("Describe arr.", model="local", context={"arr": arr}, max_tokens=1,
                        temperature=0)
    assert with_ctx == reply.usage.input_tokens


def test_count_elsewhere_is_an_estimate_marked_as_such(fake):
    n = nbchat.count("x" * 400, model="fake:echo")
    assert n.estimated is True and "estimate" in n.method and repr(n).startswith("~")
    assert n == 100 + 4  # 4 characters a token, 4 a message
    assert not fake.requests  # nothing was sent


def test_preview_shows_the_messages_and_sends_nothing(fake):
    conv = nbchat.Conversation("fake:echo", system="sys prompt")
    conv.send("first")
    before = list(conv.history)
    p = run_sync(apreview("second", conversation=conv, context={"note": "hello there"}))
    assert [m.role for m in p.messages] == ["system", "user", "assistant", "user"]
    text = str(p)
    assert "nothing was sent to fake:echo" in text and "sys prompt" in text
    assert "### note: string" in text and "hello there" in text and text.rstrip().endswith(
        "second")
    assert len(fake.requests) == 1 and conv.history == before
    lg = nblog.current()
    lg.flush()
    assert len(lg.entries(10)) == 1  # only the real turn was logged


def test_estimate_and_preview_include_the_tools_and_schema_sent(fake):
    """Tool definitions and a response schema go with the messages (servers put them in the
    prompt), so the estimate counts them and the dry run shows them."""
    import json

    def lookup(city: str, country: str = "") -> str:
        """Look up the weather of a city, with a long description that takes tokens.

        Args:
            city: the city to look up
            country: its country, when the name is ambiguous
        """
        return ""

    schema = {"type": "object", "properties": {"setup": {"type": "string"},
                                               "punchline": {"type": "string"}}}
    plain = nbchat.count("Weather?", model="fake:echo")
    tools = nbchat.count("Weather?", model="fake:echo", tools=[lookup])
    both = nbchat.count("Weather?", model="fake:echo", tools=[lookup], schema=schema)
    assert plain < tools < both and "tool definitions and schema" in tools.method
    p = run_sync(apreview("Weather?", model="fake:echo", tools=[lookup], schema=schema))
    text = str(p)
    assert "── tools ──" in text and '"name": "lookup"' in text and "the city to look up" in text
    assert "── response schema ──" in text and json.dumps(schema) in text
    assert not fake.requests
