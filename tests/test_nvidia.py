"""`nvidia:` (API catalog and self-hosted NIM) over recorded wire data (MockTransport)."""

from __future__ import annotations

import base64
import json
import os
import pathlib

import httpx
import pytest

import nbchat
from nbchat.core import registry
from nbchat.core.errors import MissingKey, RateLimited, SchemaMismatch, UnknownModel
from nbchat.providers import nvidia
from nbchat.providers.nvidia import MODELS, NvidiaProvider, normalize_base_url
from nbchat.providers.protocols import nvcf, nvidia_genai

WIRE = pathlib.Path(__file__).parent / "wire"
KEY = "nvapi-TESTKEY0123456789abcdefghijkl"
PNG_SMALL = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
JPEG_BIG = b"\xff\xd8\xff\xe0" + os.urandom(200_000)  # > 180 KB once base64-encoded
UPLOAD_URL = "https://nv-assets.s3.amazonaws.test/asset-1?X-Amz-Signature=abc"


class Nvidia:
    """Routes by full URL (several NVIDIA hosts); queued responses; records requests."""

    def __init__(self) -> None:
        self.queue: dict[str, list[httpx.Response]] = {}
        self.requests: list[httpx.Request] = []

    def add(self, url: str, response: httpx.Response) -> None:
        self.queue.setdefault(url, []).append(response)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        url = str(request.url)
        if url not in self.queue or not self.queue[url]:
            return httpx.Response(404, json={"status": 404, "title": "Not Found",
                                             "detail": f"no route {url}"})
        return self.queue[url].pop(0)

    def json_of(self, url: str) -> dict:
        return json.loads(next(r for r in self.requests if str(r.url) == url).content)


def sse(name: str) -> httpx.Response:
    return httpx.Response(200, content=(WIRE / name).read_bytes(),
                          headers={"content-type": "text/event-stream"})


HOSTED = "https://integrate.api.nvidia.com/v1/chat/completions"


@pytest.fixture
def nv(monkeypatch, sleeps):
    server = Nvidia()
    registry.register(NvidiaProvider(transport=httpx.MockTransport(server)))
    monkeypatch.setenv("NVIDIA_API_KEY", KEY)
    server.sleeps = sleeps  # type: ignore[attr-defined]
    yield server
    registry.unregister("nvidia")


def test_hosted_streaming(nv):
    nv.add(HOSTED, sse("nvidia_stream.sse"))
    reply = nbchat.chat("Hi", model="nvidia:meta/llama-3.1-8b-instruct", max_tokens=64)
    assert reply.text == "Hello from NIM" and reply.usage.output_tokens == 3
    req = nv.requests[0]
    assert req.headers["authorization"] == f"Bearer {KEY}"
    body = json.loads(req.content)
    assert body["max_tokens"] == 64 and body["stream_options"]["include_usage"]


@pytest.mark.parametrize("model", ["meta/llama-3.1-8b-instruct",
                                   "mistralai/mistral-large-2-instruct",
                                   "meta/llama-3.2-11b-vision-instruct"])
def test_hosted_length_limit_goes_as_max_tokens_like_langchain_nvidia(nv, model):
    recorded = json.loads((WIRE / "nvidia_hosted_request.json").read_text())
    url = MODELS[model].endpoint or recorded["url"]
    nv.add(url, sse("nvidia_stream.sse"))
    nbchat.chat("Hi", model=f"nvidia:{model}", max_tokens=64)
    body = json.loads(nv.requests[0].content)
    assert "max_completion_tokens" not in body  # not every hosted model takes it
    assert body == {**recorded["body"], "model": model}


def test_self_hosted_nim_needs_no_key_and_gets_v1(nv, monkeypatch):
    monkeypatch.delenv("NVIDIA_API_KEY")
    nv.add("http://localhost:8000/v1/chat/completions", sse("nvidia_stream.sse"))
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    with pytest.raises(SchemaMismatch) as err:  # the recorded reply is text, not JSON
        nbchat.chat("Hi", model="nvidia:meta/llama-3.1-8b-instruct",
                    base_url="http://localhost:8000", schema=schema, schema_retries=0)
    assert err.value.raw == "Hello from NIM"
    req = nv.requests[0]
    assert "authorization" not in req.headers
    body = json.loads(req.content)
    assert body["guided_json"] == schema and "response_format" not in body
    assert "max_completion_tokens" not in body  # older NIMs know only max_tokens


