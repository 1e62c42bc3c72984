"""Replay: answer a request from the local log (nbchat.core.log) instead of the provider.

Modes, from `set_mode()` (what `%chat_replay` calls) or else `NBCHAT_REPLAY`:
- `off` (default): every request goes to its provider.
- `on`: a request equal to a logged one is answered from the log; any other goes to the
  provider (and is logged).
- `strict`: nothing goes to a provider. A request that is not in the log raises `ReplayMiss`,
  naming the model and the head of the prompt. When a request was only ever logged failing,
  its error is raised again, as recorded (`on` mode sends such requests again instead).

Equal means equal canonical form (`canonical`): model (`provider:model`), endpoint (the base
URL, credentials removed), messages (text, images by content or, when fetched from a URL, by
URL; tool calls and results) and the options that change the answer (every `Options` field
that differs from its default; tools by their schema). Never the key. Its sha256 is the
request hash. Of several logged replies the newest finished one answers.

A replayed turn yields the same events as the logged one (text deltas cut as they arrived,
reasoning, tool calls, images, then `Done`), at once or, with `paced`, at the recorded times.
Its `Reply` carries the recorded time to first token and duration, `replayed=True` (the footer
says "replayed") and the log id it came from. Model listings (`nbchat.models`, `%models`) are
replayed the same way, from the newest listing logged for the provider and endpoint.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Container
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from . import log as _log
from .errors import NbchatError, ProviderError, ReplayMiss, UsageError, redact
from .types import (
    Done,
    Event,
    ImageEvent,
    ImagePart,
    ModelInfo,
    Options,
    ReasoningDelta,
    RefusalDelta,
    Request,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    Usage,
)

if TYPE_CHECKING:  # pragma: no cover
    from .credentials import Endpoint
    from .provider import Provider

MODES = ("off", "on", "strict")
#: bump when the canonical form changes meaning (old logs then stop matching, by design)
CANONICAL_VERSION = 1
#: while replaying at once, hand the event loop back every this many events
YIELD_EVERY = 256

_mode: str | None = None  # set_mode(); None: NBCHAT_REPLAY decides
_paced = False


def set_mode(mode: str | None, *, paced: bool = False) -> None:
    """`"off"`, `"on"` or `"strict"` for this process (None: back to `NBCHAT_REPLAY`).

    `paced`: replay at the recorded times instead of at once. Raises UsageError otherwise."""
    global _mode, _paced
    if mode is not None and mode not in MODES:
        raise UsageError(f"replay mode {mode!r}: use on, strict or off")
    _mode, _paced = mode, paced


def mode() -> str:
    """The replay mode in force: `set_mode()`'s, else `NBCHAT_REPLAY`'s, else "off"."""
    if _mode is not None:
        return _mode
    value = os.environ.get("NBCHAT_REPLAY", "").strip().lower()
    if value in ("", "0", "false", "no"):
        return "off"
    if value in ("1", "true", "yes"):
        return "on"
    if value not in MODES:
        raise UsageError(f"NBCHAT_REPLAY={value!r}: use on, strict or off")
    return value


def paced() -> bool:
    """Whether replays keep the recorded times (`set_mode(..., paced=True)`), not run at once."""
    return _paced


# ---- the canonical request ------------------------------------------------------------------


def public_url(url: str | None) -> str | None:
    """A base URL as logged and compared: without user, password or fragment (keys never
    kept, nor any text that looks like one)."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        parts = parts._replace(netloc=netloc)
    return redact(urlunsplit(parts._replace(fragment="")))


@functools.cache
def _option_defaults() -> tuple[tuple[str, Any], ...]:
    return tuple((f.name, f.default_factory() if f.default_factory is not dataclasses.MISSING
                  else f.default) for f in dataclasses.fields(Options))


_last_options: tuple[Options, dict[str, Any]] | None = None


