"""The one streaming pipeline: a `Turn` runs a request and builds its `Reply` from the events.

Every front end (the functions, `%%chat`, `ChatPanel`, `CompareView`) iterates a Turn's
`events()`; nobody else talks to a provider's stream directly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from .credentials import Endpoint, Secret
from .errors import NbchatError
from .images import resolve_images
from .options import Settings
from .provider import Provider
from .types import (
    Done,
    ErrorEvent,
    Event,
    ImageEvent,
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

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._chunks)

    async def _prepared(self) -> tuple[Request, Endpoint]:
        request = self.request
        if self._images:
            parts = await resolve_images(self._images)
            msgs = list(request.messages)
            last = msgs[-1]
            msgs[-1] = replace(last, parts=last.parts + parts)
            request = replace(request, messages=tuple(msgs))
            self.request = request
        self.provider.check_request(request)
        endpoint = self.provider.endpoint(self._base_url, self._api_key)
        endpoint.require_key()
        self.endpoint = endpoint
        return request, endpoint

    async def events(self, *, errors_as_events: bool = False) -> AsyncGenerator[Event, None]:
        """Stream events; on error either raise (default) or yield one ErrorEvent and stop."""
        reply = self.reply
        self.started = time.perf_counter()
        agen: AsyncIterator[Event] | None = None
        chunks = self._chunks
        try:
            request, endpoint = await self._prepared()
            agen = self.provider.stream(request, endpoint)
            async for ev in agen:
                if isinstance(ev, TextDelta):
                    if reply.time_to_first_token is None:
                        reply.time_to_first_token = time.perf_counter() - self.started
                    chunks.append(ev.text)
                    self._deltas += 1
                    if ev.logprobs:
                        if reply.logprobs is None:
                            reply.logprobs = []
                        reply.logprobs.extend(ev.logprobs)
                elif isinstance(ev, ToolCallEvent):
                    reply.tool_calls.append(ev.tool_call)
                elif isinstance(ev, ImageEvent):
                    if reply.time_to_first_token is None:
                        reply.time_to_first_token = time.perf_counter() - self.started
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
        if self._on_finish is not None:
            self._on_finish(self)

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