def test_normalize_base_url():
    assert normalize_base_url("http://localhost:8000") == "http://localhost:8000/v1"
    assert normalize_base_url("http://localhost:8000/v1/") == "http://localhost:8000/v1"
    assert normalize_base_url("http://h/v1/chat/completions") == "http://h/v1"


def test_hosted_needs_a_key(monkeypatch):
    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    with pytest.raises(MissingKey, match="NVIDIA_API_KEY"):
        nbchat.chat("hi", model="nvidia:meta/llama-3.1-8b-instruct")


def test_deprecated_ids_map_with_a_warning(nv):
    nv.add(HOSTED, sse("nvidia_stream.sse"))
    with pytest.warns(FutureWarning, match="playground_mixtral_8x7b is a deprecated id.*"
                                           "mistralai/mixtral-8x7b-instruct-v0.1"):
        reply = nbchat.chat("Hi", model="nvidia:playground_mixtral_8x7b")
    assert reply.model == "nvidia:mistralai/mixtral-8x7b-instruct-v0.1"
    assert json.loads(nv.requests[0].content)["model"] == "mistralai/mixtral-8x7b-instruct-v0.1"
    with pytest.raises(UnknownModel):
        nbchat.chat("Hi", model="nvidia:playground_nothing_like_it")


def test_nv_vlm_string_image_url_on_its_own_endpoint(nv):
    url = "https://ai.api.nvidia.com/v1/vlm/microsoft/phi-3-vision-128k-instruct"
    nv.add(url, sse("nvidia_stream.sse"))
    nbchat.chat("Describe", model="nvidia:microsoft/phi-3-vision-128k-instruct",
                images=[PNG_SMALL], max_tokens=32)
    body = nv.json_of(url)
    part = body["messages"][0]["content"][1]
    assert part["type"] == "image_url" and isinstance(part["image_url"], str)
    assert part["image_url"].startswith("data:image/png;base64,")
    assert "stream_options" not in body and body["max_tokens"] == 32


def test_vlm_object_image_url(nv):
    url = "https://ai.api.nvidia.com/v1/gr/meta/llama-3.2-11b-vision-instruct/chat/completions"
    nv.add(url, sse("nvidia_stream.sse"))
    nbchat.chat("Describe", model="nvidia:meta/llama-3.2-11b-vision-instruct",
                images=[PNG_SMALL])
    part = nv.json_of(url)["messages"][0]["content"][1]
    assert part["image_url"]["url"].startswith("data:image/png;base64,")


def test_text_model_refuses_images_before_sending(nv):
    with pytest.raises(nbchat.errors.UnsupportedInput, match="cannot see images"):
        nbchat.chat("Describe", model="nvidia:meta/llama-3.1-8b-instruct", images=[PNG_SMALL])
    assert nv.requests == []


def test_large_image_goes_through_asset_upload(nv):
    nv.add(nvcf.NVCF_ASSETS, httpx.Response(200, json={
        "assetId": "a1b2c3", "uploadUrl": UPLOAD_URL, "contentType": "image/jpeg",
        "description": nvidia.ASSET_DESCRIPTION}))
    nv.add(UPLOAD_URL, httpx.Response(200))
    url = "https://ai.api.nvidia.com/v1/gr/meta/llama-3.2-11b-vision-instruct/chat/completions"
    nv.add(url, sse("nvidia_stream.sse"))
    reply = nbchat.chat("Describe", model="nvidia:meta/llama-3.2-11b-vision-instruct",
                        images=[JPEG_BIG])
    assert reply.text == "Hello from NIM"
    create, put, chat = nv.requests
    assert json.loads(create.content) == {"contentType": "image/jpeg",
                                          "description": nvidia.ASSET_DESCRIPTION}
    assert create.headers["authorization"] == f"Bearer {KEY}"
    assert put.method == "PUT" and put.content == JPEG_BIG
    assert put.headers["content-type"] == "image/jpeg"
    assert put.headers["x-amz-meta-nvcf-asset-description"] == nvidia.ASSET_DESCRIPTION
    assert "authorization" not in put.headers  # the presigned URL gets no key
    assert chat.headers["nvcf-input-asset-references"] == "a1b2c3"
    part = json.loads(chat.content)["messages"][0]["content"][1]
    assert part["image_url"]["url"] == "data:image/jpeg;asset_id,a1b2c3"
    assert len(chat.content) < 10_000  # the bytes were not inlined


