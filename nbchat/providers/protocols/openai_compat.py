"""The OpenAI-compatible HTTP engine shared by `openai:`, `cerebras:`, `nvidia:` and `anyscale:`.

`OpenAICompatProvider.stream` does the I/O: one POST, SSE bytes through `SSEParser`, one
`json.loads` per record, each fed to the pure codec in `openai_wire`. Provider modules subclass
it and set a few class attributes and capability tables.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from ...core import http
from ...core.credentials import Endpoint
from ...core.errors import ConnectionFailed, NbchatError, ProtocolError, ProviderError
from ...core.provider import Provider
from ...core.sse import SSEParser
from ...core.types import Event, ModelInfo, Request
from .openai_wire import Caps, StreamState, build_body, parse_completion, stream_error

# ---- the provider ---------------------------------------------------------------------------


class _EmptyStream(Exception):
    """A 200 stream that closed without sending a single byte."""


class OpenAICompatProvider(Provider):
    """A provider speaking the OpenAI chat wire. Subclasses set names, env vars and tables.

    Hooks for subclasses: `caps_for` (wire differences per model and host), `chat_url`,
    `prepare` (body and headers), `open_response` (how the POST is sent), `html_error`,
    `table` (the capability table for an endpoint) and `live_entry` (a listed model the table
    does not know).
    """

    wire_gated = True  # every request goes through nbchat.core.http

    caps: ClassVar[Caps] = Caps()
    #: whether a list_models() failure should fall back to the table silently
    description: ClassVar[str] = ""

    def __init__(self, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.transport = transport  # tests pass an httpx.MockTransport
        self._schema_fallback: set[str] = set()  # base URLs that refused json_schema

    # ---- hooks for provider modules ------------------------------------------------------

    def caps_for(self, model: str, base_url: str) -> Caps:
        """What `base_url`'s endpoint takes on the wire for `model`; here, the class's `caps`."""
        return self.caps

    def headers(self) -> dict[str, str]:
        """Headers of a chat request besides the credentials (those go in as `auth`)."""
        return {"Accept": "text/event-stream"}

    def html_error(self, status: int, body: bytes, url: str = "") -> NbchatError:
        """The error for an HTML page where JSON was expected (a wrong base URL, a proxy's page):
        a ProtocolError saying to check the base URL. `url` is the address that answered.
        """
        head = f"{self.name} answered with an HTML page instead of JSON (HTTP {status})"
        if status in (502, 503, 504):  # a gateway or proxy in front of the server
            return ProtocolError(
                f"{head}: a gateway or proxy could not reach the model server; check that the "
                "server is running, or try again in a moment")
        if "/v1/" in url or url.rstrip("/").endswith("/v1"):
            return ProtocolError(
                f"{head}: the address answers, but not as an OpenAI-compatible API; check the "
                "host and port of the base URL")
        return ProtocolError(
            f"{head}; check the base URL: it should be the API root, usually ending in /v1")

    def chat_url(self, model: str, base_url: str) -> str:
        """The chat endpoint for `model`: `{base_url}/chat/completions`."""
        return f"{base_url}/chat/completions"

    def base_of(self, endpoint: Endpoint) -> str:
        """The endpoint's base URL; `NbchatError` saying how to set one if it has none."""
        if not endpoint.base_url:
            env = f" or set {self.base_url_env}" if self.base_url_env else ""
            raise NbchatError(f"{self.name}: no base URL; pass base_url=...{env}")
        return endpoint.base_url

    async def prepare(
        self, client: httpx.AsyncClient, request: Request, caps: Caps, endpoint: Endpoint
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The body and headers to send (NVIDIA uploads large images here)."""
        return build_body(request, caps), self.headers()

    async def open_response(
        self,
        client: httpx.AsyncClient,
        url: str,
        body: dict[str, Any],
        headers: dict[str, str],
        endpoint: Endpoint,
    ) -> httpx.Response:
        """POST the body; the response comes back with its body unread."""
        return await http.open_stream(
            client, "POST", url, provider=self.name, json_body=body, headers=headers,
            auth=http.bearer_auth(endpoint.api_key), key_env=self.key_env,
            html_error=lambda s, b: self.html_error(s, b, url),
        )

    # ---- streaming -----------------------------------------------------------------------

    async def stream(self, request: Request, endpoint: Endpoint) -> AsyncIterator[Event]:
        """POST `{base}/chat/completions` with `stream: true` and yield the SSE chunks' events
        (wire: https://platform.openai.com/docs/api-reference/chat/streaming; recorded in
        tests/wire/openai_text_usage.sse and cerebras_stream.sse). A server that refuses
        `json_schema` is asked again with `json_object` (llama.cpp's form); a 200 stream that
        closes before its first byte is asked again without streaming, to get the real
        error or the reply."""
        base = self.base_of(endpoint)
        caps = self.caps_for(request.model, base)
        if base in self._schema_fallback:
            caps = replace(caps, schema_style="json_object")
        client = http.get_client(self.transport)
        url = self.chat_url(request.model, base)
        body, headers = await self.prepare(client, request, caps, endpoint)
        try:
            response = await self.open_response(client, url, body, headers, endpoint)
        except ProviderError as exc:
            # servers without json_schema (llama.cpp's) take {"type":"json_object","schema":...}
            if not (request.options.schema is not None and caps.schema_style == "json_schema"
                    and exc.status in (400, 422, 500) and "response_format" in str(exc)):
                raise
            self._schema_fallback.add(base)
            caps = replace(caps, schema_style="json_object")
            body, headers = await self.prepare(client, request, caps, endpoint)
            response = await self.open_response(client, url, body, headers, endpoint)
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
        response = await self.open_response(client, url, body, headers, endpoint)
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
        chunks = response.aiter_bytes()
        try:
            async for raw in chunks:
                seen = True
                for event, data in parser.feed(raw):
                    if data == "[DONE]":
                        finished = True
                        await _drain(chunks)
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
                    for ev in feed(obj):
                        yield ev
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
                        for ev in feed(obj):
                            yield ev
        except httpx.HTTPError as exc:
            raise http.transport_error(exc, url, self.name) from None
        if not finished and state.finish_reason is None:
            if not seen:
                raise _EmptyStream
            bare = parser.bare_body
            if bare is not None and bare.strip():
                for ev in self._bare_body_events(bare, response.status_code, url):
                    yield ev
                return
            raise ConnectionFailed(
                f"{self.name}: the connection closed before the reply finished; try again"
            )
        if finished and state.finish_reason is None and not state.tools.calls:
            # every OpenAI-style server says why a reply ended in its last chunk; `[DONE]`
            # without it is a stream cut off, e.g. llama_cpp.server ending a running stream
            # when another request arrives (its default `--interrupt_requests true`)
            raise ConnectionFailed(
                f"{self.name} ended the stream without saying why the reply finished (no "
                "finish_reason): it was cut off. A llama_cpp.server does this to a running "
                "reply when another request arrives: start it with --interrupt_requests false "
                "or send one request at a time; try again"
            )
        for ev in state.done_events():
            yield ev

    def _bare_body_events(self, body: bytes, status: int, url: str) -> list[Event]:
        """An event stream that held no event: a whole JSON answer, which is most often an
        error object (llama.cpp server on a context overflow), else an HTML page or junk."""
        if body[:200].lstrip().lower().startswith((b"<!doctype", b"<html")):
            raise self.html_error(status, body, url)
        try:
            obj = json.loads(body)
        except ValueError:
            raise ProtocolError(
                f"{self.name} answered with an event stream holding no events: "
                f"{http.body_text(body)[:200]!r}; check the base URL and the server's logs"
            ) from None
        return parse_completion(obj, self.name)

    # ---- models --------------------------------------------------------------------------

    def model_entry(self, model: str, endpoint: Endpoint, **flags: Any) -> ModelInfo:
        """A `ModelInfo` for `provider:model` at `endpoint` (`key_set` from the endpoint)."""
        return ModelInfo(
            id=f"{self.name}:{model}",
            provider=self.name,
            key_set=endpoint.key_set,
            key_env=self.key_env,
            **flags,
        )

    def table(self, endpoint: Endpoint) -> list[ModelInfo]:
        """The capability table for models at `endpoint` (empty by default)."""
        return []

    def known_models(self) -> list[ModelInfo]:
        return self.table(self.endpoint())

    async def list_models(self, endpoint: Endpoint | None = None) -> list[ModelInfo]:
        """`GET {base}/models` (`{"data": [{"id": ...}, ...]}`) merged with the capability
        table: listed ids in server order, with table flags where the table knows them; the
        table alone if the server lists nothing. Raises `MissingKey` when the endpoint needs a
        key and has none, and the HTTP errors of `nbchat.core.http`."""
        endpoint = endpoint or self.endpoint()
        base = self.base_of(endpoint)
        endpoint.require_key()
        client = http.get_client(self.transport)
        data = await http.request_json(
            client, "GET", f"{base}/models", provider=self.name,
            headers={"Accept": "application/json"}, auth=http.bearer_auth(endpoint.api_key),
            key_env=self.key_env, html_error=lambda s, b: self.html_error(s, b, base),
        )
        items = data.get("data", []) if isinstance(data, dict) else data or []
        live = [str(m["id"]) for m in items if isinstance(m, dict) and m.get("id")]
        return merge_models(self.table(endpoint), live,
                            lambda model: self.live_entry(model, endpoint))

    def live_entry(self, model: str, endpoint: Endpoint) -> ModelInfo:
        """A listed model that the table does not know: streaming; tools and vision unknown
        (None: a listing does not say, so calls with tools or images are sent as asked)."""
        return self.model_entry(model, endpoint, tools=None, vision=None)


def merge_models(
    table: list[ModelInfo], live: list[str], entry: Callable[[str], ModelInfo]
) -> list[ModelInfo]:
    """Live ids with table flags where known; table-only models are kept only if live is empty."""
    if not live:
        return list(table)
    by_name = {m.name: m for m in table}
    return [by_name[m] if m in by_name else entry(m) for m in dict.fromkeys(live)]


@functools.lru_cache(maxsize=256)
def host_of(url: str) -> str:
    """The lower-cased host name of a URL; "" when it has none or cannot be parsed."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:  # e.g. "http://[bad": the request itself reports the bad URL
        return ""


#: seconds to wait for the end of a body after `[DONE]` (normally already received)
DRAIN_WAIT = 0.05


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read the rest of a finished body (its end is normally already here), so that httpx puts
    the connection back in its pool: a response closed before its end closes its connection,
    and the next request opens a new one (a TCP and TLS handshake). Gives up after
    `DRAIN_WAIT`."""

    async def rest() -> None:
        async for _ in chunks:
            pass

    try:  # a timer on this task, not `asyncio.wait_for`'s task per call
        await http.within(rest(), DRAIN_WAIT, asyncio.TimeoutError)
    except (asyncio.TimeoutError, httpx.HTTPError):
        pass
