"""`TurnLoop`: one turn that may take several requests, chaining `Turn`s.

- Tools: when the model calls functions given in `tools=[...]`, they run (`nbchat.core.tools`:
  approval hook, argument checks, async calls together), their results go back as `tool`
  messages bound to each call's id, and the model is asked again, until it answers without
  calling a tool or `max_tool_steps` rounds have run (then `ToolStepLimit`, the reply keeping
  the calls it asked for). A forced `tool_choice` (a name or "required") applies to the first
  request only: forced on every request, the model would call tools forever.
- Structured output: with `schema=`, the answer is parsed into the schema's type
  (`nbchat.core.structured`); one that does not fit is sent back with the validation error
  `schema_retries` times, then `SchemaMismatch` holds the raw text. A refusal is not checked.

A call to a tool without a function (a schema dict) ends the loop: the reply carries the calls
for the caller to answer, as a plain turn does. A call to a name that no tool has is answered
with an error result naming the tools there are (`tools.unknown_tool`), and the loop goes on:
it counts as a step. The approval hook is asked for each call before any runs (no "running"
status then: the hook may be waiting for the user); async functions run on the loop, plain
ones in a worker thread, one at a time (`nbchat.core.tools`). Cancelled (an interrupt, a closed
consumer), the turn's reply is marked interrupted (`finish_reason` "interrupted"); cut in a
round of calls, the steps that finished are kept and the history says which calls ran
(`answered`). Every request is a `Turn` of its own (logged,
replayed, counted against `max_cost` like any other); the front ends iterate `events()` as
they do a Turn's, with a `ToolResultEvent` after each call ran. `reply` is the last request's
reply, with every step in `reply.steps`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from . import structured, tools, waits
from .errors import NbchatError, SchemaMismatch, ToolStepLimit
from .options import Settings
from .turn import STATUS_EVERY, Turn
from .types import (
    ErrorEvent,
    Event,
    Message,
    Reply,
    Request,
    SchemaRetry,
    Status,
    TextDelta,
    TextPart,
    ToolCall,
    ToolResultEvent,
    ToolStep,
)


async def _while_running(job: asyncio.Future[list[ToolStep]],
                         calls: list[ToolCall]) -> AsyncGenerator[Status, None]:
    """Until the approved tool calls (`job`, the run phase only: approval is a wait for the
    user, which the approval hook reports itself) are done: after `waits.STATUS_AFTER` s, and
    then every `STATUS_EVERY` s, a `Status` naming them with the time they have taken, and
    `Status("")` once they are done. Closing this iterator (the consumer stopped) cancels
    `job`."""
    names = ", ".join(dict.fromkeys(c.name for c in calls))
    start = time.monotonic()
    shown = ""  # the status line on screen
    try:
        wait = waits.STATUS_AFTER
        while True:
            done, _ = await asyncio.wait({job}, timeout=wait)
            if done:
                break
            wait = STATUS_EVERY
            elapsed = time.monotonic() - start
            message = (f"running {names} (the model's tool call{'s' if len(calls) > 1 else ''})"
                       f", {waits.fmt(elapsed)}")
            if message != shown:
                shown = message
                yield Status(message, elapsed)
        if shown:
            yield Status("", time.monotonic() - start)
    finally:
        if not job.done():
            job.cancel()


#: next_turn(request) -> a Turn for it (same provider, endpoint and limits as the first)
NextTurn = Callable[[Request], Turn]


class TurnLoop:
    """A turn that runs the model's tool calls and checks structured output; same interface as
    `Turn` (`events()`, `collect()`, `text_chunks()`, `reply`, `request`).

    `first` is the first request's Turn; `next_turn` makes the following ones. `on_finish(loop)`
    runs once at the end, whatever happened (the Conversation records the turn there)."""

    def __init__(self, first: Turn, next_turn: NextTurn, settings: Settings,
                 on_finish: Callable[[TurnLoop], None] | None = None) -> None:
        self.first = self.current = first
        self._next_turn = next_turn
        self.settings = settings
        self._on_finish = on_finish
        self.turns: list[Turn] = [first]
        self.steps: list[Any] = []
        #: the messages added after the first request's: assistant tool calls and tool results
        self.added: list[Message] = []
        #: after an interrupt in a round of tool calls: a `tool` message per call of the
        #: current reply (the result of each that finished, `tools.NOT_FINISHED` for the rest)
        self.answered: list[Message] = []
        self._batch: tools.Batch | None = None  # the round of calls being approved or run
        self.finished = False
        self._quiet = False  # collect(): each request runs to its end without handing events on

    @property
    def reuse_logged(self) -> bool:
        """Answer each request from the log when it holds it, whatever the replay mode
        (`Turn.reuse_logged`, which `nbchat.map` sets to resume a batch)."""
        return self.first.reuse_logged

    @reuse_logged.setter
    def reuse_logged(self, value: bool) -> None:
        for turn in self.turns:
            turn.reuse_logged = value

    @property
    def request(self) -> Request:
        """The first request (the user's messages as sent, images resolved)."""
        return self.first.request

    @property
    def reply(self) -> Reply:
        """The reply of the latest request: the answer, once the loop has finished."""
        return self.current.reply

    @property
    def text(self) -> str:
        """The latest request's text so far."""
        return self.current.text

    def _continue(self, messages: list[Message]) -> Turn:
        base = self.current.request
        options = base.options
        if options.tool_choice not in (None, "auto", "none"):
            options = replace(options, tool_choice="auto")  # forced once, then the model chooses
        turn = self._next_turn(replace(base, messages=tuple(base.messages) + tuple(messages),
                                       options=options))
        turn.reuse_logged = self.first.reuse_logged
        self.turns.append(turn)
        self.current = turn
        return turn

    async def events(self, *, errors_as_events: bool = False) -> AsyncGenerator[Event, None]:
        """Every request's events in order, a `ToolResultEvent` after each call ran; on error
        either raise (default) or yield one ErrorEvent and stop, as `Turn.events` does."""
        settings = self.settings
        opts = settings.options
        rounds = retries = 0
        problems: list[str] = []
        try:
            while True:
                turn = self.current
                if self._quiet:  # a generator hop per text delta is most of the loop's cost
                    await turn.collect()
                else:
                    async with aclosing(turn.events(errors_as_events=errors_as_events)) as evs:
                        async for ev in evs:
                            yield ev
                reply = turn.reply
                reply.steps = list(self.steps)
                if reply.error is not None or reply.interrupted:
                    return
                if reply.tool_calls:
                    if not tools.runnable(reply.tool_calls, opts.tools):
                        return  # a schema-only tool: the caller answers it
                    if rounds >= settings.max_tool_steps:
                        names = ", ".join(c.name for c in reply.tool_calls)
                        raise ToolStepLimit(
                            f"the model still called tools ({names}) after "
                            f"{settings.max_tool_steps} rounds (max_tool_steps): the calls "
                            "are on reply.tool_calls, those that ran on reply.steps; raise "
                            "max_tool_steps or answer them yourself")
                    rounds += 1
                    # ids first: a step, the history and the wire all name the same call
                    calls = [replace(c, id=c.id or f"call_{rounds}_{i}")
                             for i, c in enumerate(reply.tool_calls)]
                    reply.tool_calls = calls
                    self._batch = batch = tools.Batch(calls, opts.tools)
                    await batch.approve(settings.approve)  # may wait for the user: no timer
                    if self._quiet or not batch.approved:
                        steps = await batch.run()
                    else:  # a slow tool is not a silent cell: say what runs, and for how long
                        job = asyncio.ensure_future(batch.run())
                        async with aclosing(_while_running(job, batch.to_run)) as statuses:
                            async for status in statuses:
                                yield status
                        steps = job.result()
                    for step in steps:  # closed at one of these: `_interrupted` keeps them all
                        yield ToolResultEvent(step)
                    self.steps += steps
                    self._batch = None
                    new = [reply.to_message()]
                    new += [Message("tool", (TextPart(s.result),), tool_call_id=c.id)
                            for s, c in zip(steps, calls, strict=True)]
                    self.added += new
                    self._continue(new)
                    continue
                if opts.schema is None or reply.refusal:
                    return
                try:
                    reply.parsed = structured.parse(reply.text, opts.schema,
                                                    settings.schema_type)
                except structured.Mismatch as exc:
                    problems.append(str(exc))
                    if retries >= settings.schema_retries:
                        raise SchemaMismatch(
                            f"the reply does not fit the schema ({exc}) after {retries + 1} "
                            f"attempt{'s' if retries else ''}; its text is on .raw",
                            raw=reply.text, errors=tuple(problems)) from None
                    retries += 1
                    yield SchemaRetry(str(exc), retries)  # what streamed so far was rejected
                    ask = Message.of("user", structured.feedback(str(exc)))
                    self._continue([reply.to_message(), ask])
                    continue
                if problems:
                    reply.notes.append(f"asked again {retries}x: the first reply did not fit "
                                       "the schema")
                return
        except (asyncio.CancelledError, KeyboardInterrupt, GeneratorExit):
            self._interrupted()
            raise
        except NbchatError as exc:
            reply = self.current.reply
            if reply.error is None:  # raised by the loop itself, not by a request
                reply.error = exc
                exc.reply = reply
                exc.partial_text = reply.text
                if not errors_as_events:
                    raise
                yield ErrorEvent(exc)
                return
            raise
        finally:
            self._finish()

    def _interrupted(self) -> None:
        """Cancelled (an interrupt, a closed consumer): the current reply is marked interrupted
        (a stream cut off marked it already). Cut in a round of tool calls, the steps that
        finished are kept, and `answered` holds their results and `tools.NOT_FINISHED` for the
        others, for the history: the model hears what ran."""
        reply = self.current.reply
        batch, self._batch = self._batch, None
        reply.interrupted = True
        if batch is None:
            if reply.finish_reason is None:
                reply.finish_reason = "interrupted"
            return
        reply.finish_reason = "interrupted"  # the calls it asked for did not all run
        self.steps += batch.finished()
        self.answered = [
            Message("tool", (TextPart(s.result if s is not None else tools.NOT_FINISHED),),
                    tool_call_id=c.id)
            for s, c in zip(batch.steps, batch.calls, strict=True)]

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        reply = self.reply
        reply.steps = list(self.steps)
        if self.steps:
            requests = len(self.turns)
            reply.notes.append(f"{len(self.steps)} tool call{'s' if len(self.steps) > 1 else ''}"
                               f" in {requests} requests")
        if self._on_finish is not None:
            self._on_finish(self)

    async def collect(self) -> Reply:
        """Run the loop to the end and return the answer's `Reply`; raises what `events()`
        raises."""
        self._quiet = True
        async with aclosing(self.events()) as events:
            async for _ in events:
                pass
        return self.reply

    async def text_chunks(self) -> AsyncIterator[str]:
        """Every request's text chunks (str, in order) as they arrive."""
        async with aclosing(self.events()) as events:
            async for ev in events:
                if isinstance(ev, TextDelta):
                    yield ev.text
