"""HTTP for every cloud provider: one client per event loop, retries, timeouts, error bodies.

- `get_client(transport)` gives an `httpx.AsyncClient` bound to the running event loop (the
  kernel's loop or the bridge's private loop); a client is never shared across loops. Inside
  `async with own_pool():` a task gets clients of its own instead (`nbchat.map`'s workers).
- `open_stream(...)` sends a request and returns the response with headers read and the body
  not yet consumed, retrying 408/409/429/5xx and connection failures before any byte of the
  body was handed on (so retries never repeat text the user saw). Each retry wait is shown as
  the turn's status ("rate limited (HTTP 429), retrying in 20 s") and fits the total budget.
- `error_from_response(...)` maps all three error body shapes (`{"error": {...}}`, flat
  `{"message": ...}`, problem-details `{"title", "detail"}`) and HTML pages to core errors;
  a long body is shown as its head (redacted first) and kept whole on the error's `.body`.
- `transport_error(...)` turns httpx's connection/timeout errors into `ConnectionFailed`.
- `BearerAuth` / `bearer_auth(secret)` put `Authorization: Bearer <key>` on a request: the one
  place where a key's plain value is read (`nbchat.core.credentials.Secret.get`).

Limits (connect, first byte, idle, total) are described in `nbchat.core.waits`; set them with
`configure(...)` (for all providers or one), the environment, or per call (`timeout=`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import email.utils
import functools
import ipaddress
import json
import random
import ssl
import time
import warnings
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

import httpx

from . import waits
from .credentials import Secret
from .errors import (
    AuthenticationError,
    ConnectionFailed,
    ContextTooLong,
    NbchatError,
    ProtocolError,
    ProviderError,
    RateLimited,
    TimedOut,
    forget_locals,
    redact,
    shorten,
)
from .waits import Timeouts

__all__ = [
    "RETRY_STATUSES",
    "BearerAuth",
    "OWN_LIMITS",
    "SHARED_LIMITS",
    "RetryPolicy",
    "Timeouts",
    "bearer_auth",
    "is_loopback",
    "same_site",
    "configure",
    "error_from_response",
    "get_client",
    "is_context_error",
    "message_of",
    "open_stream",
    "own_pool",
    "parse_retry_after",
    "request_json",
    "retry_delay",
    "retry_policy",
    "sleep",
    "timeouts",
    "transport_error",
]

T = TypeVar("T")

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529})
#: characters of a provider's error text shown in the message; the whole body stays on `.body`
BODY_HEAD = 500
#: write and pool limits, which users have no reason to tune
WRITE_TIMEOUT = POOL_TIMEOUT = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    """What the official SDKs do: 2 retries, 0.5 s doubling to 8 s, honouring Retry-After."""

    max_retries: int = 2
    initial: float = 0.5
    maximum: float = 8.0
    max_retry_after: float = 60.0  # a longer Retry-After is reported, not waited for
    statuses: frozenset[int] = RETRY_STATUSES


_settings: dict[str, Any] = {}  # "max_retries": int


def configure(
    *,
    connect_timeout: float | None = None,
    first_byte_timeout: float | None = None,
    idle_timeout: float | None = None,
    total_timeout: float | None = None,
    read_timeout: float | None = None,
    max_retries: int | None = None,
    provider: str | None = None,
) -> None:
    """Change limits (seconds) and retries for new requests, for all providers or one.

    `read_timeout` is the older name for first_byte_timeout and idle_timeout together.
    Raises `BadOption` for a limit that is not a positive number.
    """
    spec: dict[str, float] = {}
    for name, value in (("connect", connect_timeout), ("first_byte", first_byte_timeout),
                        ("idle", idle_timeout), ("total", total_timeout),
                        ("first_byte", read_timeout), ("idle", read_timeout)):
        if value is not None:
            spec.setdefault(name, value)
    waits.configure(waits.parse_timeout(spec), provider)
    if max_retries is not None:
        _settings["max_retries"] = int(max_retries)


def timeouts(provider: str | None = None) -> Timeouts:
    """The configured limits for `provider` (or for all), before any per-call `timeout=`."""
    return waits.configured(provider)


def retry_policy() -> RetryPolicy:
    """The policy for new requests: `RetryPolicy()` with `configure(max_retries=...)` applied."""
    if "max_retries" in _settings:
        return replace(RetryPolicy(), max_retries=_settings["max_retries"])
    return RetryPolicy()


def httpx_timeout(limits: Timeouts) -> httpx.Timeout:
    """httpx's own limits for one request. Its read limit is a backstop for a body that goes
    silent outside a turn; in a turn the idle limit is enforced on whole records."""
    reads = [x for x in (limits.first_byte, limits.idle) if x is not None]
    return httpx.Timeout(connect=limits.connect, read=max(reads) if reads else None,
                         write=WRITE_TIMEOUT, pool=POOL_TIMEOUT)


# ---- clients ------------------------------------------------------------------------------

#: the shared client's pool: connections at once, and idle ones kept open for the next request
SHARED_LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=16)
#: an own pool's (`own_pool()`): its task sends one request at a time, so a spare is plenty
OWN_LIMITS = httpx.Limits(max_connections=2, max_keepalive_connections=2)

_Clients = dict[httpx.AsyncBaseTransport | None, httpx.AsyncClient]
# loop -> {transport: client}; a closed loop's clients go with it. Limits are set per request.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Clients] = \
    weakref.WeakKeyDictionary()
# the loop and clients of the `own_pool()` block the running task is in (None: outside any);
# another loop (a plain tool's `nbchat.chat` in a worker thread sees this context) uses its own
_own: contextvars.ContextVar[tuple[asyncio.AbstractEventLoop, _Clients] | None] = \
    contextvars.ContextVar("nbchat_own_pool", default=None)


def get_client(transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The client for the running loop (and transport: tests pass an `httpx.MockTransport`).

    Inside `own_pool()`, the block's own client for that transport instead."""
    own = _own.get()
    loop = asyncio.get_running_loop()
    if own is not None and own[0] is loop:
        clients = own[1]
        client = clients.get(transport)
        if client is None or client.is_closed:
            client = clients[transport] = _new_client(transport, OWN_LIMITS)
        return client
    per_loop = _clients.setdefault(loop, {})
    client = per_loop.get(transport)
    if client is None or client.is_closed:
        client = per_loop[transport] = _new_client(transport, SHARED_LIMITS)
    return client


