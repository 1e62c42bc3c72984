"""`cerebras:` over recorded wire data (MockTransport): inference-docs.cerebras.ai shapes."""

from __future__ import annotations

import json
import pathlib

import httpx
import pytest

import nbchat
from nbchat.core import registry
from nbchat.core.errors import (
    AuthenticationError,
    BadOption,
    MissingKey,
    ProviderError,
    RateLimited,
    UnsupportedInput,
)
from nbchat.providers.cerebras import CerebrasProvider

WIRE = pathlib.Path(__file__).parent / "wire"
KEY = "csk-testkey1234567890abcdef"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


class Cerebras:
    """Routes like api.cerebras.ai; queue responses per path; records requests."""

    def __init__(self) -> None:
        self.queue: dict[str, list[httpx.Response]] = {}
        self.requests: list[httpx.Request] = []

    def add(self, path: str, response: httpx.Response) -> None:
        self.queue.setdefault(path, []).append(response)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.url.host == "api.cerebras.ai"
        return self.queue[request.url.path].pop(0)

    def body(self, i: int = -1) -> dict:
        return json.loads(self.requests[i].content)


def sse(name: str) -> httpx.Response:
    return httpx.Response(200, content=(WIRE / name).read_bytes(),
                          headers={"content-type": "text/event-stream"})


@pytest.fixture
def cerebras(monkeypatch, sleeps):
    server = Cerebras()
    registry.register(CerebrasProvider(transport=httpx.MockTransport(server)))
    monkeypatch.setenv("CEREBRAS_API_KEY", KEY)
    server.sleeps = sleeps  # type: ignore[attr-defined]
    yield server
    registry.unregister("cerebras")


def test_streaming_text_usage_and_request_shape(cerebras):
    cerebras.add("/v1/chat/completions", sse("cerebras_stream.sse"))
    reply = nbchat.chat("Why is fast inference useful?", model="cerebras:llama3.1-70b",
                        temperature=0.2, seed=1, stop=["\n\n"])
    assert reply.text == "Fast inference"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (12, 2)
    req = cerebras.requests[0]
    assert req.headers["authorization"] == f"Bearer {KEY}"
    body = cerebras.body()
    assert body["model"] == "llama3.1-70b" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    # Cerebras reserves budget from max_completion_tokens: always send a modest one
    assert body["max_completion_tokens"] == 2048 and "max_tokens" not in body
    assert body["stop"] == ["\n\n"] and body["seed"] == 1


