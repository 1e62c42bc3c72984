"""HTTP for every cloud provider: one client per event loop, retries, timeouts, error bodies.

- `get_client(transport)` gives an `httpx.AsyncClient` bound to the running event loop (the
  kernel's loop or the bridge's private loop); a client is never shared across loops.
- `open_stream(...)` sends a request and returns the response with headers read and the body
  not yet consumed, retrying 408/409/429/5xx and connection failures before any byte of the
  body was handed on (so retries never repeat text the user saw).
- `error_from_response(...)` maps all three error body shapes (`{"error": {...}}`, flat
  `{"message": ...}`, problem-details `{"title", "detail"}`) and HTML pages to core errors.
- `transport_error(...)` turns httpx's connection/timeout errors into `ConnectionFailed`.
- `BearerAuth` / `bearer_auth(secret)` put `Authorization: Bearer <key>` on a request: the one
  place where a key's plain value is read (`nbchat.core.credentials.Secret.get`).

Timeouts come from `NBCHAT_CONNECT_TIMEOUT` / `NBCHAT_READ_TIMEOUT` (seconds) or `configure()`.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import time
import weakref
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import httpx

from .credentials import Secret
from .errors import (
    AuthenticationError,
    ConnectionFailed,
    ContextTooLong,
    NbchatError,
    ProtocolError,
    ProviderError,
    RateLimited,
    redact,
)

__all__ = [
    "RETRY_STATUSES",
    "BearerAuth",
    "RetryPolicy",
    "Timeouts",
    "bearer_auth",
    "configure",
    "error_from_response",
    "get_client",
    "is_context_error",
    "message_of",
    "open_stream",
    "parse_retry_after",
    "request_json",
    "retry_delay",
    "retry_policy",
    "sleep",
    "timeouts",
    "transport_error",
]

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529})


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    read: float = 120.0  # the longest silence allowed inside a stream

    def httpx(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.read, write=30.0, pool=30.0)


@dataclass(frozen=True)
class RetryPolicy:
    """What the official SDKs do: 2 retries, 0.5 s doubling to 8 s, honouring Retry-After."""

    max_retries: int = 2
    initial: float = 0.5
    maximum: float = 8.0
    max_retry_after: float = 60.0  # a longer Retry-After is reported, not waited for
    statuses: frozenset[int] = RETRY_STATUSES


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


_settings: dict[str, Any] = {}


def configure(
    *,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
    max_retries: int | None = None,
) -> None:
    """Change timeouts / retries for new requests (all providers)."""
    if connect_timeout is not None:
        _settings["connect"] = float(connect_timeout)
    if read_timeout is not None:
        _settings["read"] = float(read_timeout)
    if max_retries is not None:
        _settings["max_retries"] = int(max_retries)
    _clients.clear()


def timeouts() -> Timeouts:
    return Timeouts(
        connect=_settings.get("connect", _env_float("NBCHAT_CONNECT_TIMEOUT", 10.0)),
        read=_settings.get("read", _env_float("NBCHAT_READ_TIMEOUT", 120.0)),
    )


def retry_policy() -> RetryPolicy:
    if "max_retries" in _settings:
        return replace(RetryPolicy(), max_retries=_settings["max_retries"])
    return RetryPolicy()


# ---- clients ------------------------------------------------------------------------------

# loop -> {(transport, timeouts): client}; a closed loop's clients go with it
_ClientKey = tuple[httpx.AsyncBaseTransport | None, Timeouts]
_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[_ClientKey, httpx.AsyncClient]
] = weakref.WeakKeyDictionary()


def get_client(transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The client for the running loop (and transport: tests pass an `httpx.MockTransport`)."""
    loop = asyncio.get_running_loop()
    per_loop = _clients.setdefault(loop, {})
    limits = timeouts()
    key = (transport, limits)  # new timeouts take effect at once
    client = per_loop.get(key)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(
            transport=transport,
            timeout=limits.httpx(),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            headers={"User-Agent": "nbchat"},
        )
        per_loop[key] = client
    return client


# ---- credentials --------------------------------------------------------------------------


class BearerAuth(httpx.Auth):
    """httpx auth that sends `Authorization: Bearer <key>` (the OpenAI wire's scheme, used by
    every keyed provider here). The header is written straight onto the outgoing request, so
    no nbchat frame holds it in a local; httpx shows `Authorization` as `[secure]` in a
    `Headers` repr. On a redirect to another host httpx drops the header."""

    def __init__(self, secret: Secret) -> None:
        self.secret = secret

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = "Bearer " + self.secret.get()
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(Secret('***'))"