def test_small_image_is_inlined():
    assert not nvidia.needs_upload(nbchat.core.types.ImagePart(PNG_SMALL))
    assert nvidia.needs_upload(nbchat.core.types.ImagePart(JPEG_BIG, "image/jpeg"))
    raw = b"\0" * (180_000 // 4 * 3)
    assert len(base64.b64encode(raw)) == 180_000 and not nvidia.needs_upload(
        nbchat.core.types.ImagePart(raw))


def test_202_is_polled_until_done(nv):
    nv.add(HOSTED, httpx.Response(202, headers={"NVCF-REQID": "req-42"}, json={}))
    status = f"{nvcf.NVCF_STATUS}/req-42"
    nv.add(status, httpx.Response(202, headers={"NVCF-REQID": "req-42"}, json={}))
    nv.add(status, sse("nvidia_stream.sse"))
    reply = nbchat.chat("Hi", model="nvidia:meta/llama-3.1-70b-instruct")
    assert reply.text == "Hello from NIM"
    assert [str(r.url) for r in nv.requests] == [HOSTED, status, status]
    assert nv.requests[1].method == "GET"
    assert nv.requests[1].headers["authorization"] == f"Bearer {KEY}"
    assert nv.sleeps == [nvcf.POLL_INTERVAL] * 2


def test_202_then_whole_json_reply(nv):
    nv.add(HOSTED, httpx.Response(202, headers={"NVCF-REQID": "r9"}))
    nv.add(f"{nvcf.NVCF_STATUS}/r9", httpx.Response(200, json={
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "done"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 1}}))
    assert nbchat.chat("Hi", model="nvidia:meta/llama-3.1-70b-instruct").text == "done"


def test_problem_details_429(nv):
    for _ in range(3):
        nv.add(HOSTED, httpx.Response(429, json={"status": 429, "title": "Too Many Requests"}))
    with pytest.raises(RateLimited, match="Too Many Requests") as err:
        nbchat.chat("Hi", model="nvidia:meta/llama-3.1-8b-instruct")
    assert err.value.status == 429 and len(nv.sleeps) == 2  # backoff, no header


def test_problem_details_error_detail(nv):
    nv.add(HOSTED, httpx.Response(422, json={
        "type": "urn:nvcf-worker-service:problem-details:unprocessable-entity",
        "status": 422, "title": "Unprocessable Entity",
        "detail": "Inference error: max_tokens must be at most 4096"}))
    with pytest.raises(nbchat.errors.ProviderError,
                       match="Unprocessable Entity: Inference error: max_tokens"):
        nbchat.chat("Hi", model="nvidia:meta/llama-3.1-8b-instruct")


def test_listing_merges_table_and_live(nv):
    nv.add("https://integrate.api.nvidia.com/v1/models", httpx.Response(200, json={
        "object": "list", "data": [
            {"id": "meta/llama-3.1-8b-instruct", "object": "model", "created": 0,
             "owned_by": "meta"},
            {"id": "someone/new-model", "object": "model", "created": 0, "owned_by": "x"}]}))
    listed = {m.id: m for m in nbchat.models("nvidia")}
    assert listed["nvidia:meta/llama-3.1-8b-instruct"].tools
    assert listed["nvidia:meta/llama-3.1-8b-instruct"].json
    assert "nvidia:someone/new-model" in listed
    # text-to-image models live at another endpoint: always listed
    assert any(m.image_generation for m in listed.values())


def test_known_table_has_vision_flags():
    table = {m.name: m for m in NvidiaProvider().known_models()}
    assert table["microsoft/phi-3-vision-128k-instruct"].vision
    assert not table["meta/llama-3.1-8b-instruct"].vision


def test_text_to_image_is_delegated(nv):
    genai = nvidia_genai
    model = "stabilityai/stable-diffusion-xl"
    png = base64.b64encode(PNG_SMALL).decode()
    nv.add(genai.genai_url(model), httpx.Response(200, json={
        "artifacts": [{"base64": png, "finishReason": "SUCCESS", "seed": 1}]}))
    reply = nbchat.chat("a lighthouse at dusk", model=f"nvidia:{model}")
    assert len(reply.image_parts) == 1 and reply.image_parts[0].data == PNG_SMALL
    assert nv.requests[0].headers["authorization"] == f"Bearer {KEY}"
