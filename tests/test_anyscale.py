"""`anyscale:` — a user's Anyscale deployment, and the shut-down shared service."""

from __future__ import annotations

import json
import pathlib

import httpx
import pytest

import nbchat
from nbchat.core import registry
from nbchat.core.errors import MissingKey, ProtocolError, SchemaMismatch, ServiceGone
from nbchat.providers.anyscale import GONE, AnyscaleProvider

WIRE = pathlib.Path(__file__).parent / "wire"
KEY = "esecret_TESTKEY1234567890"
DEPLOY = "https://my-service.anyscaleuserdata.test/v1"

# what the old shared URL serves now: a web page, not the API
NOTICE = (b"<!DOCTYPE html><html><head><title>Anyscale Endpoints</title></head><body>"
          b"<h1>Anyscale Endpoints has been sunset</h1></body></html>")


@pytest.fixture
def anyscale():
    requests: list[httpx.Request] = []
    replies: list[httpx.Response] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return replies.pop(0)

    registry.register(AnyscaleProvider(transport=httpx.MockTransport(handler)))
    yield requests, replies
    registry.unregister("anyscale")


def test_old_shared_url_is_reported_as_gone(anyscale, monkeypatch):
    requests, replies = anyscale
    monkeypatch.setenv("ANYSCALE_API_KEY", KEY)
    replies.append(httpx.Response(200, content=NOTICE, headers={"content-type": "text/html"}))
    with pytest.raises(ServiceGone) as err:
        nbchat.chat("hi", model="anyscale:meta-llama/Llama-2-7b-chat-hf")
    assert GONE in str(err.value)
    assert GONE == ("the shared Anyscale Endpoints service has shut down; "
                    "set ANYSCALE_BASE_URL to your deployment")
    assert requests[0].url.host == "api.endpoints.anyscale.com"
    # the same when it answers an error status with its page, and when listing models
    replies.append(httpx.Response(404, content=NOTICE, headers={"content-type": "text/html"}))
    with pytest.raises(ServiceGone):
        nbchat.chat("hi", model="anyscale:meta-llama/Llama-2-7b-chat-hf")
    replies.append(httpx.Response(200, content=NOTICE, headers={"content-type": "text/html"}))
    with pytest.raises(ServiceGone):
        nbchat.models("anyscale")


def test_shared_url_needs_a_key_first(monkeypatch):
    with pytest.raises(MissingKey, match="ANYSCALE_API_KEY"):
        nbchat.chat("hi", model="anyscale:meta-llama/Llama-2-7b-chat-hf")


def test_deployment_streams_with_json_object_schema(anyscale, monkeypatch):
    requests, replies = anyscale
    monkeypatch.setenv("ANYSCALE_BASE_URL", DEPLOY)
    monkeypatch.setenv("ANYSCALE_API_KEY", KEY)
    replies.append(httpx.Response(200, content=(WIRE / "openai_text_usage.sse").read_bytes(),
                                  headers={"content-type": "text/event-stream"}))
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    with pytest.raises(SchemaMismatch) as err:  # the recorded reply is text, not JSON
        nbchat.chat("hi", model="anyscale:mistralai/Mixtral-8x7B-Instruct-v0.1",
                    schema=schema, schema_retries=0)
    assert err.value.raw == "Hello world\ncafé ☕"
    req = requests[0]
    assert str(req.url) == f"{DEPLOY}/chat/completions"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(req.content)["response_format"] == {"type": "json_object",
                                                          "schema": schema}


def test_deployment_without_key_and_langchain_variable(anyscale, monkeypatch):
    requests, replies = anyscale
    monkeypatch.setenv("ANYSCALE_API_BASE", DEPLOY)
    replies.append(httpx.Response(200, content=(WIRE / "openai_text_usage.sse").read_bytes(),
                                  headers={"content-type": "text/event-stream"}))
    nbchat.chat("hi", model="anyscale:my-model")
    assert str(requests[0].url) == f"{DEPLOY}/chat/completions"
    assert "authorization" not in requests[0].headers


def test_deployment_html_is_a_base_url_hint(anyscale, monkeypatch):
    _, replies = anyscale
    replies.append(httpx.Response(200, content=b"<html>login</html>",
                                  headers={"content-type": "text/html"}))
    with pytest.raises(ProtocolError, match="ANYSCALE_BASE_URL") as err:
        nbchat.chat("hi", model="anyscale:my-model", base_url=DEPLOY)
    assert not isinstance(err.value, ServiceGone)


def test_table_lists_the_former_models():
    ids = [m.id for m in AnyscaleProvider().known_models()]
    assert "anyscale:meta-llama/Meta-Llama-3-8B-Instruct" in ids
    assert "anyscale:mistralai/Mixtral-8x7B-Instruct-v0.1" in ids
