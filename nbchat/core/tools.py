"""Running the tool calls a model makes: approval, argument checks, threads, results.

One round of calls is a `Batch`, in two phases: `Batch.approve(approve)` asks the approval
hook, call by call in order (nothing runs yet: a front end may be waiting for the user), then
`Batch.run()` runs the approved calls. `run_calls(calls, tools, approve)` does both and gives
one `ToolStep` per call, in the calls' order.

Where a function runs: an async function (`async def`, or an object whose `__call__` is one)
runs on the event loop, and the async calls of a round run concurrently. A plain function runs
in a worker thread (`asyncio.to_thread`, in a copy of the caller's context, so its output goes
to the same cell): it never blocks the loop (the status line keeps ticking, an interrupt is
not held up, a panel's kernel stays responsive, and the function may itself call
`nbchat.chat(...)`). The plain functions of a round run one at a time, in order (user code is
often not thread-safe), while the async ones run alongside them. A cancelled round (an
interrupt, a closed stream) stops waiting at once; a thread cannot be killed, so a plain
function that was running finishes on its own and its result is dropped.

A call's arguments come from the model: they are checked against the function's parameters
(the pydantic model `tool_of` built) before it runs, and a failure of any kind becomes a
result the model reads (`error: ...`), never an exception out of the loop.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .errors import redact, scrub_known
from .types import Tool, ToolCall, ToolStep

#: the result sent back for a call the approval hook refused
DENIED = "denied by user: the call was not run"

#: the result sent back for a call that had not finished when its round was interrupted
NOT_FINISHED = "interrupted by the user before this call finished: there is no result"


def runnable(calls: Iterable[ToolCall], tools: Sequence[Tool]) -> bool:
    """Whether nbchat answers these calls itself: there are some, and none names a tool given
    without a Python function (a schema dict, which the caller answers). A call to a name no
    tool has is answered with an error result (`unknown_tool`), so that the model can retry."""
    schema_only = {t.name for t in tools if t.function is None}
    calls = list(calls)
    return bool(calls) and not any(c.name in schema_only for c in calls)


def unknown_tool(call: ToolCall, tools: Sequence[Tool]) -> ToolStep:
    """The step for a call to a name that no tool of `tools` has: its result tells the model
    which tools there are (the name comes from the model: quoted, as typed)."""
    names = ", ".join(t.name for t in tools) or "none"
    text = f"no such tool {call.name!r}; available: {names}"
    return ToolStep(call, f"error: {text}", error=text, duration=0.0)


def result_text(value: Any) -> str:
    """What a function returned, as the text of a `tool` message: a string as it is, anything
    else as JSON (pydantic's encoder: dataclasses, models, dates...; `str()` for the rest)."""
    if isinstance(value, str):
        return value
    import pydantic_core

    return pydantic_core.to_json(value, fallback=str).decode()


def is_async(fn: Any) -> bool:
    """Whether calling `fn` gives a coroutine to await on the loop (`async def`, a partial of
    one, or an object whose `__call__` is one): such a function runs on the event loop, any
    other in a worker thread."""
    call = None if inspect.isroutine(fn) else inspect.getattr_static(type(fn), "__call__", None)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


async def _approved(call: ToolCall, approve: Callable[[ToolCall], Any] | None) -> bool:
    if approve is None:
        return True
    answer = approve(call)
    if inspect.isawaitable(answer):
        answer = await answer
    return bool(answer)


def _bound(tool: Tool, call: ToolCall) -> tuple[list[Any], dict[str, Any]]:
    """The call's arguments, checked and converted by the function's pydantic model; with a
    `**kwargs` parameter, the arguments no other parameter takes go there as sent."""
    if "_raw" in call.arguments and len(call.arguments) == 1:
        raise ValueError(f"the arguments are not valid JSON: {call.arguments['_raw']!r:.200}")
    checked = tool.arguments.model_validate(call.arguments)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for key, name, positional in _parameters(tool):
        value = getattr(checked, key)
        if positional:
            args.append(value)
        else:
            kwargs[name] = value
    kwargs.update(checked.model_extra or {})  # only a function with **kwargs allows extras
    return args, kwargs


#: per arguments model (one per function), its parameters as `_parameters` gives them
_signatures: weakref.WeakKeyDictionary[Any, list[tuple[str, str, bool]]] = (
    weakref.WeakKeyDictionary())


def _parameters(tool: Tool) -> list[tuple[str, str, bool]]:
    """(field of the arguments model, parameter name, positional only) for each parameter the
    model fills, in order (`*args` and `**kwargs` are not filled)."""
    found = _signatures.get(tool.arguments)
    if found is None:
        params = inspect.signature(tool.function).parameters.items()
        fields = tool.arguments.model_fields
        found = _signatures[tool.arguments] = [
            (f"p{i}", name, p.kind is p.POSITIONAL_ONLY)
            for i, (name, p) in enumerate(params) if f"p{i}" in fields]
    return found


async def _run(tool: Tool, call: ToolCall, one_at_a_time: asyncio.Lock) -> ToolStep:
    """Run one call: an async function on the loop, a plain one in a worker thread once
    `one_at_a_time` is free (the round's plain functions run in turn)."""
    try:
        args, kwargs = _bound(tool, call)
    except Exception as exc:  # pydantic's ValidationError, bad JSON
        text = f"the arguments do not fit {tool.name}: {exc}"
        return ToolStep(call, f"error: {text}", error=text, duration=0.0)
    fn = tool.function
    assert fn is not None  # the Batch runs only tools with a function
    start = time.perf_counter()
    try:
        if is_async(fn):
            value = await fn(*args, **kwargs)
        else:
            async with one_at_a_time:
                start = time.perf_counter()
                # to_thread copies the context: the function's output reaches the same cell
                value = await asyncio.to_thread(fn, *args, **kwargs)
            if inspect.isawaitable(value):  # a plain function that returned an awaitable
                value = await value
    except Exception as exc:  # the model reads what went wrong and may try again
        text = redact(f"{type(exc).__name__}: {exc}")  # it goes to the model and the cell
        return ToolStep(call, f"error: {text}", error=text,
                        duration=time.perf_counter() - start)
    return ToolStep(call, scrub_known(result_text(value)), value=value,
                    duration=time.perf_counter() - start)


class Batch:
    """One round of tool calls (each names a tool of `tools` with a function; see `runnable`),
    in two phases: `approve` (nothing runs), then `run`. `steps` holds a `ToolStep` per call,
    in the calls' order, once that call is decided (denied, unknown) or has finished, else
    None: after a cancelled round, the calls that finished are `finished()`."""

    def __init__(self, calls: Sequence[ToolCall], tools: Sequence[Tool]) -> None:
        self.calls = list(calls)
        self.tools = tools
        self.steps: list[ToolStep | None] = [None] * len(self.calls)
        #: (index in calls, tool) of the calls approved to run
        self.approved: list[tuple[int, Tool]] = []

    async def approve(self, approve: Callable[[ToolCall], Any] | None = None) -> None:
        """Ask `approve(call)` (a bool or an awaitable bool) for each call in order. A denied
        call's step is `DENIED`; a call to a name no tool has gets `unknown_tool`'s error result
        without asking `approve` (nothing runs)."""
        by_name = {t.name: t for t in self.tools}
        for i, call in enumerate(self.calls):
            tool = by_name.get(call.name)
            if tool is None or tool.function is None:
                self.steps[i] = unknown_tool(call, self.tools)
            elif await _approved(call, approve):
                self.approved.append((i, tool))
            else:
                self.steps[i] = ToolStep(call, DENIED, denied=True)

    @property
    def to_run(self) -> list[ToolCall]:
        """The calls approved to run, in order."""
        return [self.calls[i] for i, _ in self.approved]

    async def run(self) -> list[ToolStep]:
        """Run the approved calls (async ones together on the loop, plain ones in a worker
        thread one at a time) and return every call's step, in order."""
        lock = asyncio.Lock()

        async def one(i: int, tool: Tool) -> None:
            self.steps[i] = await _run(tool, self.calls[i], lock)

        await asyncio.gather(*(one(i, tool) for i, tool in self.approved))
        return [s for s in self.steps if s is not None]

    def finished(self) -> list[ToolStep]:
        """The steps decided or finished so far, in the calls' order."""
        return [s for s in self.steps if s is not None]


async def run_calls(calls: Sequence[ToolCall], tools: Sequence[Tool],
                    approve: Callable[[ToolCall], Any] | None = None) -> list[ToolStep]:
    """Run `calls` (each names a tool of `tools` with a function; see `runnable`): ask
    `approve(call)` (a bool or an awaitable bool) for each in order, then run the approved
    ones (`Batch`: async functions together on the loop, plain ones in a worker thread one at
    a time). Returns a `ToolStep` per call, in order; a denied call's result is `DENIED`; a
    call to a name no tool has gets `unknown_tool`'s error result, without asking `approve`
    (nothing runs)."""
    batch = Batch(calls, tools)
    await batch.approve(approve)
    return await batch.run()