@contextlib.asynccontextmanager
async def own_pool() -> AsyncIterator[None]:
    """A connection pool of the running task's own for the block (`async with own_pool():`):
    `get_client` there, in this task and the tasks it starts, gives clients whose pool holds at
    most `OWN_LIMITS` connections; they are closed when the block ends. Outside the block
    nothing changes.

    For a worker that sends many requests one after another while others do the same
    (`nbchat.map`'s workers): with one shared pool, httpcore (1.0.9) looks at every connection
    for every request, and above `max_keepalive_connections` it closes each connection that
    becomes idle (it counts the busy ones as idle), so each request opens a new one. A pool per
    worker keeps its connection alive across the worker's requests and stays small.
    """
    own: _Clients = {}
    token = _own.set((asyncio.get_running_loop(), own))
    try:
        yield
    finally:
        _own.reset(token)
        for client in own.values():
            await client.aclose()


class Gate(Protocol):
    """The slot one caller's requests take while they are on the wire (`gated()`): `enter()`
    waits for it (a no-op while the caller holds it; it may raise, e.g. when a row's time ran
    out), `leave()` gives it back."""

    async def enter(self) -> None:
        """Wait for the slot (at once when the caller holds it already)."""

    async def leave(self) -> None:
        """Give the slot back (nothing when the caller holds none)."""


# the task of the `gated()` block and its gate (None: requests go when sent). Only that task's
# requests take the slot: a tool's own `nbchat.chat` (another task, or a worker thread's loop)
# sees this context too, and is not one of the row's requests
_gate: contextvars.ContextVar[tuple[asyncio.Task[Any], Gate] | None] = \
    contextvars.ContextVar("nbchat_gate", default=None)


