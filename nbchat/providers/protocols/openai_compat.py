"""The OpenAI-compatible HTTP engine shared by `openai:`, `cerebras:`, `nvidia:` and `anyscale:`.

`OpenAICompatProvider.stream` does the I/O: one POST, SSE bytes through `SSEParser`, one
`json.loads` per record, each fed to the pure codec in `openai_wire`. Provider modules subclass
it and set a few class attributes and capability tables.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from ...core import http
from ...core.errors import ConnectionFailed, NbchatError, ProtocolError, ProviderError
from ...core.provider import Provider
from ...core.sse import SSEParser
from ...core.types import Event, ModelInfo, Request
from .openai_wire import Caps, StreamState, build_body, parse_completion, stream_error

# ---- the provider ---------------------------------------------------------------------------


class _EmptyStream(Exception):
    """A 200 stream that closed without sending a single byte."""


class OpenAICompatProvider(Provider):
    """A provider speaking the OpenAI chat wire. Subclasses set names, env vars and tables."""

    caps: ClassVar[Caps] = Caps()
    #: whether a list_models() failure should fall back to the table silently
    description: ClassVar[str] = ""

    def __init__(self, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.transport = transport  # tests pass an httpx.MockTransport
        self._schema_fallback: set[str] = set()  # base URLs that refused json_schema

    # ---- hooks for provider modules ------------------------------------------------------

    def caps_for(self, model: str, base_url: str) -> Caps:
        return self.caps

    def headers(self, api_key: str | None) -> dict[str, str]:
        h = {"Accept": "text/event-stream"}
        if api_key:
            h["Authorization"] = f"Bearer {api_key}"
        return h

    def html_error(self, status: int, body: bytes, url: str = "") -> NbchatError:
        return ProtocolError(
            f"{self.name} answered with an HTML page instead of JSON (HTTP {status}); "
            "check the base URL: it should be the API root, usually ending in /v1"
        )

    def chat_url(self, model: str, base_url: str) -> str:
        return f"{base_url}/chat/completions"

    def resolve_base_url(self, explicit: str | None) -> str:
        base = self.base_url(explicit)
        if not base:
            env = f" or set {self.base_url_env}" if self.base_url_env else ""
            raise NbchatError(f"{self.name}: no base URL; pass base_url=...{env}")
        return base

    async def prepare(
        self, client: httpx.AsyncClient, request: Request, caps: Caps, api_key: str | None
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The body and headers to send (NVIDIA uploads large images here)."""
        return build_body(request, caps), self.headers(api_key)

    async def open_response(
        self,
        client: httpx.AsyncClient,
        url: str,
        body: dict[str, Any],
        headers: dict[str, str],
        api_key: str | None,
    ) -> httpx.Response:
        return await http.open_stream(
            client, "POST", url, provider=self.name, json_body=body, headers=headers,
            key_env=self.key_env, html_error=lambda s, b: self.html_error(s, b, url),
        )

    # ---- streaming -----------------------------------------------------------------------

    async def stream(self, request: Request) -> AsyncIterator[Event]:
        base = self.resolve_base_url(request.base_url)
        api_key = self.api_key(request.api_key, base)
        caps = self.caps_for(request.model, base)
        if base in self._schema_fallback:
            caps = replace(caps, schema_style="json_object")
        client = http.get_client(self.transport)
        url = self.chat_url(request.model, base)
        body, headers = await self.prepare(client, request, caps, api_key)
        try:
            response = await self.open_response(client, url, body, headers, api_key)
        except ProviderError as exc:
            # servers without json_schema (llama.cpp's) take {"type":"json_object","schema":...}
            if not (request.options.schema is not None and caps.schema_style == "json_schema"
                    and exc.status in (400, 422, 500) and "response_format" in str(exc)):
                raise
            self._schema_fallback.add(base)
            caps = replace(caps, schema_style="json_object")
            body, headers = await self.prepare(client, request, caps, api_key)
            response = await self.open_response(client, url, body, headers, api_key)
        try:
            ctype = response.headers.get("content-type", "")
            if "text/event-stream" in ctype or not ctype:
                async for ev in self._sse_events(response, url):
                    yield ev
            else:
                for ev in await self._whole_events(response, url, ctype):
                    yield ev
            return
        except _EmptyStream:
            pass
        finally:
            await response.aclose()
        # The stream closed before its first record (llama.cpp does this for a prompt that
        # does not fit): nothing reached the user, so ask once more without streaming to get
        # the real error, or the reply.
        body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        response = await self.open_response(client, url, body, headers, api_key)
        try:
            ctype = response.headers.get("content-type", "")
            for ev in await self._whole_events(response, url, ctype):
                yield ev
        finally:
            await response.aclose()

    async def _whole_events(self, response: httpx.Response, url: str, ctype: str) -> list[Event]:
        try:
            raw = await response.aread()
        except httpx.HTTPError as exc:
            raise http.transport_error(exc, url, self.name) from None
        if "html" in ctype or raw[:200].lstrip().lower().startswith((b"<!doctype", b"<html")):
            raise self.html_error(response.status_code, raw, url)
        try:
            obj = json.loads(raw)
        except ValueError:
            raise ProtocolError(f"{self.name} sent a reply that is not JSON: {raw[:80]!r}") \
                from None
        return parse_completion(obj, self.name)

    async def _sse_events(self, response: httpx.Response, url: str) -> AsyncIterator[Event]:
        parser = SSEParser()
        state = StreamState(self.name)
        loads = json.loads
        feed = state.feed
        finished = False
        seen = False  # any byte at all
        try:
            async for raw in response.aiter_bytes():
                seen = True
                for event, data in parser.feed(raw):
                    if data == "[DONE]":
                        finished = True
                        break
                    try:
                        obj = loads(data)
                    except ValueError:
                        if event == "error":
                            raise stream_error({"message": data}, self.name) from None
                        raise ProtocolError(
                            f"{self.name} sent a malformed stream record: {data[:80]!r}; "
                            "the reply is incomplete, try again"
                        ) from None
                    if event == "error":
                        raise stream_error(obj, self.name)
                    delta = feed(obj)
                    if delta is not None:
                        yield delta
                if finished:
                    break
            if not finished:
                for _event, data in parser.flush():
                    if data == "[DONE]":
                        finished = True
                    elif data.lstrip().startswith("{"):
                        try:
                            obj = loads(data)
                        except ValueError:  # cut off mid-record: reported as a drop below
                            break
                        delta = feed(obj)
                        if delta is not None:
                            yield delta
        except httpx.HTTPError as exc:
            raise http.transport_error(exc, url, self.name) from None
        if not finished and state.finish_reason is None:
            if not seen:
                raise _EmptyStream
            raise ConnectionFailed(
                f"{self.name}: the connection closed before the reply finished; try again"
            )
        for ev in state.done_events():
            yield ev

    # ---- models --------------------------------------------------------------------------

    def model_entry(self, model: str, **flags: Any) -> ModelInfo:
        return ModelInfo(
            id=f"{self.name}:{model}",
            provider=self.name,
            key_set=self.key_set() or not self.needs_key(self.base_url()),
            key_env=self.key_env,
            **flags,
        )

    async def list_models(
        self, *, api_key: str | None = None, base_url: str | None = None
    ) -> list[ModelInfo]:
        """`GET /models` merged with the capability table (table entries first)."""
        base = self.resolve_base_url(base_url)
        key = self.api_key(api_key, base)
        client = http.get_client(self.transport)
        headers = {"Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = await http.request_json(
            client, "GET", f"{base}/models", provider=self.name, headers=headers,
            key_env=self.key_env, html_error=lambda s, b: self.html_error(s, b, base),
        )
        items = data.get("data", []) if isinstance(data, dict) else data or []
        live = [str(m["id"]) for m in items if isinstance(m, dict) and m.get("id")]
        return merge_models(self.known_models(), live, self.live_entry)

    def live_entry(self, model: str) -> ModelInfo:
        """A listed model that the table does not know: streaming only, flags unknown."""
        return self.model_entry(model)


def merge_models(
    table: list[ModelInfo], live: list[str], entry: Callable[[str], ModelInfo]
) -> list[ModelInfo]:
    """Live ids with table flags where known; table-only models are kept only if live is empty."""
    if not live:
        return list(table)
    by_name = {m.name: m for m in table}
    return [by_name[m] if m in by_name else entry(m) for m in dict.fromkeys(live)]


def host_of(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:  # e.g. "http://[bad": the request itself reports the bad URL
        return ""
