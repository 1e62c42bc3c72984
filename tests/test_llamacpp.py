"""The local provider with the real SmolLM2 model (temperature 0)."""

import threading
import time

import pytest

import nbchat
from nbchat.core.errors import UnknownModel, UnsupportedInput
from nbchat.core.options import parse_settings
from nbchat.core.registry import get_provider
from nbchat.providers.llamacpp import completion_kwargs

ZERO = {"temperature": 0, "seed": 1}


def test_default_model_streams_with_usage():
    chunks = list(nbchat.stream("Say hello.", max_tokens=12, **ZERO))
    assert len(chunks) >= 3  # arrived in pieces, not all at once
    reply = nbchat.chat("Say hello.", max_tokens=12, **ZERO)
    assert reply.text == "".join(chunks)  # temperature 0: same text
    assert reply.model == "llamacpp:smollm2"
    assert reply.usage.input_tokens and reply.usage.input_tokens > 5
    assert 1 <= reply.usage.output_tokens <= 12
    assert reply.finish_reason in ("stop", "length")
    assert reply.time_to_first_token is not None and reply.duration >= reply.time_to_first_token


def test_temperature_zero_is_repeatable_in_one_process():
    """llama.cpp's prompt cache once made a repeated identical call differ from the first."""
    answers = [nbchat.chat("Name three colours.", max_tokens=40, temperature=0, seed=7).text
               for _ in range(3)]
    assert answers[0] == answers[1] == answers[2]


def test_max_tokens_stops_with_length():
    reply = nbchat.chat("Write a long story about a dragon.", max_tokens=5, **ZERO)
    assert reply.finish_reason == "length"
    assert reply.usage.output_tokens == 5


def test_stop_sequence_cuts_the_text():
    free = nbchat.chat("Count from 1 to 10 separated by commas.", max_tokens=40, **ZERO).text
    assert "3" in free
    cut = nbchat.chat("Count from 1 to 10 separated by commas.", max_tokens=40, stop=["3"],
                      **ZERO).text
    assert "3" not in cut and free.startswith(cut)


def test_json_schema_gives_valid_json():
    schema = {"type": "object", "properties": {"name": {"type": "string"},
                                               "age": {"type": "integer"}},
              "required": ["name", "age"]}
    reply = nbchat.chat("Invent a person.", schema=schema, max_tokens=60, **ZERO)
    data = reply.json
    assert isinstance(data["name"], str) and isinstance(data["age"], int)


def test_forced_tool_call_is_assembled():
    def get_weather(city: str) -> str:
        """Get the weather for a city."""
        return "sunny"

    reply = nbchat.chat("What is the weather in Paris?", tools=[get_weather],
                        tool_choice="get_weather", max_tokens=60, **ZERO)
    [step] = reply.steps  # the call ran, and the model answered after it
    assert step.call.name == "get_weather" and step.result == "sunny"
    assert isinstance(step.call.arguments.get("city"), str)
    assert reply.finish_reason in ("stop", "length") and not reply.tool_calls


def test_json_schema_is_translated_for_llama_cpp():
    s = parse_settings({"schema": {"type": "object"}, "stop": "x", "max_tokens": 3})
    kw = completion_kwargs(s.options)
    assert kw["response_format"] == {"type": "json_object", "schema": {"type": "object"}}
    assert kw["stop"] == ["x"] and kw["max_tokens"] == 3


def test_history_is_used():
    conv = nbchat.Conversation("local", **ZERO)
    conv.send("My name is Ada.", max_tokens=20)
    conv.send("What is my name?", max_tokens=20)
    assert "Ada" in conv.messages[1].text
    assert len(conv.messages) == 4


def test_stop_takes_effect_at_the_next_token():
    """Closing the stream frees the model within a token or two, and the next turn works."""
    provider = get_provider("llamacpp")
    gen = nbchat.stream("Write a very long essay about the sea.", max_tokens=400, **ZERO)
    next(gen)
    next(gen)
    gen.close()
    loaded = provider.load("smollm2")
    deadline = time.monotonic() + 5
    acquired = False
    while time.monotonic() < deadline:  # bounded wait, not a speed assertion
        if loaded.lock.acquire(timeout=0.05):
            loaded.lock.release()
            acquired = True
            break
    assert acquired, "generation kept running after the stream was closed"
    assert nbchat.chat("Hi", max_tokens=3, **ZERO).usage.output_tokens <= 3


def test_model_is_loaded_once():
    provider = get_provider("llamacpp")
    assert provider.load("smollm2") is provider.load("smollm2")


def test_generation_runs_off_the_event_loop():
    """The loop keeps running other work while the model generates."""
    import asyncio

    async def main():
        ticks = 0
        stop = False

        async def ticker():
            nonlocal ticks
            while not stop:
                ticks += 1
                await asyncio.sleep(0.005)

        t = asyncio.ensure_future(ticker())
        await nbchat.achat("Tell me about cats.", max_tokens=30, **ZERO)
        stop = True
        await t
        return ticks

    assert asyncio.run(main()) > 10


def test_unknown_local_model_and_images(tmp_path):
    with pytest.raises(UnknownModel, match="llamacpp:smollm2"):
        nbchat.chat("x", model="llamacpp:smolm")
    with pytest.raises(UnknownModel):
        nbchat.chat("x", model=str(tmp_path / "missing.gguf").join(["llamacpp:", ""]))
    with pytest.raises(UnsupportedInput, match="cannot see images"):
        nbchat.chat("x", model="local", images=[b"\x89PNG\r\n\x1a\n...."])


def test_env_overrides_default(monkeypatch):
    from nbchat.providers.llamacpp import smollm2_path

    monkeypatch.setenv("NBCHAT_LOCAL_MODEL", smollm2_path())
    reply = nbchat.chat("Hi", max_tokens=2, **ZERO)
    assert reply.model == f"llamacpp:{smollm2_path()}"


def test_no_thread_leak_after_many_turns():
    def threads() -> int:  # the log's one writer thread (nbchat.core.log) is not per turn
        return sum(t.name != "nbchat-log" for t in threading.enumerate())

    before = threads()
    for _ in range(3):
        nbchat.chat("Hi", max_tokens=2, **ZERO)
    assert threads() <= before + 1
    assert sum(t.name == "nbchat-log" for t in threading.enumerate()) <= 1


def test_logprobs_come_with_each_token():
    reply = nbchat.chat("Say yes.", max_tokens=4, logprobs=2, **ZERO)
    assert reply.logprobs and len(reply.logprobs) == reply.usage.output_tokens
    first = reply.logprobs[0]
    assert first["logprob"] <= 0 and len(first["top_logprobs"]) == 2
