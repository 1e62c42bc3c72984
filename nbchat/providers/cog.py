"""Self-hosted Cog models (`cog:NAME`, the server from `base_url=` or `COG_BASE_URL`).

NAME is a label of the user's choosing; a Cog server runs exactly one model, e.g. one started
with `docker run -p 5000:5000 r8.im/owner/model`. Before the first request to a server its
`/health-check` is read (a clear message while the model is still starting) and its
`/openapi.json` gives the input schema, mapped like Replicate's (`cog_prediction.build_input`).

Predictions are created with `PUT /predictions/{id}` and an id made here: the idempotent
create, safe to retry, and the handle for `POST /predictions/{id}/cancel` when the user stops
or a stop sequence appears. Streaming models (`x-cog-streaming`) answer the PUT with SSE
(`start`, `log`, `output {chunk}`, `completed`); others answer with the finished prediction.
File outputs arrive as data URIs and become images.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ..core import http
from ..core.credentials import Endpoint
from ..core.errors import ProtocolError, ProviderError, UsageError
from ..core.provider import Provider
from ..core.sse import SSEParser, sse_records
from ..core.types import Done, Event, ModelInfo, Request
from .protocols.cog_prediction import (
    Outputs,
    build_input,
    cancel_quietly,
    failure,
    final_events,
    finish_reason,
    input_properties,
    output_schema,
    outputs_files,
)


def cog_streams(openapi: dict[str, Any] | None) -> bool:
    """Whether the server streams (it answers SSE only when its schema says so)."""
    if not isinstance(openapi, dict):
        return False
    post = ((openapi.get("paths") or {}).get("/predictions") or {}).get("post") or {}
    return post.get("x-cog-streaming") is True


def health_problem(base: str, body: Any) -> str | None:
    """A message for a server that cannot take predictions yet, or None when it can."""
    status = str((body or {}).get("status") or "UNKNOWN") if isinstance(body, dict) else "UNKNOWN"
    if status in ("READY", "BUSY"):
        return None
    if status == "STARTING":
        return (f"the Cog model at {base} is still starting (status STARTING); "
                "try again in a few seconds")
    if status == "SETUP_FAILED":
        logs = str(((body or {}).get("setup") or {}).get("logs") or "").strip().splitlines()
        tail = f" Last setup log line: {logs[-1][:200]}" if logs else ""
        return (f"the Cog model at {base} failed its setup (status SETUP_FAILED); "
                f"look at the server's logs and restart it.{tail}")
    if status == "DEFUNCT":
        return f"the Cog model at {base} is broken (status DEFUNCT); restart the server"
    return f"the Cog model at {base} is not ready (status {status}); try again shortly"


class CogProvider(Provider):
    """`cog:NAME` — the one model of a self-hosted Cog server (`base_url=`, `%config
    ChatMagics.base_urls` or `COG_BASE_URL`); no key. Wire: https://cog.run/http/ (predictions,
    SSE events, health-check statuses).
    """

    wire_gated = True  # every request goes through nbchat.core.http

    name = "cog"
    key_env = None
    base_url_env = "COG_BASE_URL"

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.transport = transport
        self._ready: set[str] = set()
        self._schemas: dict[str, dict[str, Any] | None] = {}

    def server(self, endpoint: Endpoint) -> str:
        """The server's base URL; `UsageError` saying how to give one if there is none."""
        base = endpoint.base_url
        if not base:
            raise UsageError(
                "no Cog server given: set COG_BASE_URL=http://localhost:5000 "
                "or pass base_url=... (a model started with `docker run -p 5000:5000 r8.im/...`)"
            )
        return base

    def known_models(self) -> list[ModelInfo]:
        base = self.endpoint().base_url
        if not base:
            return []
        return [ModelInfo(id="cog:model", provider=self.name, key_set=True,
                          description=f"the Cog model at {base}")]

    def model_info(self, model: str) -> ModelInfo | None:
        return None  # what a Cog model takes is read from its schema at request time

    async def list_models(self, endpoint: Endpoint | None = None) -> list[ModelInfo]:
        """The one model of the server at `endpoint`, capabilities read from its
        `/openapi.json`; empty when no server is set."""
        base = (endpoint or self.endpoint()).base_url
        if not base:
            return []
        client = http.get_client(self.transport)
        openapi = await self.schema(client, base)
        props = input_properties(openapi) or {}
        image_out = outputs_files(openapi)
        vision = any(k in props for k in ("image", "input_image", "image_input", "img"))
        title = (openapi or {}).get("info", {}).get("title", "Cog")
        desc = output_schema(openapi).get("title", "")
        return [ModelInfo(
            id="cog:model", provider=self.name, stream=cog_streams(openapi), vision=vision,
            image_generation=image_out, key_set=True,
            description=f"{title} {desc} at {base}".strip(),
        )]

    async def check_health(self, client: httpx.AsyncClient, base: str) -> None:
        """Read `GET /health-check` once per server: return when its status is READY or BUSY, else
        raise ProviderError saying what to do (STARTING: wait; SETUP_FAILED: read the server's logs,
        whose last setup line is quoted; DEFUNCT: restart it).
        """
        if base in self._ready:
            return
        body = await http.request_json(client, "GET", f"{base}/health-check", provider=self.name)
        problem = health_problem(base, body)
        if problem:
            raise ProviderError(problem, provider=self.name)
        self._ready.add(base)

    async def schema(self, client: httpx.AsyncClient, base: str) -> dict[str, Any] | None:
        """The server's `GET /openapi.json` (the model's input and output schema), fetched once per
        server; raises what `http.request_json` raises.
        """
        if base not in self._schemas:
            self._schemas[base] = await http.request_json(
                client, "GET", f"{base}/openapi.json", provider=self.name
            )
        return self._schemas[base]


    async def stream(self, request: Request, endpoint: Endpoint) -> AsyncIterator[Event]:
        """Check health, read the schema, create the prediction with `PUT /predictions/{id}`
        and yield its output as events (wire: https://cog.run/http/)."""
        base = self.server(endpoint)
        client = http.get_client(self.transport)
        await self.check_health(client, base)
        openapi = await self.schema(client, base)
        files = outputs_files(openapi)
        body = {"input": build_input(request, input_properties(openapi), history=not files)}
        outputs = Outputs(client, request.options.stop, files, self.name)
        pid = uuid.uuid4().hex
        url = f"{base}/predictions/{pid}"
        finished = False
        try:
            if cog_streams(openapi):
                async for ev in self._stream_sse(client, url, body, outputs):
                    if isinstance(ev, Done):
                        finished = not outputs.stopped
                    yield ev
                return
            pred = await http.request_json(client, "PUT", url, provider=self.name,
                                           json_body=body)
            finished = True
            if not isinstance(pred, dict):
                raise ProtocolError("the Cog server answered without a prediction")
            async for ev in final_events(pred, outputs, self.name):
                yield ev
        finally:
            if not finished:
                await cancel_quietly(client, f"{url}/cancel")

    async def _stream_sse(self, client: httpx.AsyncClient, url: str, body: dict[str, Any],
                          outputs: Outputs) -> AsyncIterator[Event]:
        response = await http.open_stream(client, "PUT", url, provider=self.name, json_body=body,
                                          headers={"Accept": "text/event-stream"})
        parser = SSEParser()
        try:
            if "text/event-stream" not in response.headers.get("content-type", ""):
                raise ProtocolError("the Cog server did not stream (no text/event-stream)")
            async for event, data in sse_records(parser, response.aiter_bytes()):
                if event == "output":
                    try:
                        chunk = json.loads(data)["chunk"]
                    except (ValueError, KeyError, TypeError):
                        raise ProtocolError(f"bad output event from Cog: {data[:80]!r}") from None
                    for ev in await outputs.events(chunk):
                        yield ev
                    if outputs.stopped:
                        yield Done("stop")
                        return
                elif event == "completed":
                    pred = json.loads(data)
                    if pred.get("status") == "failed":
                        raise failure(pred, self.name)
                    for ev in outputs.flush():
                        yield ev
                    yield Done(finish_reason(str(pred.get("status"))))
                    return
        except httpx.HTTPError as exc:
            raise http.transport_error(exc, url, self.name) from None
        finally:
            await response.aclose()
        if parser.bare_body:
            raise http.bare_body_error(parser.bare_body, self.name, response.status_code)
        raise ProtocolError("the Cog stream ended before its completed event; try again")
