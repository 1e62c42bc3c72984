"""The one streaming pipeline: a `Turn` runs a request and builds its `Reply` from the events.

Every front end (the functions, `%%chat`, `ChatPanel`, `CompareView`) iterates a Turn's
`events()`; nobody else talks to a provider's stream directly. So this is where a request is
answered from the log instead (`nbchat.core.replay`), checked against `max_cost`
(`nbchat.core.costs`) and, once finished, handed to the log (`nbchat.core.log`).

The provider's stream runs in its own task (the pump) and hands its events over through a
queue, so that the turn can speak while the provider waits: after a second of silence it
yields `Status` events saying what it waits for (from the `nbchat.core.waits` tracker the HTTP
layer keeps up to date), it ends a wait that runs past the idle or total limit with
`TimedOut`, and a Stop (cancelling the consumer) cancels the pump at once, wherever it waits.
Text is passed through a `SurrogateJoiner`, so a character split across chunks is joined.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Container
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from . import costs, replay, waits
from . import log as _log
from .credentials import Endpoint, Secret
from .errors import KeyScrubber, NbchatError, forget_locals
from .images import fetch_image, resolve_images, to_image_part
from .options import Settings
from .provider import Provider
from .surrogates import SurrogateJoiner
from .types import (
    Done,
    ErrorEvent,
    Event,
    ImageEvent,
    ImagePart,
    Message,
    ReasoningDelta,
    RefusalDelta,
    Reply,
    Request,
    Status,
    TextDelta,
    ToolCallEvent,
    Usage,
)

#: seconds between two status lines while waiting
STATUS_EVERY = 1.0


class _Failed:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()
_TICK = object()  # a wait for the next event ended without one


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
        timeouts: waits.Timeouts | None = None,
    ) -> None:
        self.provider = provider
        self.request = request
        self.endpoint: Endpoint | None = None
        self._base_url = base_url
        self._api_key = api_key
        self.reply = Reply(model=model_id, json_mode=request.options.json)
        self._chunks: list[str] = []
        self._reasoning: list[str] = []
        self._refusal: list[str] = []
        #: limits set for this call (`timeout=`); the configured ones fill the rest
        self.timeouts = timeouts
        self.waits: waits.Waits | None = None
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
        #: answer from the log when this request has a logged reply, even with replay off
        #: (`nbchat.map` resumes this way)
        self.reuse_logged = False
        #: the request hashes known to have a logged reply (`Log.answered`), or None: a map
        #: reads them once, so its rows that have none are sent without a look in the log
        self.logged_hashes: Container[str] | None = None

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._chunks)

    async def _prepared(self) -> Request:
        request = self.request
        if replay.mode() == "off" or not _has_url_images(request):
            request = self.request = await _fetched(request)
        else:  # message parts that name an image by URL: fetched only if the log lacks it
            self._unfetched = True
        if self._images:
            if replay.mode() != "off":  # a URL names its image until the provider needs it
                parts = tuple(replay.unfetched(to_image_part(v)) for v in self._images)
                self._unfetched = self._unfetched or any(not p.data for p in parts)
            else:
                parts = await resolve_images(self._images)
            request = self._with_images(request, parts)
        self.provider.check_request(request)
        # the key is required only when the provider is asked (replay needs none: see _open)
        self.endpoint = self.provider.endpoint(self._base_url, self._api_key)
        return request

    def _with_images(self, request: Request, parts: tuple[ImagePart, ...]) -> Request:
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
        if endpoint is not None and self.endpoint.base_url != self.provider.default_base_url:
            self.reply.host = _host(endpoint)
        key = self.reply.request_hash = replay.request_hash(model, endpoint, request)
        self.reply.options = request.options
        found = replay.find(model, endpoint, request, key, reuse=self.reuse_logged,
                            answered=self.logged_hashes)
        if found is not None:
            self._replayed = found
            self._stamps = None
            self.reply.replayed, self.reply.log_id = True, found.id
            if self._unfetched:
                self.request = replay.with_logged_images(request, found)
            return replay.events(found, paced=replay.paced())
        if self._unfetched:  # going to the provider after all: fetch those images now
            request = self.request = await _fetched(request)
            self.provider.check_request(request)
        self.endpoint.require_key()
        costs.check_budget(model, request, self.max_cost, self.spent)
        self._sent = True
        self.reply.log_id = self.log_id
        return self.provider.stream(request, self.endpoint)

    async def _opened(self) -> AsyncIterator[Event]:
        """The request prepared and opened: the provider's stream, or the log's under replay
        (what the pump, or `collect()` inline, iterates)."""
        return await self._open(await self._prepared())

    def _limits(self) -> waits.Timeouts:
        configured = waits.configured(self.provider.name)
        return self.timeouts.over(configured) if self.timeouts is not None else configured

    async def _pump(self, tracker: waits.Waits, queue: collections.deque[Any],
                    notify: Callable[[], None]) -> None:
        """Run the provider's stream (in its own task, with the tracker as current)."""
        waits.activate(tracker)  # this task's own context: the consumer's is untouched
        agen: AsyncIterator[Event] | None = None
        try:
            agen = await self._opened()
            async for ev in agen:
                queue.append(ev)
                notify()
            queue.append(_END)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer, which raises it
            # the provider's frames keep their place in the stack but lose their locals: they
            # may hold what a server sent (which can echo a key), and tools that print a
            # traceback's locals (%xmode Verbose, pytest -l, rich) would show them
            forget_locals(exc)
            queue.append(_Failed(exc))
        finally:
            notify()
            await _close_quietly(agen)

    def events(self, *, errors_as_events: bool = False) -> AsyncGenerator[Event, None]:
        """Stream events; on error either raise (default) or yield one ErrorEvent and stop.
        After a second without an event, `Status` events say what the turn waits for."""
        return self._events(errors_as_events, inline=False)

    async def _queued(self, tracker: waits.Waits) -> AsyncGenerator[Any, None]:
        """The provider's events from the pump task; `_TICK` whenever a wait for the next one
        ended without it (after `_timeout`, or a change of the tracker's phase)."""
        loop = asyncio.get_running_loop()
        queue: collections.deque[Any] = collections.deque()
        wake: list[asyncio.Future[None] | None] = [None]

        def notify() -> None:
            fut = wake[0]
            if fut is not None and not fut.done():
                fut.set_result(None)

        tracker.on_change = notify
        pump = loop.create_task(self._pump(tracker, queue, notify))
        try:
            while True:
                if not queue:
                    await _wait(loop, wake, _timeout(tracker))
                    if not queue:
                        yield _TICK
                        continue
                ev = queue.popleft()
                if ev is _END:
                    return
                if isinstance(ev, _Failed):
                    raise ev.exc
                yield ev
        finally:
            if not pump.done():
                pump.cancel()
            try:
                await pump
            except BaseException:  # cancelled, or failed after the consumer stopped listening
                pass

    async def _inline(self, tracker: waits.Waits) -> AsyncGenerator[Any, None]:
        """The provider's events, run in the consumer's own task (for `collect()`, which shows
        no status): no pump task and no hand-over, so three fewer passes through the event loop
        a request, which `nbchat.map`'s rows feel. The idle and total limits are kept by a
        timer that cancels this task when one has run out (the error then raised instead); a
        cancellation from anyone else (a Stop) stays a cancellation."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        late: list[NbchatError] = []
        timer: list[asyncio.TimerHandle] = []

        def check() -> None:
            error = tracker.overdue()
            if error is not None:
                late.append(error)
                task.cancel()
            else:
                timer[0] = loop.call_later(max(_timeout(tracker), 0.01), check)

        token = waits.activate(tracker)
        timer.append(loop.call_later(max(_timeout(tracker), 0.01), check))
        agen: AsyncIterator[Event] | None = None
        try:
            agen = await self._opened()
            async for ev in agen:
                yield ev
        except asyncio.CancelledError as exc:
            forget_locals(exc)  # a Stop's traceback goes through httpcore too
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+
            if late and (uncancel is None or uncancel() == 0):
                raise late[0] from None
            raise
        except GeneratorExit:
            raise
        except BaseException as exc:
            # as in the pump: the provider's frames lose their locals (see `_pump`)
            forget_locals(exc)
            raise
        finally:
            timer[0].cancel()
            waits.deactivate(token)
            await _close_quietly(agen)

    async def _events(self, errors_as_events: bool, *, inline: bool
                      ) -> AsyncGenerator[Event, None]:
        reply = self.reply
        self.started = time.perf_counter()
        clock = time.perf_counter
        tracker = self.waits = waits.Waits(self.provider.name, self._limits())
        source = self._inline(tracker) if inline else self._queued(tracker)
        chunks, reasoning, marks = self._chunks, self._reasoning, self._marks
        joiner, reasoning_joiner = SurrogateJoiner(), SurrogateJoiner()
        scrub, reasoning_scrub = KeyScrubber(), KeyScrubber()  # a key echoed back: ***
        shown = ""  # the status line on screen
        said = 0.0  # when it was last sent
        try:
            async for ev in source:
                if ev is _TICK:
                    late = tracker.overdue()
                    if late is not None:
                        raise late
                    if (tracker.quiet_for() >= waits.STATUS_AFTER
                            or tracker.phase == waits.RETRY):
                        message = tracker.status()
                        if message != shown:
                            shown, said = message, time.monotonic()
                            yield Status(message, clock() - self.started)
                    continue
                stamps = self._stamps  # None when not logging (or replaying)
                if isinstance(ev, TextDelta):
                    text = scrub.feed(joiner.feed(ev.text))
                    if text is not ev.text:
                        if not text:
                            continue  # only half a character: it waits for its other half
                        ev = TextDelta(text, ev.logprobs)
                    if stamps is not None:
                        stamps.append(clock())
                    if reply.time_to_first_token is None:
                        reply.time_to_first_token = clock() - self.started
                    if ev.logprobs:
                        if reply.logprobs is None:
                            reply.logprobs = []
                        reply.logprobs.extend(ev.logprobs)
                        self._delta_logprobs.append((len(chunks), ev.logprobs))
                    chunks.append(text)
                    self._deltas += 1
                elif isinstance(ev, ReasoningDelta):
                    text = reasoning_scrub.feed(reasoning_joiner.feed(ev.text))
                    if not text:
                        continue
                    if stamps is not None:
                        stamps.append(clock())
                        marks.append((len(chunks), ReasoningDelta(text)))
                    if reply.time_to_first_token is None:
                        reply.time_to_first_token = clock() - self.started
                    reasoning.append(text)
                    tracker.event(reasoning=True)
                    now = time.monotonic()
                    if not chunks and now - said >= STATUS_EVERY:
                        shown, said = tracker.status(), now
                        yield Status(shown, clock() - self.started)
                    yield ReasoningDelta(text) if text is not ev.text else ev
                    continue
                else:
                    if isinstance(ev, Done):
                        thought = reasoning_scrub.flush()
                        if thought:
                            reasoning.append(thought)
                            yield ReasoningDelta(thought)
                        tail = scrub.feed(joiner.flush()) + scrub.flush()
                        if tail:
                            if stamps is not None:
                                stamps.append(clock())
                            chunks.append(tail)
                            yield TextDelta(tail)
                    if stamps is not None:
                        stamps.append(clock())
                        marks.append((len(chunks), ev))
                    if isinstance(ev, ToolCallEvent):
                        reply.tool_calls.append(ev.tool_call)
                    elif isinstance(ev, RefusalDelta):
                        if reply.time_to_first_token is None:
                            reply.time_to_first_token = clock() - self.started
                        self._refusal.append(ev.text)
                    elif isinstance(ev, ImageEvent):
                        if reply.time_to_first_token is None:
                            reply.time_to_first_token = clock() - self.started
                        reply.image_parts.append(ev.image)
                    elif isinstance(ev, Done):
                        reply.finish_reason = ev.finish_reason
                        reply.usage = ev.usage
                        reply.notes.extend(ev.notes)
                tracker.event()
                if shown:
                    shown = ""
                    yield Status("", clock() - self.started)
                yield ev
        except (asyncio.CancelledError, KeyboardInterrupt, GeneratorExit):
            reply.interrupted = True
            raise
        except NbchatError as exc:
            self._failed(exc)
            if not errors_as_events:
                raise
            yield ErrorEvent(exc)
        except Exception as exc:
            self._failed(exc)
            raise
        finally:
            await source.aclose()
            self._finish()

    def _failed(self, exc: BaseException) -> None:
        """Keep the error on the reply and what arrived on the error."""
        reply = self.reply
        reply.error = exc
        if self._chunks or self._reasoning:
            reply.interrupted = True
        try:
            exc.partial_text = "".join(self._chunks)  # type: ignore[attr-defined]
            exc.reply = reply  # type: ignore[attr-defined]
        except AttributeError:  # an exception type with __slots__
            pass

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        reply = self.reply
        reply.text = "".join(self._chunks)
        reply.reasoning = "".join(self._reasoning)
        reply.refusal = "".join(self._refusal)
        if self.started is not None:
            reply.duration = time.perf_counter() - self.started
        if reply.interrupted and reply.usage.input_tokens is None:
            # cut off before the usage that ends a stream: the provider may have counted it
            counted = self.provider.prompt_tokens(self.request)
            if counted is not None:
                reply.usage = Usage(counted, reply.usage.output_tokens)
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
        """Run the turn to the end and return its `Reply`; raises what `events()` raises.
        The provider's stream runs in the caller's task (no status is shown)."""
        async with aclosing(self._events(False, inline=True)) as events:
            async for _ in events:
                pass
        return self.reply

    async def text_chunks(self) -> AsyncIterator[str]:
        """The reply's text chunks (str, in order) as they arrive; raises what `events()` raises.
        Closing this iterator closes the provider's stream.
        """
        # closed explicitly: an async generator is not closed when its consumer is
        async with aclosing(self.events()) as events:
            async for ev in events:
                if isinstance(ev, TextDelta):
                    yield ev.text


async def _close_quietly(agen: AsyncIterator[Event] | None) -> None:
    """Close a stream (None: never opened); closing a broken one must not hide the real
    error."""
    aclose = getattr(agen, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # noqa: BLE001
            pass


def _has_url_images(request: Request) -> bool:
    return any(not p.data and p.url for m in request.messages for p in m.images)


async def _fetched(request: Request) -> Request:
    """The request with every image that is only a URL (an `image_url` part of a message, or
    `images=[url]` under replay) downloaded; the same request when there is none."""
    if not _has_url_images(request):
        return request
    msgs = []
    for m in request.messages:
        parts = [await fetch_image(p.url) if isinstance(p, ImagePart) and p.url and not p.data
                 else p for p in m.parts]
        msgs.append(replace(m, parts=tuple(parts)))
    return replace(request, messages=tuple(msgs))


@functools.lru_cache(maxsize=64)
def _host(url: str) -> str:
    """`host[:port]` of a URL (never its user, password, path or query), for the footer."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host, port = parts.hostname or url, parts.port
    except ValueError:
        return url
    return f"{host}:{port}" if port else host


def _timeout(tracker: waits.Waits) -> float:
    """How long to wait for the next event before looking at the clock again."""
    deadline = tracker.deadline()
    if deadline is None:
        return STATUS_EVERY
    return max(0.0, min(STATUS_EVERY, deadline - tracker.clock()))


def _release(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _wait(loop: asyncio.AbstractEventLoop, wake: list[asyncio.Future[None] | None],
                timeout: float) -> None:
    """Until the pump hands something over (or the tracker changes phase), or `timeout` s."""
    fut = wake[0] = loop.create_future()
    handle = loop.call_later(timeout, _release, fut)
    try:
        await fut
    finally:
        handle.cancel()
        wake[0] = None


def build_request(
    model_local: str,
    history: list[Message],
    prompt_messages: list[Message],
    settings: Settings,
    system: str | None,
) -> Request:
    """The `Request` for one turn: the system prompt (if any), the history, then the new
    messages, with the settings' options (key and base URL go to the `Turn`, not here).
    """
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
