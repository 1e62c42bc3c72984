"""NVIDIA text-to-image: the `ai.api.nvidia.com/v1/genai/<model>` endpoints.

The NVIDIA provider delegates image models here (`is_image_model`). Two request shapes exist
(build.nvidia.com model pages; not confirmed against the live API, the recorded exchanges are in
tests/wire/nvidia_genai_*.json): Stable Diffusion XL takes `text_prompts`; newer models (SD3,
FLUX) take a flat `prompt`. Answers carry `artifacts[].base64` or `image`; each becomes an
ImageEvent. A `202` with `NVCF-REQID` is polled on the NVCF status URL until it answers 200.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ...core import http
from ...core.errors import ProtocolError, ProviderError, UnsupportedInput
from ...core.images import parse_data_uri, sniff_mime
from ...core.types import Done, Event, ImageEvent, ImagePart, ModelInfo, Request

GENAI_BASE = "https://ai.api.nvidia.com/v1/genai"

#: model -> request shape: "sdxl" (text_prompts) or "prompt" (flat prompt)
IMAGE_MODELS: dict[str, tuple[str, str]] = {
    "stabilityai/stable-diffusion-xl": ("sdxl", "Stable Diffusion XL"),
    "stabilityai/sdxl-turbo": ("sdxl", "SDXL Turbo"),
    "stabilityai/stable-diffusion-3-medium": ("prompt", "Stable Diffusion 3 Medium"),
    "stabilityai/stable-diffusion-3.5-large": ("prompt", "Stable Diffusion 3.5 Large"),
    "black-forest-labs/flux.1-dev": ("prompt", "FLUX.1 [dev]"),
    "black-forest-labs/flux.1-schnell": ("prompt", "FLUX.1 [schnell]"),
}


def _local(model: str) -> str:
    return model.removeprefix("nvidia:")


def is_image_model(model: str) -> bool:
    """Whether `model` (with or without the `nvidia:` prefix) is a genai text-to-image model."""
    return _local(model) in IMAGE_MODELS


def known_models(*, key_set: bool = False) -> list[ModelInfo]:
    """The text-to-image table; `key_set` says whether the NVIDIA endpoint has a key."""
    return [
        ModelInfo(
            id=f"nvidia:{m}",
            provider="nvidia",
            stream=False,
            image_generation=True,
            key_set=key_set,
            key_env="NVIDIA_API_KEY",
            description=f"{label} (text-to-image)",
        )
        for m, (_, label) in IMAGE_MODELS.items()
    ]


# ---- pure request / parse functions ---------------------------------------------------------


def genai_url(model: str) -> str:
    """The model's endpoint: `https://ai.api.nvidia.com/v1/genai/<model>` (the `nvidia:` prefix
    is dropped).
    """
    return f"{GENAI_BASE}/{_local(model)}"


def prompt_text(request: Request) -> str:
    """The text of the last user message; earlier turns do not matter to an image model."""
    for m in reversed(request.messages):
        if m.role == "user":
            if m.images:
                raise UnsupportedInput(
                    f"nvidia:{_local(request.model)} draws from text only; leave out images=..."
                )
            return m.text
    raise UnsupportedInput("an image model needs a text prompt")


def image_request_body(request: Request) -> dict[str, Any]:
    """The JSON body for the model's request shape; `input={...}` overrides any field."""
    model = _local(request.model)
    shape = IMAGE_MODELS.get(model, ("prompt", ""))[0]
    text = prompt_text(request)
    seed = request.options.seed if request.options.seed is not None else 0
    body: dict[str, Any]
    if shape == "sdxl":
        body = {"text_prompts": [{"text": text, "weight": 1}], "seed": seed}
    else:
        body = {"prompt": text, "mode": "base", "seed": seed}
    body.update(request.options.extra)
    return body


def _decode(b64: str) -> ImagePart:
    if b64.startswith("data:"):
        return parse_data_uri(b64)
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("NVIDIA sent an image that is not valid base64") from None
    return ImagePart(data, sniff_mime(data))


def parse_image_response(body: Any) -> list[ImagePart]:
    """Images from `{"artifacts":[{"base64",...}]}` or `{"image": ...}`."""
    if not isinstance(body, dict):
        raise ProtocolError("NVIDIA's image endpoint answered with something that is not JSON")
    parts: list[ImagePart] = []
    for art in body.get("artifacts") or []:
        reason = art.get("finishReason") or art.get("finish_reason")
        if reason in ("CONTENT_FILTERED", "ERROR"):
            raise ProviderError(
                "the image was withheld by the content filter; change the prompt"
                if reason == "CONTENT_FILTERED"
                else "the model failed to draw the image; try again",
                provider="nvidia",
            )
        if art.get("base64"):
            parts.append(_decode(art["base64"]))
    if isinstance(body.get("image"), str):
        parts.append(_decode(body["image"]))
    if not parts:
        raise ProtocolError("NVIDIA's image endpoint answered without an image")
    return parts


# ---- I/O ------------------------------------------------------------------------------------


async def stream_image(
    client: httpx.AsyncClient, request: Request, auth: httpx.Auth | None
) -> AsyncIterator[Event]:
    """POST the prompt to `genai_url(model)` with `auth` (the NVIDIA key as
    `http.bearer_auth`), poll a 202 until done, and yield one ImageEvent per image, then Done.
    Raises `ProviderError` (content filter, failed draw, HTTP errors) or `ProtocolError`."""
    from .nvcf import open_polled

    url = genai_url(request.model)
    response = await open_polled(client, url, image_request_body(request),
                                 {"Accept": "application/json"}, auth=auth)
    try:
        data = await response.aread()
    except httpx.HTTPError as exc:
        raise http.transport_error(exc, url, "nvidia") from None
    finally:
        await response.aclose()
    for part in parse_image_response(_parse_json(data)):
        yield ImageEvent(part)
    yield Done("stop")


def _parse_json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise ProtocolError(
            "NVIDIA's image endpoint answered with something that is not JSON"
        ) from None
