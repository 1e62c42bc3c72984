"""The sync bridge: run the async core from sync code, in or out of a running event loop.

Outside a loop, nbchat keeps one private loop (so connection pools live across calls).
Inside a running loop (a Jupyter kernel), nest_asyncio lets us run it re-entrantly.
Cancellation propagates: a KeyboardInterrupt while waiting cancels the task, which closes
the provider's stream, and the interrupt is re-raised.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_private: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def _loop() -> asyncio.AbstractEventLoop:
    global _private
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        import nest_asyncio

        if not getattr(loop, "_nest_patched", False):
            nest_asyncio.apply(loop)
        return loop
    if threading.current_thread() is not threading.main_thread():
        return asyncio.new_event_loop()
    with _lock:
        if _private is None or _private.is_closed():
            _private = asyncio.new_event_loop()
    return _private


def _run(loop: asyncio.AbstractEventLoop, aw: Awaitable[T]) -> T:
    task = asyncio.ensure_future(aw, loop=loop)
    try:
        return loop.run_until_complete(task)
    except BaseException:
        if not task.done():
            task.cancel()
            try:
                loop.run_until_complete(task)
            except BaseException:
                pass
        raise


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code."""
    return _run(_loop(), coro)


async def _next(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()


def iterate_sync(agen: AsyncIterator[T]) -> Iterator[T]:
    """Iterate an async iterator from sync code; closing or interrupting closes it."""
    loop = _loop()
    try:
        while True:
            try:
                item = _run(loop, _next(agen))
            except StopAsyncIteration:
                return
            yield item
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            try:
                _run(loop, aclose())
            except RuntimeError:  # already closed by the cancelled task
                pass
