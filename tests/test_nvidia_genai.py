"""NVIDIA's text-to-image endpoints through httpx.MockTransport with recorded bodies."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from nbchat.core.bridge import run_sync
from nbchat.core.credentials import Secret
from nbchat.core.errors import AuthenticationError, ProtocolError, ProviderError, UnsupportedInput
from nbchat.core.http import bearer_auth
from nbchat.core.images import to_pil
from nbchat.core.types import Done, ImageEvent, ImagePart, Message, Options, Request, TextPart
from nbchat.providers.protocols import nvcf
from nbchat.providers.protocols.nvidia_genai import (
    image_request_body,
    is_image_model,
    known_models,
    parse_image_response,
    stream_image,
)

WIRE = Path(__file__).parent / "wire"
KEY = "nvapi-TestKey0123456789"


def wire(name: str) -> dict:
    return json.loads((WIRE / name).read_text())


def run(handler, model: str, prompt: str = "a red fox", **opts) -> list:
    request = Request(model, (Message.of("user", prompt),), Options(**opts))

    async def go() -> list:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            auth = bearer_auth(Secret(KEY))
            return [ev async for ev in stream_image(client, request, auth)]

    return run_sync(go())


def test_image_models_are_known_with_or_without_prefix():
    assert is_image_model("nvidia:stabilityai/stable-diffusion-xl")
    assert is_image_model("black-forest-labs/flux.1-dev")
    assert not is_image_model("meta/llama-3.1-8b-instruct")
    ids = [m.id for m in known_models()]
    assert {"nvidia:stabilityai/stable-diffusion-xl",
            "nvidia:stabilityai/stable-diffusion-3-medium",
            "nvidia:black-forest-labs/flux.1-dev"} <= set(ids)
    assert all(m.image_generation and m.key_env == "NVIDIA_API_KEY" for m in known_models())


def test_sdxl_takes_text_prompts():
    req = Request("stabilityai/stable-diffusion-xl", (Message.of("user", "a fox"),),
                  Options(seed=5, extra={"cfg_scale": 7, "steps": 30}))
    assert image_request_body(req) == {
        "text_prompts": [{"text": "a fox", "weight": 1}], "seed": 5, "cfg_scale": 7, "steps": 30,
    }


def test_newer_models_take_a_flat_prompt():
    req = Request("nvidia:stabilityai/stable-diffusion-3-medium", (Message.of("user", "a fox"),),
                  Options(extra={"aspect_ratio": "16:9"}))
    assert image_request_body(req) == {"prompt": "a fox", "mode": "base", "seed": 0,
                                       "aspect_ratio": "16:9"}


def test_images_in_the_prompt_are_refused():
    msg = Message("user", (TextPart("x"), ImagePart(b"\x89PNG\r\n\x1a\n")))
    with pytest.raises(UnsupportedInput, match="text only"):
        image_request_body(Request("stabilityai/stable-diffusion-xl", (msg,)))


def test_sdxl_round_trip():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=wire("nvidia_genai_sdxl.json"))

    events = run(handler, "stabilityai/stable-diffusion-xl", seed=42)
    assert str(seen[0].url) == "https://ai.api.nvidia.com/v1/genai/stabilityai/stable-diffusion-xl"
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(seen[0].content)["text_prompts"][0]["text"] == "a red fox"
    assert isinstance(events[0], ImageEvent) and isinstance(events[-1], Done)
    assert to_pil(events[0].image).convert("RGB").getpixel((0, 0)) == (200, 20, 20)


def test_image_field_answer():
    events = run(lambda r: httpx.Response(200, json=wire("nvidia_genai_sd3.json")),
                 "stabilityai/stable-diffusion-3-medium")
    assert to_pil(events[0].image).convert("RGB").getpixel((0, 0)) == (20, 20, 200)
    assert events[0].image.mime == "image/png"


def test_202_is_polled_until_ready(monkeypatch):
    monkeypatch.setattr(nvcf, "POLL_INTERVAL", 0.0)
    answers = [httpx.Response(202, headers={"NVCF-REQID": "req-1"}),
               httpx.Response(202, headers={"NVCF-REQID": "req-1"}),
               httpx.Response(200, json=wire("nvidia_genai_sdxl.json"))]
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url}")
        return answers.pop(0)

    events = run(handler, "stabilityai/stable-diffusion-xl")
    assert seen[1:] == ["GET https://api.nvcf.nvidia.com/v2/nvcf/pexec/status/req-1"] * 2
    assert isinstance(events[0], ImageEvent)


def test_content_filter_is_an_error():
    with pytest.raises(ProviderError, match="content filter"):
        parse_image_response(wire("nvidia_genai_filtered.json"))
    with pytest.raises(ProtocolError):
        parse_image_response({"artifacts": []})


def test_401_says_which_variable_to_check():
    with pytest.raises(AuthenticationError) as info:
        run(lambda r: httpx.Response(401, json=wire("nvidia_genai_401.json")),
            "stabilityai/stable-diffusion-xl")
    assert "NVIDIA_API_KEY" in str(info.value) and KEY not in str(info.value)


# ---- end to end: nbchat.chat and %%chat through the nvidia provider --------------------------


@pytest.fixture
def hosted(monkeypatch):
    """The nvidia provider on a MockTransport answering the genai endpoint; records requests."""
    from nbchat.core import registry
    from nbchat.providers.nvidia import NvidiaProvider

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        name = "nvidia_genai_sdxl.json" if "diffusion-xl" in request.url.path else \
            "nvidia_genai_sd3.json"
        return httpx.Response(200, json=wire(name))

    monkeypatch.setenv("NVIDIA_API_KEY", KEY)
    registry.register(NvidiaProvider(transport=httpx.MockTransport(handler)))
    yield seen
    registry.unregister("nvidia")


def test_chat_with_the_newer_shape_gives_a_pil_image(hosted):
    import nbchat

    reply = nbchat.chat("a blue fox", model="nvidia:stabilityai/stable-diffusion-3-medium",
                        seed=3, input={"aspect_ratio": "1:1"})
    assert str(hosted[0].url).endswith("/v1/genai/stabilityai/stable-diffusion-3-medium")
    assert json.loads(hosted[0].content) == {"prompt": "a blue fox", "mode": "base", "seed": 3,
                                             "aspect_ratio": "1:1"}
    assert reply.images[0].convert("RGB").getpixel((0, 0)) == (20, 20, 200)
    assert reply.text == "" and reply.finish_reason == "stop"


def test_chat_magic_shows_the_image_as_png_and_saves_it(hosted, tmp_path):
    from IPython.core.interactiveshell import InteractiveShell
    from PIL import Image

    from nbchat.notebook.magics import ChatMagics

    ip = InteractiveShell.instance()
    magics = ChatMagics(shell=ip)
    ip.register_magics(magics)
    shown: list[dict] = []
    publish = ip.display_pub.publish
    ip.display_pub.publish = lambda data, *a, **kw: shown.append(data)
    try:
        dest = tmp_path / "fox.png"
        result = ip.run_cell(f"%%chat -m nvidia:stabilityai/stable-diffusion-xl --save {dest}\n"
                             "a red fox")
        ip.user_ns["pic"] = Image.new("RGB", (2, 2))
        refused = ip.run_cell("%%chat -m nvidia:stabilityai/stable-diffusion-xl --image pic\n"
                              "a red fox")
    finally:
        ip.display_pub.publish = publish
        ip.configurables.remove(magics)
    assert result.error_in_exec is None
    pngs = [d["image/png"] for d in shown if "image/png" in d]
    assert len(pngs) == 1 and base64.b64decode(pngs[0]).startswith(b"\x89PNG")
    assert Image.open(dest).convert("RGB").getpixel((0, 0)) == (200, 20, 20)
    assert "cannot see images" in str(refused.error_in_exec) and len(hosted) == 1
