"""Replicate (`replicate:owner/name` or `replicate:owner/name:version`).

A model's inputs come from its version's OpenAPI schema, so options are mapped by name
(`build_input`); anything else passes through with `input={...}`. Text models stream through
the prediction's `urls.stream` (SSE: output/logs/error/done); other models are created with
`Prefer: wait` and polled. Stop sequences go to the model when it takes `stop_sequences` and
are always cut here too; once one appears, or when the user interrupts, the prediction is
cancelled (best effort, bounded time). Create is not idempotent, so it is never retried.

The schema mapping, prompt flattening and output handling are the Cog prediction protocol,
shared with the Cog provider: see `nbchat.providers.protocols.cog_prediction`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from ..core import http, waits
from ..core.credentials import Endpoint
from ..core.errors import (
    ProtocolError,
    ProviderError,
    UnknownModel,
)
from ..core.provider import Provider
from ..core.sse import SSEParser, sse_records
from ..core.types import (
    Done,
    Event,
    ModelInfo,
    Request,
)
from .protocols.cog_prediction import (
    TERMINAL,
    Outputs,
    build_input,
    cancel_quietly,
    final_events,
    input_properties,
    output_items,
    outputs_files,
    streams_text,
)

DEFAULT_BASE_URL = "https://api.replicate.com/v1"
POLL_FIRST, POLL_MAX = 0.25, 2.0
COLLECTIONS = ("language-models", "text-to-image")
MAX_PAGES = 5

#: create is not idempotent: never resend it after it may have reached the server
NO_RETRY = http.RetryPolicy(max_retries=0)
#: Replicate's longest `Prefer: wait`, in seconds
MAX_PREFER_WAIT = 60


def prefer_wait(first_byte: float | None) -> str:
    """The `Prefer` header of a blocking create: Replicate answers within N s, which must end
    before our own first-byte limit does (else a slow model would look like a dead server)."""
    if first_byte is None or first_byte - 5 >= MAX_PREFER_WAIT:
        return "wait"
    return f"wait={max(1, int(first_byte - 5))}"


# ---- model ids and the capability table -----------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """A Replicate model id: `owner/name`, with `version` (a version hash) for
    `owner/name:version` ids.
    """

    owner: str
    name: str
    version: str | None = None

    @classmethod
    def parse(cls, model: str) -> ModelRef:
        """The parts of a provider-local id `owner/name[:version]`; raises UnknownModel (with the
        table's ids as suggestions) when it does not have that shape.
        """
        path, _, version = model.partition(":")
        owner, _, name = path.partition("/")
        if not owner or not name or "/" in name:
            raise UnknownModel(
                f"replicate:{model}", [m.id for m in ReplicateProvider().known_models()]
            )
        return cls(owner, name, version or None)

    @property
    def path(self) -> str:
        """`owner/name`, as it appears in Replicate's URLs."""
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
    """A `replicate:` `ModelInfo` for a table or collection entry: `kind` "text" streams, "image"
    generates images; `vision` says whether it takes input images.
    """
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
    """`replicate:owner/name[:version]` — models on https://api.replicate.com/v1, token in
    `REPLICATE_API_TOKEN`. Wire: https://replicate.com/docs/reference/http (predictions) and
    https://replicate.com/docs/streaming (SSE), as recorded in tests/wire/replicate_*.
    """

    wire_gated = True  # every request goes through nbchat.core.http

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

    async def list_models(self, endpoint: Endpoint | None = None) -> list[ModelInfo]:
        """The language-model and text-to-image collections (`GET {base}/collections/{slug}`,
        at most `MAX_PAGES` pages each), merged with the table; the table alone without a key."""
        endpoint = endpoint or self.endpoint()
        if endpoint.api_key is None:
            return self.known_models()
        base = endpoint.base_url or DEFAULT_BASE_URL
        own = http.same_site(base)
        auth = http.bearer_auth(endpoint.api_key, only=own)
        client = http.get_client(self.transport)
        found: dict[str, ModelInfo] = {}
        for slug in COLLECTIONS:
            url: str | None = f"{base}/collections/{slug}"
            kind = "text" if slug == "language-models" else "image"
            for _ in range(MAX_PAGES):
                if not url:
                    break
                body = await http.request_json(client, "GET", url, provider=self.name,
                                               auth=auth, key_env=self.key_env)
                for info in parse_collection(body, kind, True):
                    found.setdefault(info.id, info)
                nxt = (body or {}).get("next")
                url = nxt if isinstance(nxt, str) and _url_ok(nxt, own) else None
        for info in self.known_models():
            found.setdefault(info.id, info)
        return list(found.values())

    async def schema(self, client: httpx.AsyncClient, base: str, auth: httpx.Auth | None,
                     ref: ModelRef) -> dict[str, Any] | None:
        """The version's OpenAPI schema (cached); None if the model does not publish one."""
        cache = (base, f"{ref.path}:{ref.version or ''}")
        if cache not in self._schemas:
            if ref.version:
                url = f"{base}/models/{ref.path}/versions/{ref.version}"
            else:
                url = f"{base}/models/{ref.path}"
            body = await http.request_json(client, "GET", url, provider=self.name,
                                           auth=auth, key_env=self.key_env)
            version = body if ref.version else (body or {}).get("latest_version")
            self._schemas[cache] = (version or {}).get("openapi_schema")
        return self._schemas[cache]

    async def stream(self, request: Request, endpoint: Endpoint) -> AsyncIterator[Event]:
        """Create a prediction (never retried: create is not idempotent) and yield its output:
        streamed through `urls.stream` for text models, else waited for (`Prefer: wait`) and
        polled. Cancels the prediction if the consumer stops early. Wire:
        https://replicate.com/docs/reference/http and https://replicate.com/docs/streaming."""
        base = endpoint.base_url or DEFAULT_BASE_URL
        # the key goes to the API's own host, and streams to https hosts of its domain
        # (stream.replicate.com), never to another host an answer names
        trusted = http.same_site(base, https_subdomains=True)
        auth = http.bearer_auth(endpoint.api_key, only=trusted)
        client = http.get_client(self.transport)
        ref = ModelRef.parse(request.model)
        openapi = await self.schema(client, base, auth, ref)
        files = outputs_files(openapi)
        inp = build_input(request, input_properties(openapi), history=not files)
        streaming = streams_text(openapi) if openapi else True
        outputs = Outputs(client, request.options.stop, files, self.name, auth,
                          httpx.URL(base).host)
        headers: dict[str, str] = {}
        body: dict[str, Any] = {"input": inp}
        if ref.version:
            url = f"{base}/predictions"
            body["version"] = ref.version
        else:
            url = f"{base}/models/{ref.path}/predictions"
        if streaming:
            body["stream"] = True
        else:
            headers["Prefer"] = prefer_wait(waits.limits(self.name).first_byte)
        pred = await http.request_json(client, "POST", url, provider=self.name, json_body=body,
                                       headers=headers, auth=auth, key_env=self.key_env,
                                       policy=NO_RETRY)
        if not isinstance(pred, dict) or "id" not in pred:
            raise ProtocolError("Replicate answered the create without a prediction id")
        urls = {k: v for k, v in (pred.get("urls") or {}).items()
                if isinstance(v, str) and _url_ok(v, trusted)}
        cancel_url = urls.get("cancel") or f"{base}/predictions/{pred['id']}/cancel"
        finished = False
        try:
            if streaming and urls.get("stream") and pred.get("status") not in TERMINAL:
                async for ev in self._stream_sse(client, urls["stream"], auth, outputs):
                    if isinstance(ev, Done):
                        finished = not outputs.stopped
                    yield ev
                return
            if not streaming and pred.get("status") not in TERMINAL and output_items(
                    pred.get("output")):
                # `Prefer: wait` ran out while the model was finishing, but the output is there:
                # it is the result (replicate-python takes it so too), no need to poll
                pred = {**pred, "status": "succeeded"}
            get_url = urls.get("get") or f"{base}/predictions/{pred['id']}"
            pred = await self._poll(client, pred, get_url, auth)
            finished = True
            async for ev in final_events(pred, outputs, self.name):
                yield ev
        finally:
            if not finished:
                await cancel_quietly(client, cancel_url, auth)

    async def _poll(self, client: httpx.AsyncClient, pred: dict[str, Any], url: str,
                    auth: httpx.Auth | None) -> dict[str, Any]:
        delay = POLL_FIRST
        while pred.get("status") not in TERMINAL:
            waits.polling(f"prediction {pred.get('status') or 'starting'}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, POLL_MAX)
            pred = await http.request_json(client, "GET", url, provider=self.name,
                                           auth=auth, key_env=self.key_env)
        return pred

    async def _stream_sse(self, client: httpx.AsyncClient, url: str, auth: httpx.Auth | None,
                          outputs: Outputs) -> AsyncIterator[Event]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        response = await http.open_stream(client, "GET", url, provider=self.name,
                                          headers=headers, auth=auth, key_env=self.key_env)
        # the prediction may still be booting: no idle limit until its first output
        waits.polling("prediction starting")
        parser = SSEParser()
        try:
            async for event, data in sse_records(parser, response.aiter_bytes()):
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
        if parser.bare_body:
            raise http.bare_body_error(parser.bare_body, self.name, response.status_code)
        raise ProtocolError("Replicate's stream ended before its done event; try again")


def _url_ok(url: str, trusted: Any) -> bool:
    """Whether a URL named by an answer is one of the API's own (others are not followed)."""
    try:
        return bool(trusted(httpx.URL(url)))
    except httpx.InvalidURL:
        return False


def _json_or_empty(data: str) -> dict[str, Any]:
    try:
        value = json.loads(data) if data.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _detail(data: str) -> str:
    body = _json_or_empty(data)
    return str(body.get("detail") or body.get("error") or data or "the prediction failed")