def test_json_schema_request_has_a_name(cerebras):
    from dataclasses import dataclass

    @dataclass
    class Movie:
        title: str
        year: int

    cerebras.add("/v1/chat/completions", httpx.Response(200, json={
        "id": "x", "object": "chat.completion", "model": "llama3.1-70b",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant",
                                 "content": '{"title": "Alien", "year": 1979}'}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 10}}))
    reply = nbchat.chat("A sci-fi movie", model="cerebras:llama3.1-70b", schema=Movie,
                        max_tokens=100)
    assert reply.json == {"title": "Alien", "year": 1979}
    fmt = cerebras.body()["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Movie"
    assert fmt["json_schema"]["schema"]["properties"]["year"] == {"type": "integer"}
    assert cerebras.body()["max_completion_tokens"] == 100


def test_fragmented_tool_calls(cerebras):
    cerebras.add("/v1/chat/completions", sse("openai_tool_fragments.sse"))
    cerebras.add("/v1/chat/completions", sse("cerebras_stream.sse"))  # the answer after them

    def get_weather(city: str) -> str:
        """Weather for a city."""
        return "sunny"

    def get_time(tz: str) -> str:
        """Time in a zone."""
        return "noon"

    reply = nbchat.chat("weather and time?", model="cerebras:llama3.1-70b",
                        tools=[get_weather, get_time], tool_choice="auto")
    assert [(s.call.name, s.call.arguments, s.result) for s in reply.steps] == [
        ("get_weather", {"city": "Paris"}, "sunny"), ("get_time", {"tz": "CET"}, "noon")]
    assert cerebras.body(0)["tool_choice"] == "auto"
    assert [t["function"]["name"] for t in cerebras.body(0)["tools"]] == ["get_weather",
                                                                           "get_time"]
    results = [m for m in cerebras.body(1)["messages"] if m["role"] == "tool"]
    calls = cerebras.body(1)["messages"][-3]["tool_calls"]
    assert [m["tool_call_id"] for m in results] == [c["id"] for c in calls]
    assert [m["content"] for m in results] == ["sunny", "noon"]


def test_image_parts_as_data_uris(cerebras):
    cerebras.add("/v1/chat/completions", sse("cerebras_stream.sse"))
    nbchat.chat("What is in this image?", model="cerebras:some-preview-vision-model",
                images=[PNG])
    content = cerebras.body()["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "What is in this image?"}
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_image_limits_checked_before_sending(cerebras):
    with pytest.raises(UnsupportedInput, match="cannot see images"):
        nbchat.chat("look", model="cerebras:llama3.1-70b", images=[PNG])
    with pytest.raises(UnsupportedInput, match="at most 5"):
        nbchat.chat("look", model="cerebras:preview-vision", images=[PNG] * 6)
    gif = b"GIF89a" + b"\0" * 10
    with pytest.raises(UnsupportedInput, match="PNG or JPEG"):
        nbchat.chat("look", model="cerebras:preview-vision", images=[gif])
    assert cerebras.requests == []


def test_at_most_four_stop_strings(cerebras):
    with pytest.raises(BadOption, match="at most 4"):
        nbchat.chat("hi", model="cerebras:llama3.1-70b", stop=["a", "b", "c", "d", "e"])


def test_flat_error_body_and_429_headers(cerebras):
    cerebras.add("/v1/chat/completions", httpx.Response(
        400, json={"message": "Model llama3.1-70c does not exist.", "type": "invalid_request_error",
                   "param": "model", "code": "model_not_found"}))
    with pytest.raises(ProviderError, match="Model llama3.1-70c does not exist"):
        nbchat.chat("hi", model="cerebras:llama3.1-70c")
    limited = httpx.Response(
        429, json={"message": "Tokens per minute limit exceeded", "type": "too_many_requests_error",
                   "param": "quota", "code": "token_quota_exceeded"},
        headers={"retry-after": "4", "x-ratelimit-remaining-tokens-minute": "0",
                 "x-ratelimit-reset-tokens-minute": "3.97"})
    for _ in range(3):
        cerebras.add("/v1/chat/completions", limited)
    with pytest.raises(RateLimited, match="Tokens per minute limit exceeded") as err:
        nbchat.chat("hi", model="cerebras:llama3.1-70b")
    assert err.value.retry_after == 4 and cerebras.sleeps == [4.0, 4.0]


def test_bad_key_message_names_the_variable_not_the_key(cerebras):
    cerebras.add("/v1/chat/completions", httpx.Response(
        401, json={"message": f"Wrong API Key {KEY}", "type": "invalid_request_error",
                   "param": "api_key", "code": "wrong_api_key"}))
    with pytest.raises(AuthenticationError) as err:
        nbchat.chat("hi", model="cerebras:llama3.1-70b")
    assert "CEREBRAS_API_KEY" in str(err.value) and KEY not in str(err.value)


def test_missing_key(monkeypatch):
    monkeypatch.delenv("CEREBRAS_API_KEY", raising=False)
    with pytest.raises(MissingKey, match="CEREBRAS_API_KEY"):
        nbchat.chat("hi", model="cerebras:llama3.1-70b")


def test_model_listing_merged_with_table(cerebras):
    cerebras.add("/v1/models", httpx.Response(200, json={"object": "list", "data": [
        {"id": "llama3.1-8b", "object": "model", "created": 0, "owned_by": "Meta"},
        {"id": "brand-new-model", "object": "model", "created": 0, "owned_by": "Cerebras"}]}))
    listed = {m.id: m for m in nbchat.models("cerebras")}
    assert set(listed) == {"cerebras:llama3.1-8b", "cerebras:brand-new-model"}
    assert listed["cerebras:llama3.1-8b"].description == "Llama 3.1 8B"
    assert all(m.key_set and m.key_env == "CEREBRAS_API_KEY" for m in listed.values())


def test_batch_with_concurrency(cerebras):
    for _ in range(4):
        cerebras.add("/v1/chat/completions", sse("cerebras_stream.sse"))
    replies = nbchat.batch([f"q{i}" for i in range(4)], model="cerebras:llama3.1-8b",
                           concurrency=2)
    assert [r.text for r in replies] == ["Fast inference"] * 4
    assert len(cerebras.requests) == 4