def bearer_auth(secret: Secret | None) -> BearerAuth | None:
    """`BearerAuth` for a key, or None (no header) when there is none."""
    return BearerAuth(secret) if secret is not None else None


# ---- retries ------------------------------------------------------------------------------


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms`, then `retry-after` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - time.time())


def retry_delay(attempt: int, headers: Mapping[str, str], policy: RetryPolicy) -> float:
    """Delay before retry number `attempt` (0-based)."""
    after = parse_retry_after(headers)
    if after is not None and after <= policy.max_retry_after:
        return after
    base = min(policy.initial * (2**attempt), policy.maximum)
    return base * (1 - 0.25 * random.random())


# ---- error bodies -------------------------------------------------------------------------


def _looks_html(body: bytes, content_type: str) -> bool:
    head = body[:200].lstrip().lower()
    return "html" in content_type or head.startswith((b"<!doctype", b"<html"))


def message_of(data: Any) -> str | None:
    if not isinstance(data, dict):
        return str(data) if data else None
    err = data.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or err.get("detail") or err.get("code") or err)
    if isinstance(err, str) and err:
        return err
    if data.get("message"):
        return str(data["message"])
    if data.get("detail") or data.get("title"):
        detail = data.get("detail")
        if isinstance(detail, list):  # pydantic-style 422: "body.field: problem"
            detail = "; ".join(_pydantic_item(d) for d in detail)
        title = data.get("title")
        return ": ".join(str(x) for x in (title, detail) if x)
    return None


def _pydantic_item(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    loc = ".".join(str(x) for x in item.get("loc") or ())
    msg = str(item.get("msg", item))
    return f"{loc}: {msg}" if loc else msg


_CONTEXT_WORDS = ("context length", "context_length", "maximum context", "too many tokens",
                  "context window", "prompt is too long", "exceeds the", "n_ctx")


def is_context_error(message: str, code: Any = None) -> bool:
    low = message.lower()
    return code == "context_length_exceeded" or any(w in low for w in _CONTEXT_WORDS)


def error_from_response(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    provider: str,
    key_env: str | None = None,
    html_error: Callable[[int, bytes], NbchatError] | None = None,
) -> NbchatError:
    """A core error for an HTTP error response, with the provider's own message."""
    ctype = headers.get("content-type", "")
    if _looks_html(body, ctype):
        if html_error is not None:
            return html_error(status, body)
        return ProtocolError(
            f"{provider} answered HTTP {status} with an HTML page instead of JSON; "
            "check the base URL (it should be the API root, usually ending in /v1)"
        )
    code = None
    try:
        data = json.loads(body) if body else None
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            code = data["error"].get("code")
        elif isinstance(data, dict):
            code = data.get("code")
        message = message_of(data) if data is not None else None
    except ValueError:
        message = body[:300].decode("utf-8", "replace").strip() or None
    message = redact(message or httpx.codes.get_reason_phrase(status) or "error")
    kw: dict[str, Any] = {"status": status, "provider": provider}
    if status in (401, 403):
        hint = f" (check {key_env})" if key_env else " (check the API key)"
        return AuthenticationError(message + hint, **kw)
    if status == 429:
        after = parse_retry_after(headers)
        in_body = _json_field(body, "retry_after")
        if after is None and isinstance(in_body, (int, float)):
            after = float(in_body)
        wait = f"; retry in {after:g} s" if after is not None else "; wait a moment and retry"
        return RateLimited(message + wait, retry_after=after, **kw)
    if status in (400, 413, 422) and is_context_error(message, code):
        return ContextTooLong(
            message + " (shorten the prompt or the history, or lower max_tokens)", **kw
        )
    if status == 404:
        return ProviderError(message + " (check the model id and the base URL)", **kw)
    if status == 409:  # a Cog server busy with another prediction, after the retries
        return ProviderError(message + " (the server is busy; try again when it is free)", **kw)
    return ProviderError(message, **kw)


def _json_field(body: bytes, name: str) -> Any:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data.get(name) if isinstance(data, dict) else None


def transport_error(exc: BaseException, url: str | httpx.URL, provider: str) -> ConnectionFailed:
    """A short, actionable error for a connection that failed, dropped or stalled."""
    try:
        host = httpx.URL(str(url)).host or "the host"
    except httpx.InvalidURL:
        host = "the host"
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        msg = (f"{provider}: the URL is not a valid http:// or https:// address; "
               "check the base URL")
    elif isinstance(exc, httpx.ConnectTimeout):
        msg = f"{provider}: timed out connecting to {host}; check the base URL and the network"
    elif isinstance(exc, httpx.ConnectError):
        msg = (f"{provider}: could not connect to {host}; is the server running and the "
               "base URL right?")
    elif isinstance(exc, httpx.ReadTimeout):
        msg = (f"{provider}: {host} stopped sending data (no bytes for {timeouts().read:g} s); "
               "try again, or raise the limit with nbchat.core.http.configure(read_timeout=...)")
    elif isinstance(exc, httpx.TimeoutException):
        msg = f"{provider}: request to {host} timed out; try again"
    elif isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        msg = f"{provider}: the connection to {host} dropped before the reply finished; try again"
    else:
        msg = f"{provider}: request to {host} failed ({type(exc).__name__}); try again"
    return ConnectionFailed(msg)


# ---- sending ------------------------------------------------------------------------------


async def sleep(seconds: float) -> None:
    """Wait between retries or polls; a seam: tests record the delays instead of waiting."""
    await asyncio.sleep(seconds)


async def open_stream(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    provider: str,
    json_body: Any = None,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    auth: httpx.Auth | None = None,
    key_env: str | None = None,
    policy: RetryPolicy | None = None,
    html_error: Callable[[int, bytes], NbchatError] | None = None,
    accept_status: Callable[[int], bool] | None = None,
) -> httpx.Response:
    """Send and return the response (body unread); the caller must `aclose()` it.

    `auth` (e.g. `bearer_auth(endpoint.api_key)`) adds the credentials; `key_env` names the
    variable a 401/403 message tells the user to check. Retries retryable statuses and
    connection failures (`policy`, default `retry_policy()`); raises `ProviderError` and its
    subclasses for an HTTP error (`error_from_response`), `ConnectionFailed` for a transport
    failure. `accept_status` lets a caller take a non-2xx status itself (e.g. NVIDIA's 202).
    """
    policy = policy or retry_policy()
    if json_body is not None:
        content = json.dumps(json_body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
    attempt = 0
    while True:
        try:
            request = client.build_request(method, url, content=content, headers=headers)
            response = await client.send(request, stream=True, auth=auth)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadTimeout,
                httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError,
                httpx.PoolTimeout) as exc:
            if attempt < policy.max_retries:
                await sleep(retry_delay(attempt, {}, policy))
                attempt += 1
                continue
            raise transport_error(exc, url, provider) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # e.g. a bad URL: not retried
            raise transport_error(exc, url, provider) from None
        status = response.status_code
        if status < 300 or (accept_status is not None and accept_status(status)):
            return response
        try:
            body = await response.aread()
        except httpx.HTTPError:
            body = b""
        finally:
            await response.aclose()
        after = parse_retry_after(response.headers)
        if (status in policy.statuses and attempt < policy.max_retries
                and (after is None or after <= policy.max_retry_after)):
            await sleep(retry_delay(attempt, response.headers, policy))
            attempt += 1
            continue
        raise error_from_response(
            status, body, response.headers, provider=provider, key_env=key_env,
            html_error=html_error,
        )


async def request_json(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    provider: str,
    **kw: Any,
) -> Any:
    """A small JSON request/response (model listing, asset creation), with the same retries."""
    html_error = kw.get("html_error")
    response = await open_stream(client, method, url, provider=provider, **kw)
    try:
        body = await response.aread()
    except httpx.HTTPError as exc:
        raise transport_error(exc, url, provider) from None
    finally:
        await response.aclose()
    if not body:
        return None
    if _looks_html(body, response.headers.get("content-type", "")):
        if html_error is not None:
            raise html_error(response.status_code, body)
        raise ProtocolError(
            f"{provider} answered with an HTML page instead of JSON; check the base URL "
            "(it should be the API root, usually ending in /v1)"
        )
    try:
        return json.loads(body)
    except ValueError:
        raise ProtocolError(
            f"{provider} sent a reply that is not JSON: {body[:80]!r}"
        ) from None
