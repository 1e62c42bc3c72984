"""Running the tool calls a model makes: approval, argument checks, concurrency, results.

`run_calls(calls, tools, approve)` gives one `ToolStep` per call, in the calls' order. The
approval hook is asked first, call by call in order; the approved calls then run together, so
async functions run concurrently (a plain function runs to its end when its turn comes). A
call's arguments come from the model: they are checked against the function's parameters
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


async def _approved(call: ToolCall, approve: Callable[[ToolCall], Any] | None) -> bool:
    if approve is None:
        return True
    answer = approve(call)
    if inspect.isawaitable(answer):
        answer = await answer
    return bool(answer)


def _bound(tool: Tool, call: ToolCall) -> tuple[list[Any], dict[str, Any]]:
    """The call's arguments, checked and converted by the function's pydantic model."""
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


async def _run(tool: Tool, call: ToolCall) -> ToolStep:
    start = time.perf_counter()
    try:
        args, kwargs = _bound(tool, call)
    except Exception as exc:  # pydantic's ValidationError, bad JSON
        text = f"the arguments do not fit {tool.name}: {exc}"
        return ToolStep(call, f"error: {text}", error=text, duration=0.0)
    try:
        value = tool.function(*args, **kwargs)
        if inspect.isawaitable(value):
            value = await value
    except Exception as exc:  # the model reads what went wrong and may try again
        text = redact(f"{type(exc).__name__}: {exc}")  # it goes to the model and the cell
        return ToolStep(call, f"error: {text}", error=text,
                        duration=time.perf_counter() - start)
    return ToolStep(call, scrub_known(result_text(value)), value=value,
                    duration=time.perf_counter() - start)


async def run_calls(calls: Sequence[ToolCall], tools: Sequence[Tool],
                    approve: Callable[[ToolCall], Any] | None = None) -> list[ToolStep]:
    """Run `calls` (each names a tool of `tools` with a function; see `runnable`): ask
    `approve(call)` (a bool or an awaitable bool) for each in order, then run the approved
    ones together. Returns a `ToolStep` per call, in order; a denied call's result is
    `DENIED`; a call to a name no tool has gets `unknown_tool`'s error result, without asking
    `approve` (nothing runs)."""
    by_name = {t.name: t for t in tools}
    steps: list[ToolStep | None] = []
    jobs = []
    for call in calls:
        if by_name.get(call.name) is None or by_name[call.name].function is None:
            steps.append(unknown_tool(call, tools))
        elif await _approved(call, approve):
            steps.append(None)
            jobs.append(_run(by_name[call.name], call))
        else:
            steps.append(ToolStep(call, DENIED, denied=True))
    done = iter(await asyncio.gather(*jobs))
    return [s if s is not None else next(done) for s in steps]
