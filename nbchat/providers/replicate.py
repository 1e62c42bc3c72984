"""Replicate (`replicate:owner/name` or `replicate:owner/name:version`).

A model's inputs come from its version's OpenAPI schema, so options are mapped by name
(`build_input`); anything else passes through with `input={...}`. Text models stream through
the prediction's `urls.stream` (SSE: output/logs/error/done); other models are created with
`Prefer: wait` and polled. Stop sequences go to the model when it takes `stop_sequences` and
are always cut here too; once one appears, or when the user interrupts, the prediction is
cancelled (best effort, bounded time). Create is not idempotent, so it is never retried.

The schema mapping, prompt flattening and output handling are shared with the Cog provider.

History is flattened into one prompt, since these models take a single string:

    User: first question
    Assistant: first answer
    User: the new prompt
    Assistant:

A single user message is sent as it is. System messages go to `system_prompt` when the model
takes one, else they lead the prompt. Models whose output is a file (image models) get only
the last user message: they draw a prompt, they do not converse.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ..core import http
from ..core.errors import (
    BadOption,
    ProtocolError,
    ProviderError,
    UnknownModel,
    UnsupportedInput,
)
from ..core.images import from_bytes, parse_data_uri
from ..core.provider import Provider
from ..core.sse import aiter_sse
from ..core.types import (
    Done,
    Event,
    ImageEvent,
    ImagePart,
    Message,
    ModelInfo,
    Request,
    TextDelta,
)

DEFAULT_BASE_URL = "https://api.replicate.com/v1"
TERMINAL = frozenset({"succeeded", "failed", "canceled"})
PROMPT_KEYS = ("prompt", "text", "input", "question", "message")
SYSTEM_KEYS = ("system_prompt", "system_message", "system")
MAX_TOKEN_KEYS = ("max_tokens", "max_new_tokens", "max_length", "max_completion_tokens")
IMAGE_KEYS = ("image", "input_image", "image_input", "image_url", "img", "images",
              "input_images")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")
CANCEL_TIMEOUT = 5.0
POLL_FIRST, POLL_MAX = 0.25, 2.0
COLLECTIONS = ("language-models", "text-to-image")
MAX_PAGES = 5

#: create is not idempotent: never resend it after it may have reached the server
NO_RETRY = http.RetryPolicy(max_retries=0)


# ---- the model's schema ---------------------------------------------------------------------


def input_properties(openapi: dict[str, Any] | None) -> dict[str, dict[str, Any]] | None:
    """The model's input fields, or None when the schema is unknown."""
    if not isinstance(openapi, dict):
        return None
    schema = (openapi.get("components") or {}).get("schemas", {}).get("Input")
    if not isinstance(schema, dict):
        return None
    return dict(schema.get("properties") or {})


def output_schema(openapi: dict[str, Any] | None) -> dict[str, Any]:
    if not isinstance(openapi, dict):
        return {}
    out = (openapi.get("components") or {}).get("schemas", {}).get("Output")
    return out if isinstance(out, dict) else {}


def streams_text(openapi: dict[str, Any] | None) -> bool:
    """Replicate streams a model whose Output is an iterator array."""
    out = output_schema(openapi)
    return out.get("type") == "array" and out.get("x-cog-array-type") == "iterator"


def outputs_files(openapi: dict[str, Any] | None) -> bool:
    out = output_schema(openapi)
    item = out.get("items") if out.get("type") == "array" else out
    return isinstance(item, dict) and item.get("format") == "uri"


def _first(keys: Sequence[str], props: dict[str, Any]) -> str | None:
    return next((k for k in keys if k in props), None)


# ---- messages and options -> model input ---------------------------------------------------


