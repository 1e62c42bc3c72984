"""The local model reuses llama.cpp's context between calls (real SmolLM2, temperature 0).

Reuse is observed by counting the tokens llama.cpp evaluates (a wrapper around `Llama.eval`,
which every prompt and every generated token goes through), never by timing.
"""

from __future__ import annotations

import contextlib

import pytest

import nbchat
import nbchat.local
from nbchat.core.registry import get_provider

ZERO = {"temperature": 0, "seed": 1}
ADA = ["Hi, I am Ada and I like maths.", "What is my name?", "Tell me a fact about cats."]
BOB = ["Hello, I am Bob and I like trains.", "What do I like?", "Name a famous train."]


def loaded():
    return get_provider("llamacpp").load("smollm2")


@contextlib.contextmanager
def counting_evals():
    """Count the tokens each call evaluates: (prompt tokens evaluated, ...) per `eval` call."""
    llm = loaded().llm
    calls: list[int] = []

    def evaluate(tokens):
        calls.append(len(tokens))
        return type(llm).eval(llm, tokens)

    llm.eval = evaluate
    try:
        yield calls
    finally:
        del llm.eval


@pytest.fixture
def fresh():
    """Start from an empty cache with the default cache settings, and leave it that way."""
    nbchat.local.clear_cache()
    yield get_provider("llamacpp")
    nbchat.local.configure(cache_states=None, cache_bytes=None)
    nbchat.local.clear_cache()


def prompt_evaluated(conv: nbchat.Conversation, text: str) -> tuple[int, int]:
    """(tokens of the turn's prompt evaluated, tokens in its prompt) for one turn."""
    with counting_evals() as calls:
        reply = conv.send(text, max_tokens=24)
    # the first eval call is the prompt (or its new part); each later one is a generated token
    return calls[0], reply.usage.input_tokens


def test_a_conversation_evaluates_only_what_is_new(fresh):
    conv = nbchat.Conversation("local", **ZERO)
    first, total1 = prompt_evaluated(conv, ADA[0])
    assert first == total1  # nothing to reuse yet
    for text in ADA[1:]:
        evaluated, total = prompt_evaluated(conv, text)
        assert total > total1
        assert evaluated < 40 < total  # the new message (and a template line), not the history


def test_two_threads_do_not_evict_each_other(fresh):
    ada = nbchat.Conversation("local", **ZERO)
    bob = nbchat.Conversation("local", system="You like trains.", **ZERO)
    cache = loaded().cache
    prompt_evaluated(ada, ADA[0])
    prompt_evaluated(bob, BOB[0])
    for a, b in zip(ADA[1:], BOB[1:], strict=True):
        for conv, text in ((ada, a), (bob, b)):
            evaluated, total = prompt_evaluated(conv, text)
            assert evaluated < 40 < total
    assert cache.restores >= 4 and cache.saves >= 4
    assert len(cache.saved) <= cache.max_states


def test_text_depends_only_on_the_conversation_not_on_what_ran_between(fresh):
    """Temperature 0: the same turns give the same text alone or interleaved with another
    thread, and the same sequence of calls gives the same text again."""

    def alone(texts, **kw):
        conv = nbchat.Conversation("local", **ZERO, **kw)
        return [conv.send(t, max_tokens=24).text for t in texts]

    ada_alone = alone(ADA)
    nbchat.local.clear_cache()
    bob_alone = alone(BOB, system="You like trains.")
    nbchat.local.clear_cache()
    ada = nbchat.Conversation("local", **ZERO)
    bob = nbchat.Conversation("local", system="You like trains.", **ZERO)
    mixed_a, mixed_b = [], []
    for a, b in zip(ADA, BOB, strict=True):
        mixed_a.append(ada.send(a, max_tokens=24).text)
        nbchat.chat("Say one word.", max_tokens=3, **ZERO)  # a one-shot call in between
        mixed_b.append(bob.send(b, max_tokens=24).text)
    assert mixed_a == ada_alone
    assert mixed_b == bob_alone


def test_the_same_prompt_again_is_evaluated_the_same_way(fresh):
    """A repeated prompt re-evaluates the part the first call evaluated, in the same batch."""
    with counting_evals() as calls:
        first = nbchat.chat("Name three colours.", max_tokens=20, **ZERO)
    prompt_tokens = calls[0]
    with counting_evals() as calls:
        again = nbchat.chat("Name three colours.", max_tokens=20, **ZERO)
    assert calls[0] == prompt_tokens == first.usage.input_tokens
    assert again.text == first.text


def test_least_recently_used_state_is_evicted(fresh):
    nbchat.local.configure(cache_states=2)
    convs = [nbchat.Conversation("local", system=f"You are assistant number {i}.", **ZERO)
             for i in range(4)]
    for conv in convs:
        conv.send("Hello there.", max_tokens=8)
    cache = loaded().cache
    assert len(cache.saved) == 2  # conversations 1 and 2; 0 was evicted; 3 is live
    evaluated, total = prompt_evaluated(convs[0], "How are you?")
    assert evaluated == total  # evicted: evaluated afresh
    evaluated, total = prompt_evaluated(convs[2], "How are you?")
    assert evaluated < total  # still saved: restored


def test_no_states_kept_when_the_budget_is_zero(fresh):
    nbchat.local.configure(cache_bytes=0)
    a = nbchat.Conversation("local", system="You are A.", **ZERO)
    b = nbchat.Conversation("local", system="You are B.", **ZERO)
    a.send("Hello.", max_tokens=6)
    b.send("Hello.", max_tokens=6)
    assert not loaded().cache.saved
    evaluated, total = prompt_evaluated(a, "Again.")
    assert evaluated == total


def test_clear_cache_makes_the_next_call_evaluate_afresh(fresh):
    conv = nbchat.Conversation("local", **ZERO)
    conv.send(ADA[0], max_tokens=12)
    nbchat.local.clear_cache()
    evaluated, total = prompt_evaluated(conv, ADA[1])
    assert evaluated == total


def test_someone_else_using_the_model_is_not_reused_as_ours(fresh):
    """Raw calls on the same `Llama` (as the benchmark makes) leave a context nbchat did not
    make: it is evaluated afresh rather than reused in the middle of a batch."""
    first = nbchat.chat("Name three colours.", max_tokens=20, **ZERO)
    llm = loaded().llm
    llm.create_chat_completion(messages=[{"role": "user", "content": "Name three colours."}],
                               max_tokens=5, temperature=0)
    with counting_evals() as calls:
        again = nbchat.chat("Name three colours.", max_tokens=20, **ZERO)
    assert calls[0] == first.usage.input_tokens
    assert again.text == first.text