@contextlib.contextmanager
def gated(gate: Gate) -> Iterator[None]:
    """In the block, a request of this task takes the slot of `gate` just before it is sent:
    a streamed response (`open_stream`'s) gives it back when it is closed, as does a failed
    send; a `request_json` exchange (a prediction created, then polled) keeps it for what follows.
    So the slots bound the exchanges on the wire, not the work around them: `nbchat.map`
    gives each row a gate on its limiter, and builds the next rows' requests, and handles the
    finished replies, while other rows hold the slots."""
    task = asyncio.current_task()
    assert task is not None, "gated() is for a running task"
    token = _gate.set((task, gate))
    try:
        yield
    finally:
        _gate.reset(token)


class _Leaving(httpx.AsyncByteStream):
    """A response body that gives its request's slot back when it is closed."""

    def __init__(self, stream: httpx.SyncByteStream | httpx.AsyncByteStream, gate: Gate) -> None:
        assert isinstance(stream, httpx.AsyncByteStream)
        self._stream, self._gate, self._left = stream, gate, False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if not self._left:
                self._left = True
                await self._gate.leave()


def _new_client(transport: httpx.AsyncBaseTransport | None,
                limits: httpx.Limits) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, timeout=httpx_timeout(timeouts()),
                             limits=limits, verify=_ssl_context(),
                             headers={"User-Agent": "nbchat"})


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """httpx's default context (certifi's CAs, or SSL_CERT_FILE / SSL_CERT_DIR), made once:
    making it reads the CA file (about 20 ms), and an own pool's client is made per block."""
    return httpx.create_ssl_context()


# ---- credentials --------------------------------------------------------------------------


class BearerAuth(httpx.Auth):
    """httpx auth that sends `Authorization: Bearer <key>` (the OpenAI wire's scheme, used by
    every keyed provider here). The header is written straight onto the outgoing request, so
    no nbchat frame holds it in a local; httpx shows `Authorization` as `[secure]` in a
    `Headers` repr. On a redirect to another host httpx drops the header.

    `only(url)`, when given, decides which URLs may carry the key (a provider whose answers
    name further URLs, e.g. Replicate's `urls.stream`, sends it to its own hosts only). A key
    about to go over plain `http://` to a host that is not loopback gets a one-line warning
    (once per host), since anyone on the way can read it."""

    def __init__(self, secret: Secret, only: Callable[[httpx.URL], bool] | None = None) -> None:
        self.secret = secret
        self.only = only

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.only is None or self.only(request.url):
            if request.url.scheme == "http":
                warn_plain_http(request.url.host)
            request.headers["Authorization"] = "Bearer " + self.secret.get()
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(Secret('***'))"