def flatten_messages(
    messages: Sequence[Message], history: bool = True
) -> tuple[str, str, tuple[ImagePart, ...]]:
    """(prompt, system text, images); see the module docstring."""
    system = "\n\n".join(m.text for m in messages if m.role == "system" and m.text)
    turns = [m for m in messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user":
        raise UnsupportedInput("the conversation must end with a user message")
    if not history:
        return turns[-1].text, "", turns[-1].images
    images = turns[-1].images
    if any(m.images for m in turns[:-1]):
        images = tuple(i for m in turns for i in m.images)
    if len(turns) == 1:
        return turns[0].text, system, images
    lines = [f"{'User' if m.role == 'user' else 'Assistant'}: {m.text}" for m in turns]
    return "\n".join(lines) + "\nAssistant:", system, images


def build_input(
    request: Request, props: dict[str, dict[str, Any]] | None, *, history: bool = True
) -> dict[str, Any]:
    """The prediction's `input`, mapped onto the model's own field names.

    With no schema (None) the usual Llama-style names are used. `history=False` (image
    models) sends the last user message alone.
    """
    prompt, system, images = flatten_messages(request.messages, history)
    o = request.options
    known = props if props is not None else {
        k: {} for k in ("prompt", "system_prompt", "max_tokens", "temperature", "top_p", "seed",
                        "stop_sequences")
    }
    inp: dict[str, Any] = {}
    sys_key = _first(SYSTEM_KEYS, known)
    if system and sys_key is None:
        prompt = f"{system}\n\n{prompt}"
    elif system and sys_key:
        inp[sys_key] = system
    inp[_first(PROMPT_KEYS, known) or "prompt"] = prompt
    if o.max_tokens is not None and (key := _first(MAX_TOKEN_KEYS, known)):
        inp[key] = o.max_tokens
    for name, value in (("temperature", o.temperature), ("top_p", o.top_p), ("seed", o.seed)):
        if value is not None and name in known:
            inp[name] = value
    if o.stop and "stop_sequences" in known:
        inp["stop_sequences"] = ",".join(o.stop)
    if images:
        key = _first(IMAGE_KEYS, known) if props is not None else None
        if key is None:
            raise UnsupportedInput(
                f"this model takes no image input (its inputs: {', '.join(known) or 'unknown'}); "
                "leave out images=..., or pass the image yourself with input={'<name>': ...}"
            )
        if known[key].get("type") == "array":
            inp[key] = [i.data_uri() for i in images]
        elif len(images) > 1:
            raise UnsupportedInput(f"this model takes one image ({key!r}); give only one")
        else:
            inp[key] = images[0].data_uri()
    inp.update(o.extra)
    return inp


# ---- outputs -> events ----------------------------------------------------------------------


class StopCutter:
    """Cuts text at the first stop sequence, even one split across chunks.

    Text that could be the start of a stop sequence is held back until the next chunk.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.buf = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if not self.stops:
            return text
        self.buf += text
        hits = [i for i in (self.buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            out = self.buf[: min(hits)]
            self.buf = ""
            self.stopped = True
            return out
        cut = len(self.buf) - self.hold
        if cut <= 0:
            return ""
        out, self.buf = self.buf[:cut], self.buf[cut:]
        return out

    def flush(self) -> str:
        out, self.buf = self.buf, ""
        return out


def is_image_ref(value: Any, files: bool) -> bool:
    """Whether an output item is an image: a data URI, or a URL of a file output."""
    if not isinstance(value, str):
        return False
    if value.startswith("data:"):
        return value.startswith("data:image/") or files
    if value.startswith(("http://", "https://")) and "\n" not in value:
        return files or value.split("?", 1)[0].lower().endswith(IMAGE_EXTENSIONS)
    return False


def output_items(output: Any) -> list[Any]:
    if output is None:
        return []
    return list(output) if isinstance(output, list) else [output]


class Outputs:
    """Turns output items into events: text through the stop cutter, images fetched."""

    def __init__(self, client: httpx.AsyncClient, stops: Sequence[str], files: bool,
                 provider: str, auth: dict[str, str] | None = None,
                 auth_host: str | None = None) -> None:
        self.client = client
        self.cutter = StopCutter(stops)
        self.files = files
        self.provider = provider
        self.auth = auth or {}
        self.auth_host = auth_host

    @property
    def stopped(self) -> bool:
        return self.cutter.stopped

    async def events(self, item: Any) -> list[Event]:
        if self.stopped:
            return []
        if is_image_ref(item, self.files):
            part = await self.image(item)
            if part is not None:
                return [ImageEvent(part)]
            return [TextDelta(f"{item}\n")]  # a file that is not an image: its URL, as text
        if not isinstance(item, str):
            item = json.dumps(item)
        text = self.cutter.feed(item)
        return [TextDelta(text)] if text else []

    def flush(self) -> list[Event]:
        text = self.cutter.flush()
        return [TextDelta(text)] if text and not self.stopped else []

    async def image(self, ref: str) -> ImagePart | None:
        """The image a data URI or URL holds; None for a URL of a file that is not an image."""
        if ref.startswith("data:"):
            try:
                return parse_data_uri(ref)
            except BadOption:
                kind = ref[5:].split(";", 1)[0].split(",", 1)[0] or "of unknown type"
                raise ProviderError(
                    f"the model returned a file that is not an image ({kind}); nbchat shows "
                    "text and images only", provider=self.provider) from None
        url = httpx.URL(ref)
        headers = self.auth if self.auth_host and url.host == self.auth_host else {}
        try:
            resp = await self.client.get(url, headers=headers, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise http.transport_error(exc, url, self.provider) from None
        if resp.status_code >= 400:
            raise ProviderError(
                f"could not fetch the output image {url.host}{url.path} "
                f"(HTTP {resp.status_code}); it may have expired: run the prediction again",
                provider=self.provider,
            )
        try:
            part = from_bytes(resp.content)
        except BadOption:
            return None
        return ImagePart(part.data, part.mime, url=ref)


def finish_reason(status: str) -> str:
    return {"succeeded": "stop", "canceled": "canceled"}.get(status, status)


async def final_events(pred: dict[str, Any], outputs: Outputs,
                       provider: str) -> AsyncIterator[Event]:
    """The events of a finished prediction: its outputs, then Done; a failed one raises."""
    if pred.get("status") == "failed":
        raise failure(pred, provider)
    for item in output_items(pred.get("output")):
        for ev in await outputs.events(item):
            yield ev
    for ev in outputs.flush():
        yield ev
    yield Done("stop" if outputs.stopped else finish_reason(str(pred.get("status"))))


def failure(pred: dict[str, Any], provider: str) -> ProviderError:
    err = pred.get("error") or "the prediction failed"
    if isinstance(err, dict):
        err = err.get("detail") or json.dumps(err)
    logs = (pred.get("logs") or "").strip().splitlines()
    hint = f" (last log line: {logs[-1][:200]})" if logs else ""
    return ProviderError(f"{err}{hint}", provider=provider)


async def cancel_quietly(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> bool:
    """POST a cancel, best effort and bounded in time; whether the server took it."""
    try:
        resp = await asyncio.wait_for(client.post(url, headers=headers), CANCEL_TIMEOUT)
        return resp.status_code < 400
    except (Exception, asyncio.CancelledError):  # nothing more to do: the user already stopped
        return False


# ---- model ids and the capability table -----------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    owner: str
    name: str
    version: str | None = None

    @classmethod
    def parse(cls, model: str) -> ModelRef:
        path, _, version = model.partition(":")
        owner, _, name = path.partition("/")
        if not owner or not name or "/" in name:
            raise UnknownModel(
                f"replicate:{model}", [m.id for m in ReplicateProvider().known_models()]
            )
        return cls(owner, name, version or None)

    @property
    def path(self) -> str:
        return f"{self.owner}/{self.name}"


# id -> (kind, vision, description); kind "text" or "image"
CAPABILITIES: dict[str, tuple[str, bool, str]] = {
    "meta/meta-llama-3-70b-instruct": ("text", False, "Llama 3 70B Instruct"),
    "meta/meta-llama-3-8b-instruct": ("text", False, "Llama 3 8B Instruct"),
    "meta/llama-2-70b-chat": ("text", False, "Llama 2 70B Chat"),
    "meta/llama-2-13b-chat": ("text", False, "Llama 2 13B Chat"),
    "mistralai/mixtral-8x7b-instruct-v0.1": ("text", False, "Mixtral 8x7B Instruct"),
    "yorickvp/llava-13b": ("text", True, "LLaVA 13B (sees images)"),
    "stability-ai/sdxl": ("image", False, "Stable Diffusion XL (give :version)"),
    "stability-ai/stable-diffusion-3": ("image", False, "Stable Diffusion 3"),
    "black-forest-labs/flux-schnell": ("image", False, "FLUX.1 [schnell]"),
    "black-forest-labs/flux-dev": ("image", False, "FLUX.1 [dev]"),
}


def model_info_for(model_id: str, kind: str, vision: bool, description: str,
                   key_set: bool) -> ModelInfo:
    return ModelInfo(
        id=f"replicate:{model_id}",
        provider="replicate",
        stream=kind == "text",
        vision=vision,
        image_generation=kind == "image",
        key_set=key_set,
        key_env="REPLICATE_API_TOKEN",
        description=description,
    )


def parse_collection(body: Any, kind: str, key_set: bool) -> list[ModelInfo]:
    """Models of one page of `GET /collections/{slug}`, capabilities from the table."""
    out = []
    for m in (body or {}).get("models") or (body or {}).get("results") or []:
        mid = f"{m.get('owner')}/{m.get('name')}"
        k, vision, desc = CAPABILITIES.get(mid, (kind, False, ""))
        out.append(model_info_for(mid, k, vision, desc or (m.get("description") or "")[:80],
                                  key_set))
    return out


# ---- the provider ---------------------------------------------------------------------------


class ReplicateProvider(Provider):
    name = "replicate"
    key_env = "REPLICATE_API_TOKEN"
    base_url_env = "REPLICATE_BASE_URL"
    default_base_url = DEFAULT_BASE_URL

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.transport = transport
        self._schemas: dict[tuple[str, str], dict[str, Any] | None] = {}

    def known_models(self) -> list[ModelInfo]:
        key_set = self.key_set()
        return [model_info_for(m, *cap, key_set) for m, cap in CAPABILITIES.items()]

    def model_info(self, model: str) -> ModelInfo | None:
        cap = CAPABILITIES.get(model.split(":", 1)[0])
        return model_info_for(model, *cap, self.key_set()) if cap else None

    def normalize_model(self, model: str) -> str:
        ModelRef.parse(model)
        return model

    def check_request(self, request: Request) -> None:
        """Text models of the table that cannot see are refused here; image models (which may
        take an input image) and unknown models are checked against their schema later."""
        info = self.model_info(request.model)
        if info is not None and not info.image_generation:
            super().check_request(request)

    def _headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    async def list_models(
        self, *, api_key: str | None = None, base_url: str | None = None
    ) -> list[ModelInfo]:
        """The language-model and text-to-image collections, merged with the table."""
        base = self.base_url(base_url) or DEFAULT_BASE_URL
        key = api_key or os.environ.get(self.key_env or "")
        if not key:
            return self.known_models()
        key = self.api_key(key, base) or ""
        client = http.get_client(self.transport)
        found: dict[str, ModelInfo] = {}
        for slug in COLLECTIONS:
            url: str | None = f"{base}/collections/{slug}"
            kind = "text" if slug == "language-models" else "image"
            for _ in range(MAX_PAGES):
                if not url:
                    break
                body = await http.request_json(client, "GET", url, provider=self.name,
                                               headers=self._headers(key), key_env=self.key_env)
                for info in parse_collection(body, kind, True):
                    found.setdefault(info.id, info)
                url = (body or {}).get("next")
        for info in self.known_models():
            found.setdefault(info.id, info)
        return list(found.values())

    async def schema(self, client: httpx.AsyncClient, base: str, key: str,
                     ref: ModelRef) -> dict[str, Any] | None:
        """The version's OpenAPI schema (cached); None if the model does not publish one."""
        cache = (base, f"{ref.path}:{ref.version or ''}")
        if cache not in self._schemas:
            if ref.version:
                url = f"{base}/models/{ref.path}/versions/{ref.version}"
            else:
                url = f"{base}/models/{ref.path}"
            body = await http.request_json(client, "GET", url, provider=self.name,
                                           headers=self._headers(key), key_env=self.key_env)
            version = body if ref.version else (body or {}).get("latest_version")
            self._schemas[cache] = (version or {}).get("openapi_schema")
        return self._schemas[cache]

    async def stream(self, request: Request) -> AsyncIterator[Event]:
        base = self.base_url(request.base_url) or DEFAULT_BASE_URL
        key = self.api_key(request.api_key, base) or ""
        client = http.get_client(self.transport)
        ref = ModelRef.parse(request.model)
        openapi = await self.schema(client, base, key, ref)
        files = outputs_files(openapi)
        inp = build_input(request, input_properties(openapi), history=not files)
        streaming = streams_text(openapi) if openapi else True
        auth = self._headers(key)
        outputs = Outputs(client, request.options.stop, files, self.name, auth,
                          httpx.URL(base).host)
        headers = dict(auth)
        body: dict[str, Any] = {"input": inp}
        if ref.version:
            url = f"{base}/predictions"
            body["version"] = ref.version
        else:
            url = f"{base}/models/{ref.path}/predictions"
        if streaming:
            body["stream"] = True
        else:
            headers["Prefer"] = "wait"
        pred = await http.request_json(client, "POST", url, provider=self.name, json_body=body,
                                       headers=headers, key_env=self.key_env, policy=NO_RETRY)
        if not isinstance(pred, dict) or "id" not in pred:
            raise ProtocolError("Replicate answered the create without a prediction id")
        urls = pred.get("urls") or {}
        cancel_url = urls.get("cancel") or f"{base}/predictions/{pred['id']}/cancel"
        finished = False
        try:
            if streaming and urls.get("stream") and pred.get("status") not in TERMINAL:
                async for ev in self._stream_sse(client, urls["stream"], auth, outputs):
                    if isinstance(ev, Done):
                        finished = not outputs.stopped
                    yield ev
                return
            get_url = urls.get("get") or f"{base}/predictions/{pred['id']}"
            pred = await self._poll(client, pred, get_url, auth)
            finished = True
            async for ev in final_events(pred, outputs, self.name):
                yield ev
        finally:
            if not finished:
                await cancel_quietly(client, cancel_url, auth)

    async def _poll(self, client: httpx.AsyncClient, pred: dict[str, Any], url: str,
                    auth: dict[str, str]) -> dict[str, Any]:
        delay = POLL_FIRST
        while pred.get("status") not in TERMINAL:
            await asyncio.sleep(delay)
            delay = min(delay * 2, POLL_MAX)
            pred = await http.request_json(client, "GET", url, provider=self.name,
                                           headers=auth, key_env=self.key_env)
        return pred

    async def _stream_sse(self, client: httpx.AsyncClient, url: str, auth: dict[str, str],
                          outputs: Outputs) -> AsyncIterator[Event]:
        headers = {**auth, "Accept": "text/event-stream", "Cache-Control": "no-store"}
        response = await http.open_stream(client, "GET", url, provider=self.name,
                                          headers=headers, key_env=self.key_env)
        try:
            async for event, data in aiter_sse(response.aiter_bytes()):
                if event == "output":
                    for ev in await outputs.events(data):
                        yield ev
                    if outputs.stopped:
                        yield Done("stop")
                        return
                elif event == "error":
                    raise ProviderError(_detail(data), provider=self.name)
                elif event == "done":
                    reason = _json_or_empty(data).get("reason")
                    if reason == "error":
                        raise ProviderError("the prediction failed", provider=self.name)
                    for ev in outputs.flush():
                        yield ev
                    yield Done("canceled" if reason == "canceled" else "stop")
                    return
        except httpx.HTTPError as exc:
            raise http.transport_error(exc, url, self.name) from None
        finally:
            await response.aclose()
        raise ProtocolError("Replicate's stream ended before its done event; try again")


def _json_or_empty(data: str) -> dict[str, Any]:
    try:
        value = json.loads(data) if data.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _detail(data: str) -> str:
    body = _json_or_empty(data)
    return str(body.get("detail") or body.get("error") or data or "the prediction failed")