def options_json(options: Options) -> dict[str, Any]:
    """The options that differ from their defaults, as JSON (tools by their OpenAI schema).
    Options are frozen, so the JSON of the last one asked for is kept (a turn asks twice: its
    request hash and its log record; `nbchat.map` asks for the same options every row); the
    dict returned is shared: read it, do not change it."""
    global _last_options
    last = _last_options
    if last is not None and last[0] is options:
        return last[1]
    out: dict[str, Any] = {}
    for name, default in _option_defaults():
        value = getattr(options, name)
        if value == default:
            continue
        if name == "tools":
            value = [t.to_openai() for t in value]
        out[name] = value
    normalized: dict[str, Any] = json.loads(_log.dumps(out))
    _last_options = (options, normalized)
    return normalized


def canonical(model: str, endpoint: str | None, request: Request) -> dict[str, Any]:
    """The request as compared for replay: model, endpoint, messages and options, as JSON."""
    return {
        "v": CANONICAL_VERSION,
        "model": model,
        "endpoint": endpoint,
        "messages": [_log.message_json(m, canonical=True) for m in request.messages],
        "options": options_json(request.options),
    }


def request_hash(model: str, endpoint: str | None, request: Request) -> str:
    """sha256 (hex) of the canonical request, as JSON with sorted keys."""
    text = json.dumps(canonical(model, endpoint, request), sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"), default=_log._json_default)
    return _log.sha256(text.encode())


def prompt_head(request: Request, width: int = 60) -> str:
    """The last user message's text, whitespace collapsed, cut to `width` characters (ending
    in `…`): how a `ReplayMiss` message names the request.
    """
    last = next((m for m in reversed(request.messages) if m.role == "user"), None)
    text = " ".join((last.text if last else "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


# ---- finding a logged reply -------------------------------------------------------------------


def find(model: str, endpoint: str | None, request: Request, key: str, *,
         reuse: bool = False, answered: Container[str] | None = None) -> _log.Logged | None:
    """The logged reply that answers this request (`key`: its hash) under the current mode, or
    None to go to the provider. `reuse`: in mode off, answer as mode on does (`nbchat.map`
    resumes this way: a row whose request has a logged reply is not sent again).
    `answered`: the hashes known to have a finished reply (`Log.answered`); outside strict
    mode a key not among them is a miss without a look in the log (a map's rows).

    In strict mode, a request only ever logged failing gets its newest failure (its events end
    by raising the recorded error); one never logged raises ReplayMiss, as does a log that
    cannot be read."""
    current = mode()
    if current == "off" and reuse:
        current = "on"
    if current == "off":
        return None
    strict = current == "strict"
    if not strict and answered is not None and key not in answered:
        return None
    lg = _log.current()
    if lg is None:
        if strict:
            raise ReplayMiss("strict replay needs the log, but NBCHAT_LOG=off; set NBCHAT_LOG "
                             "to the log that holds the replies")
        return None
    try:
        found = lg.find(key)
    except _log.LogUnusable as exc:
        if strict:
            raise ReplayMiss(f"strict replay cannot read the log: {exc.message}") from None
        lg.warn(f"{exc.message}; replay is off until it can be read")
        return None
    for entry in found:
        if entry.error_type is None and not entry.interrupted:
            return entry
    if strict:
        failed = next((e for e in found if e.error_type is not None), None)
        if failed is not None:
            return failed
        where = f" at {endpoint}" if endpoint else ""
        raise ReplayMiss(
            f"strict replay: no logged reply for {model}{where} to \"{prompt_head(request)}\" "
            f"(request {key[:12]}). Run it once with NBCHAT_REPLAY=on or off to log it, or "
            "check that the model, endpoint, prompt and options are the recorded ones."
        )
    return None


def with_logged_images(request: Request, entry: _log.Logged) -> Request:
    """The request with its URL-named images (not fetched under replay) taken from the log."""
    lg = _log.current()
    if lg is None or not request.messages:
        return request
    by_url: dict[str, ImagePart] = {}
    for p in entry.messages[-1].get("content", ()):
        if p["type"] == "image" and p.get("url"):
            img = lg.blob(p["sha256"])
            by_url[p["url"]] = ImagePart(img.data, img.mime, url=p["url"])
    last = request.messages[-1]
    parts = tuple(by_url.get(p.url, p) if isinstance(p, ImagePart) and p.url else p
                  for p in last.parts)
    return dataclasses.replace(
        request, messages=(*request.messages[:-1], dataclasses.replace(last, parts=parts)))


# ---- replaying its events ---------------------------------------------------------------------


async def events(entry: _log.Logged, *, paced: bool = False) -> AsyncIterator[Event]:
    """The logged events again, then the logged error (if the reply failed)."""
    lg = _log.current()
    text, chunks, stamps = entry.text, entry.chunks, entry.stamps
    logprobs = entry.logprobs
    start = time.perf_counter()
    pos = ci = k = 0

    async def wait(k: int) -> None:
        if paced and k < len(stamps):
            delay = stamps[k] - (time.perf_counter() - start)
            if delay > 0:
                await asyncio.sleep(delay)
        elif k % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)

    for item in entry.events:
        if isinstance(item, int):
            for _ in range(item):
                n = chunks[ci]
                piece = text[pos: pos + n]
                lp = tuple(logprobs[ci]) if logprobs else ()
                pos += n
                ci += 1
                await wait(k)
                k += 1
                yield TextDelta(piece, lp)
            continue
        await wait(k)
        k += 1
        kind = item[0]
        if kind == "reasoning":
            yield ReasoningDelta(item[1])
        elif kind == "refusal":
            yield RefusalDelta(item[1])
        elif kind == "tool":
            yield ToolCallEvent(ToolCall(item[1], item[2], item[3]))
        elif kind == "image":
            if lg is None:
                raise ReplayMiss("the logged reply has an image, but NBCHAT_LOG=off")
            img = lg.blob(item[1])
            yield ImageEvent(ImagePart(img.data, item[2], url=item[3]))
        elif kind == "done":
            yield Done(item[1], Usage(item[2], item[3]))
    if entry.error_type is not None:
        raise logged_error(entry)


def logged_error(entry: _log.Logged) -> NbchatError:
    """The recorded error again: same class (from nbchat.core.errors), message and attributes."""
    from . import errors

    cls = getattr(errors, entry.error_type or "", None)
    if not (isinstance(cls, type) and issubclass(cls, NbchatError)):
        cls = NbchatError
    exc = cls.__new__(cls)
    Exception.__init__(exc, entry.error or "")
    for name, value in entry.error_attrs.items():
        setattr(exc, name, value)
    if isinstance(exc, ProviderError):
        exc.partial_text = ""
    return exc


# ---- model listings ---------------------------------------------------------------------------


async def listing(provider: Provider, endpoint: Endpoint,
                  live: Callable[[], Awaitable[list[ModelInfo]]]) -> list[ModelInfo]:
    """A provider's model list at `endpoint`: from the log under replay, else `live()` (and
    then logged)."""
    current = mode()
    lg = _log.current()
    url = public_url(endpoint.base_url)
    if current != "off":
        found = None
        if lg is not None:
            try:
                found = lg.listing(provider.name, url)
            except _log.LogUnusable as exc:
                if current == "strict":
                    raise ReplayMiss(f"strict replay cannot read the log: {exc.message}") from None
        if found is not None:
            return found
        if current == "strict":
            where = f" at {url}" if url else ""
            raise ReplayMiss(f"strict replay: no logged model list for {provider.name}{where}; "
                             "list the models once with NBCHAT_REPLAY=on or off to log it")
    models = await live()
    if lg is not None:
        lg.save_listing(provider.name, url, models)
    return models


def unfetched(part: ImagePart | str) -> ImagePart:
    """An image still to be fetched from its URL, named by it: replay may not need the bytes."""
    return ImagePart(b"", "", url=part) if isinstance(part, str) else part