def bearer_auth(secret: Secret | None,
                only: Callable[[httpx.URL], bool] | None = None) -> BearerAuth | None:
    """`BearerAuth` for a key (sent only where `only(url)` allows, if given), or None (no
    header) when there is none."""
    return BearerAuth(secret, only) if secret is not None else None


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine (localhost, 127.0.0.0/8, ::1)."""
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(
            ".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_warned_hosts: set[str] = set()


def warn_plain_http(host: str) -> None:
    """One line, once per host, when a key is about to travel unencrypted off this machine."""
    if is_loopback(host) or host in _warned_hosts:
        return
    _warned_hosts.add(host)
    warnings.warn(
        f"nbchat: an API key is being sent over plain http:// to {host}, where anyone on the "
        "network can read it; use an https:// base URL", UserWarning, stacklevel=2)


def same_site(base_url: str, *, https_subdomains: bool = False) -> Callable[[httpx.URL], bool]:
    """A test for URLs that may carry the key of the API at `base_url`: the same scheme, host
    and port; with `https_subdomains`, also https hosts of its own domain (`stream.replicate.com`
    for `api.replicate.com`: the domain is the host without its first label)."""
    api = httpx.URL(base_url)
    labels = api.host.split(".")
    domain = ".".join(labels[1:]) if https_subdomains and len(labels) >= 3 and \
        not _is_ip(api.host) else None

    def allowed(url: httpx.URL) -> bool:
        if (url.scheme, url.host, url.port) == (api.scheme, api.host, api.port):
            return True
        return domain is not None and url.scheme == "https" and (
            url.host == domain or url.host.endswith("." + domain))

    return allowed


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


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
    """The human message in a parsed error body, or None when there is none.

    Reads `{"error": {"message" | "detail" | "code"}}`, `{"error": "text"}`, flat `{"message"}`
    (Cerebras) and problem-details `{"title", "detail"}` (NVIDIA and Replicate, as in
    tests/wire/nvidia_genai_401.json and replicate_401.json); a pydantic-style `detail` list (a
    Cog server's 422) becomes `loc: msg; ...`. Anything else that is not a dict becomes its str.
    """
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
    """Whether an error means the prompt does not fit the context window: the OpenAI code
    `context_length_exceeded`, or the wording llama.cpp, vLLM and others use (`n_ctx`,
    `maximum context`, `context length`, ...).
    """
    low = message.lower()
    return code == "context_length_exceeded" or any(w in low for w in _CONTEXT_WORDS)


def body_text(body: bytes) -> str:
    """An error body as text, keys redacted (before any cut, so no key is cut in half)."""
    return redact(body.decode("utf-8", "replace"))


def error_from_response(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    provider: str,
    key_env: str | None = None,
    html_error: Callable[[int, bytes], NbchatError] | None = None,
) -> NbchatError:
    """A core error for an HTTP error response, with the provider's own message.

    The message shows at most `BODY_HEAD` characters of the provider's text; the whole body
    (redacted) is kept on the error's `.body`."""
    ctype = headers.get("content-type", "")
    if _looks_html(body, ctype):
        if html_error is not None:
            return html_error(status, body)
        return ProtocolError(
            f"{provider} answered HTTP {status} with an HTML page instead of JSON; "
            "check the base URL (it should be the API root, usually ending in /v1)"
        )
    code = None
    text = body_text(body)
    try:
        data = json.loads(body) if body else None
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            code = data["error"].get("code")
        elif isinstance(data, dict):
            code = data.get("code")
        message = message_of(data) if data is not None else None
    except ValueError:
        message = text.strip() or None
    message = shorten(redact(message or httpx.codes.get_reason_phrase(status) or "error"),
                      BODY_HEAD, "body")
    kw: dict[str, Any] = {"status": status, "provider": provider, "body": text}
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


def bare_body_error(body: bytes, provider: str, status: int = 200) -> NbchatError:
    """An event stream that held no event at all: what the server sent instead, as an error
    (a JSON error object becomes the server's message; HTML or other text is shown in part)."""
    if _looks_html(body, ""):
        return ProtocolError(
            f"{provider} answered with an HTML page instead of an event stream; check the "
            "base URL")
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    message = message_of(data) if isinstance(data, dict) else None
    if message is None:
        return ProtocolError(
            f"{provider} answered with an event stream holding no events: "
            f"{body_text(body)[:200]!r}; check the base URL and the server's logs")
    err = data.get("error") if isinstance(data, dict) else None
    code = err.get("code") if isinstance(err, dict) else None
    text = shorten(redact(message), BODY_HEAD, "body")
    kw: dict[str, Any] = {"provider": provider, "body": body_text(body),
                          "status": code if isinstance(code, int) else None}
    if is_context_error(text, code):
        return ContextTooLong(text + " (shorten the prompt or the history, or lower max_tokens)",
                              **kw)
    return ProviderError(text, **kw)


def _json_field(body: bytes, name: str) -> Any:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data.get(name) if isinstance(data, dict) else None


def transport_error(
    exc: BaseException, url: str | httpx.URL, provider: str, *, attempts: int = 1,
    limits: Timeouts | None = None,
) -> ConnectionFailed:
    """A short, actionable error for a connection that failed, dropped or stalled."""
    try:
        host = httpx.URL(str(url)).host or "the host"
    except httpx.InvalidURL:
        host = "the host"
    limits = limits or waits.limits(provider)
    tries = f" ({attempts} attempts)" if attempts > 1 else ""
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return ConnectionFailed(f"{provider}: the URL is not a valid http:// or https:// "
                                "address; check the base URL")
    if isinstance(exc, httpx.ConnectTimeout):
        return TimedOut(
            f"{provider}: could not connect to {host} within {limits.connect:g} s "
            f"(connect timeout){tries}; check the base URL and the network",
            limit="connect", seconds=limits.connect or 0)
    if isinstance(exc, httpx.ConnectError):
        msg = (f"{provider}: could not connect to {host}{tries}; is the server running and "
               "the base URL right?")
    elif isinstance(exc, httpx.ReadTimeout):
        read = httpx_timeout(limits).read or 0
        return TimedOut(
            f"{provider}: {host} stopped sending data (nothing for {read:g} s); try again, or "
            "allow longer with timeout={'idle': ...}", limit="idle", seconds=read)
    elif isinstance(exc, httpx.TimeoutException):
        msg = f"{provider}: request to {host} timed out{tries}; try again"
    elif isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        msg = (f"{provider}: the connection to {host} dropped before the reply finished"
               f"{tries}; try again")
    else:
        msg = f"{provider}: request to {host} failed ({type(exc).__name__}); try again"
    return ConnectionFailed(msg)


def first_byte_error(url: str, provider: str, seconds: float) -> TimedOut:
    """The `TimedOut` (limit `first_byte`) for a request to `url` that got no byte back within
    `seconds` of being sent; its message says how to allow longer.
    """
    host = httpx.URL(url).host or "the host"
    return TimedOut(
        f"{provider}: no answer from {host} within {seconds:g} s of sending the request "
        "(first-byte timeout; not retried). Try again, or allow longer with "
        "timeout={'first_byte': ...} or %config ChatMagics.first_byte_timeout",
        limit="first_byte", seconds=seconds)


# ---- sending ------------------------------------------------------------------------------


async def sleep(seconds: float) -> None:
    """Wait between retries or polls; a seam: tests record the delays instead of waiting."""
    await asyncio.sleep(seconds)


async def retry_wait(reason: str, delay: float) -> None:
    """Wait `delay` s before a retry, shown as the turn's status ("..., retrying in 3 s")."""
    waits.retrying(reason, delay)
    await sleep(delay)


async def within(aw: Awaitable[T], seconds: float, error: Callable[[], BaseException]) -> T:
    """`await aw`, or raise `error()` after `seconds`.

    Not `asyncio.wait_for`: before Python 3.12 it can swallow a cancellation (a Stop) that
    arrives as the awaited request completes. Here the timer cancels this task itself, and
    only a cancellation of its own making becomes the error."""
    task = asyncio.current_task()
    assert task is not None
    fired = False

    def fire() -> None:
        nonlocal fired
        fired = True
        task.cancel()

    handle = asyncio.get_running_loop().call_later(seconds, fire)
    try:
        return await aw
    except asyncio.CancelledError:
        uncancel = getattr(task, "uncancel", None)  # Python 3.11+
        if not fired or (uncancel is not None and uncancel() > 0):
            raise  # someone else cancelled (a Stop): that wins
        raise error() from None
    finally:
        handle.cancel()


def fits_budget(delay: float) -> bool:
    """Whether a wait of `delay` s leaves time in the turn's total budget for another try."""
    w = waits.current()
    left = w.remaining() if w is not None else None
    return left is None or delay < left


_RETRIED_TRANSPORT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError,
                      httpx.ReadError, httpx.WriteError, httpx.PoolTimeout)


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
    keep_slot: bool = False,
) -> httpx.Response:
    """Send and return the response (body unread); the caller must `aclose()` it.

    `auth` (e.g. `bearer_auth(endpoint.api_key)`) adds the credentials; `key_env` names the
    variable a 401/403 message tells the user to check. Retries retryable statuses and
    connection failures (`policy`, default `retry_policy()`) within the turn's total budget;
    raises `ProviderError` and its subclasses for an HTTP error (`error_from_response`),
    `ConnectionFailed` for a transport failure (`TimedOut` when a limit ran out).
    `accept_status` lets a caller take a non-2xx status itself (e.g. NVIDIA's 202).
    Inside `gated()`, the request waits for the gate's slot; closing the response gives it
    back unless `keep_slot` (see `gated`).
    """
    policy = policy or retry_policy()
    limits = waits.limits(provider)
    if json_body is not None:
        content = json.dumps(json_body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
    attempt = 0
    held = _gate.get()
    gate = held[1] if held is not None and held[0] is asyncio.current_task() else None
    while True:
        try:
            request = client.build_request(method, _url(url), content=content,
                                           headers=headers, timeout=httpx_timeout(limits))
            if gate is not None:
                waits.waiting("a free slot")  # no idle limit while others' requests run
                await gate.enter()
            waits.waiting()
            try:
                first_byte = limits.first_byte
                if first_byte is None:
                    response = await client.send(request, stream=True, auth=auth)
                else:
                    response = await within(client.send(request, stream=True, auth=auth),
                                            first_byte, functools.partial(
                                                first_byte_error, url, provider, first_byte))
            except BaseException:
                if gate is not None:
                    await gate.leave()
                raise
            if gate is not None and not keep_slot:
                if response.is_closed:  # read whole already (a mock transport's answer)
                    await gate.leave()
                else:
                    response.stream = _Leaving(response.stream, gate)
        except _RETRIED_TRANSPORT as exc:
            delay = retry_delay(attempt, {}, policy)
            if attempt < policy.max_retries and fits_budget(delay):
                await retry_wait(f"{provider}: {_short_transport(exc)}", delay)
                attempt += 1
                continue
            forget_locals(exc)  # httpcore's frames hold the request, Authorization included
            raise transport_error(exc, url, provider, attempts=attempt + 1,
                                  limits=limits) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # e.g. a bad URL: not retried
            forget_locals(exc)
            raise transport_error(exc, url, provider, limits=limits) from None
        status = response.status_code
        if status < 300 or (accept_status is not None and accept_status(status)):
            waits.receiving()
            return response
        # built by a helper, and the response let go of, so no local here holds the body (a
        # server may echo the key in it, and tools that print a traceback's locals show it)
        error = await _error_of(response, provider, key_env, html_error)
        answer_headers = response.headers
        del response
        after = parse_retry_after(answer_headers)
        if (status in policy.statuses and attempt < policy.max_retries
                and (after is None or after <= policy.max_retry_after)):
            delay = retry_delay(attempt, answer_headers, policy)
            if fits_budget(delay):
                await retry_wait(_retry_reason(provider, status), delay)
                attempt += 1
                continue
        if attempt:  # "retry in 1 s" alone reads as if nobody had
            error.append(f"(nbchat tried {attempt + 1} times)")
        raise error


@functools.lru_cache(maxsize=256)
def _url(url: str) -> httpx.URL:
    """`url` parsed, once: a provider sends many requests to the same few URLs, and parsing
    one is a third of what building a request costs. (`httpx.URL` is immutable.)"""
    return httpx.URL(url)


async def _error_of(response: httpx.Response, provider: str, key_env: str | None,
                    html_error: Callable[[int, bytes], NbchatError] | None) -> NbchatError:
    """Read an error response's body, close it, and make the core error for it."""
    try:
        body = await response.aread()
    except httpx.HTTPError:
        body = b""
    finally:
        await response.aclose()
    return error_from_response(response.status_code, body, response.headers,
                               provider=provider, key_env=key_env, html_error=html_error)


def _retry_reason(provider: str, status: int) -> str:
    if status == 429:
        return f"{provider}: rate limited (HTTP 429)"
    if status == 409:
        return f"{provider}: busy (HTTP 409)"
    return f"{provider}: HTTP {status}"


def _short_transport(exc: BaseException) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect timed out"
    if isinstance(exc, httpx.ConnectError):
        return "could not connect"
    return "the connection dropped"


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
    response = await open_stream(client, method, url, provider=provider, keep_slot=True, **kw)
    try:
        body = await response.aread()
    except httpx.HTTPError as exc:
        forget_locals(exc)
        raise transport_error(exc, url, provider) from None
    finally:
        await response.aclose()
        waits.waiting()  # between requests (polls) nothing streams: no idle limit
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
