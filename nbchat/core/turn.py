"""The one streaming pipeline: a `Turn` runs a request and builds its `Reply` from the events.

Every front end (the functions, `%%chat`, `ChatPanel`, `CompareView`) iterates a Turn's
`events()`; nobody else talks to a provider's stream directly. So this is where a request is
answered from the log instead (`nbchat.core.replay`), checked against `max_cost`
(`nbchat.core.costs`) and, once finished, handed to the log (`nbchat.core.log`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from . import costs, replay
from . import log as _log
from .credentials import Endpoint, Secret
from .errors import NbchatError
from .images import fetch_image, resolve_images, to_image_part
from .options import Settings
from .provider import Provider
from .types import (
    Done,
    ErrorEvent,
    Event,
    ImageEvent,
    ImagePart,
    Message,
    Reply,
    Request,
    TextDelta,
    ToolCallEvent,
    Usage,
)


class Turn:
    """One assistant turn in progress. `reply` is complete once `events()` is exhausted.

    `base_url` and `api_key` are the call's explicit values; the endpoint (explicit, then
    `%config`, then environment) is resolved when the turn starts, so that a missing or
    malformed key is reported like any other failure of the turn (raised, or an `ErrorEvent`).
    """

    def __init__(
        self,
        provider: Provider,
        request: Request,
        model_id: str,
        *,
        images: tuple[Any, ...] = (),
        on_finish: Callable[[Turn], None] | None = None,
        base_url: str | None = None,
        api_key: Secret | None = None,
        max_cost: float | None = None,
        spent: float = 0.0,
    ) -> None:
        self.provider = provider
        self.request = request
        self.endpoint: Endpoint | None = None
        self._base_url = base_url
        self._api_key = api_key
        self.reply = Reply(model=model_id, json_mode=request.options.json)
        self._chunks: list[str] = []
        self._images = images
        self._on_finish = on_finish
        self._deltas = 0
        self.started: float | None = None
        self.finished = False
        self.max_cost = max_cost  # USD, for this request plus `spent` (its thread's so far)
        self.spent = spent
        # the log: where the request comes from, and each event's time (None: not logging)
        self.log = _log.current()
        self.log_id = _log.new_id() if self.log is not None else None
        self.where = _log.where() if self.log is not None else (None, None)
        self._stamps: list[float] | None = [] if self.log is not None else None
        self._marks: list[tuple[int, Event]] = []
        self._delta_logprobs: list[tuple[int, tuple[dict[str, Any], ...]]] = []
        self._sent = False  # the provider was asked (so the outcome is worth logging)
        self._replayed: _log.Logged | None = None
        self._unfetched = False  # images from URLs not fetched yet (replay may not need them)
        self._base = request

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._chunks)

    async def _prepared(self) -> Request:
        request = self.request
        if self._images:
            if replay.mode() != "off":  # a URL names its image until the provider needs it
                parts = tuple(replay.unfetched(to_image_part(v)) for v in self._images)
                self._unfetched = any(not p.data for p in parts)
            else:
                parts = await resolve_images(self._images)
            request = self._with_images(request, parts)
        self.provider.check_request(request)
        # the key is required only when the provider is asked (replay needs none: see _open)
        self.endpoint = self.provider.endpoint(self._base_url, self._api_key)
        return request

    def _with_images(self, request: Request, parts: tuple[ImagePart, ...]) -> Request:
        self._base = request  # the request before the images were added
        msgs = list(request.messages)
        last = msgs[-1]
        msgs[-1] = replace(last, parts=last.parts + parts)
        self.request = replace(request, messages=tuple(msgs))
        return self.request

    async def _open(self, request: Request) -> AsyncIterator[Event]:
        """The logged reply's events under replay, else the provider's stream (after the
        `max_cost` check): the one place a request leaves for a provider."""
        model = self.reply.model
        assert self.endpoint is not None  # resolved by _prepared
        endpoint = self.reply.endpoint = replay.public_url(self.endpoint.base_url)
        key = self.reply.request_hash = replay.request_hash(model, endpoint, request)
        self.reply.options = request.options
        found = replay.find(model, endpoint, request, key)
        if found is not None:
            self._replayed = found
            self._stamps = None
            self.reply.replayed, self.reply.log_id = True, found.id
            if self._unfetched:
                self.request = replay.with_logged_images(request, found)
            return replay.events(found, paced=replay.paced())
        if self._unfetched:  # going to the provider after all: fetch those images now
            added = request.messages[-1].parts[len(self._base.messages[-1].parts):]
            parts = tuple([await fetch_image(p.url) if isinstance(p, ImagePart) and p.url
                           and not p.data else p for p in added])
            request = self._with_images(self._base, parts)  # type: ignore[arg-type]
            self.provider.check_request(request)
        self.endpoint.require_key()
        costs.check_budget(model, request, self.max_cost, self.spent)
        self._sent = True
        self.reply.log_id = self.log_id
        return self.provider.stream(request, self.endpoint)

    async def events(self, *, errors_as_events: bool = False) -> AsyncGenerator[Event, None]:
        """Stream events; on error either raise (default) or yield one ErrorEvent and stop."""
        reply = self.reply
        self.started = time.perf_counter()
        agen: AsyncIterator[Event] | None = None
        chunks = self._chunks
        clock = time.perf_counter
        try:
            request = await self._prepared()
            agen = await self._open(request)
            stamps, marks = self._stamps, self._marks  # stamps is None when not logging
            async for ev in agen:
                if stamps is not None:
                    stamps.append(clock())
                if isinstance(ev, TextDelta):
                    if reply.time_to_first_token is None:
                        reply.time_to_first_token = clock() - self.started
                    if ev.logprobs:
                        if reply.logprobs is None:
                            reply.logprobs = []
                        reply.logprobs.extend(ev.logprobs)
                        self._delta_logprobs.append((len(chunks), ev.logprobs))
                    chunks.append(ev.text)
                    self._deltas += 1
                else:
                    if stamps is not None:
                        marks.append((len(chunks), ev))
                    if isinstance(ev, ToolCallEvent):
                        reply.tool_calls.append(ev.tool_call)
                    elif isinstance(ev, ImageEvent):
                        if reply.time_to_first_token is None:
                            reply.time_to_first_token = clock() - self.started
                        reply.image_parts.append(ev.image)
                    elif isinstance(ev, Done):
                        reply.finish_reason = ev.finish_reason
                        reply.usage = ev.usage
                yield ev
        except (asyncio.CancelledError, KeyboardInterrupt, GeneratorExit):
            reply.interrupted = True
            raise
        except NbchatError as exc:
            reply.error = exc
            if chunks:
                reply.interrupted = True
            if hasattr(exc, "partial_text"):
                exc.partial_text = "".join(chunks)
            if not errors_as_events:
                raise
            yield ErrorEvent(exc)
        finally:
            if agen is not None:
                aclose = getattr(agen, "aclose", None)
                if aclose is not None:
                    try:
                        await aclose()
                    except Exception:  # closing a broken stream must not hide the real error
                        pass
            self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        reply = self.reply
        reply.text = "".join(self._chunks)
        if self.started is not None:
            reply.duration = time.perf_counter() - self.started
        if reply.usage.output_tokens is None and self._deltas:
            # servers that send no usage in streams: one delta is one token
            reply.usage = Usage(reply.usage.input_tokens, self._deltas)
        if reply.finish_reason is None and reply.interrupted:
            reply.finish_reason = "interrupted"
        self._provenance()
        if self._on_finish is not None:
            self._on_finish(self)

    def _provenance(self) -> None:
        """Mark where the reply came from, count it in the ledger, hand it to the log."""
        reply, found = self.reply, self._replayed
        if found is not None:
            reply.time_to_first_token = found.time_to_first_token
            reply.duration = found.duration
        if found is None and not self._sent:
            return  # refused before anything was sent: nothing happened to log or count
        costs.ledger.add(reply)
        if found is None and self.log is not None and self._stamps is not None:
            assert self.started is not None and reply.request_hash is not None
            self.log.submit(_log.Record(
                id=self.log_id or _log.new_id(), created=_log.now_iso(),
                provider=self.provider.name, model=reply.model, endpoint=reply.endpoint,
                request_hash=reply.request_hash,
                options=replay.options_json(self.request.options),
                request=self.request, reply=reply, chunks=self._chunks, marks=self._marks,
                delta_logprobs=self._delta_logprobs, stamps=self._stamps,
                started=self.started, notebook=self.where[0], cell=self.where[1],
            ))
            if self.log.problem is not None:
                reply.log_id = None  # the database could not be opened: nothing was logged

    async def collect(self) -> Reply:
        async with aclosing(self.events()) as events:
            async for _ in events:
                pass
        return self.reply

    async def text_chunks(self) -> AsyncIterator[str]:
        # closed explicitly: an async generator is not closed when its consumer is
        async with aclosing(self.events()) as events:
            async for ev in events:
                if isinstance(ev, TextDelta):
                    yield ev.text


def build_request(
    model_local: str,
    history: list[Message],
    prompt_messages: list[Message],
    settings: Settings,
    system: str | None,
) -> Request:
    msgs: list[Message] = []
    if system:
        msgs.append(Message.of("system", system))
    msgs += history
    msgs += prompt_messages
    return Request(
        model=model_local,
        messages=tuple(msgs),
        options=settings.options,
    )
