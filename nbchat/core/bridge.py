"""The sync bridge: run the async core from sync code, from any thread, in or out of a loop.

In the main thread outside a loop (a plain script), nbchat keeps one private loop there (so
connection pools live across calls, and Ctrl-C lands in the loop it interrupts). Everywhere
else the core runs on one dedicated loop thread and the caller waits on it:
- inside a running loop (a Jupyter kernel) the loop cannot be re-entered safely: nest_asyncio
  would do it, but then the kernel's own message handlers step inside the nested run, and
  ipykernel 7 fails with "cannot enter context ... already entered" whenever a message (a
  widget event, a comm request) arrives during a sync call;
- in any other thread (a `ThreadPoolExecutor`'s workers, in a script or in a kernel), a loop
  shared between threads would be run by two of them at once ("This event loop is already
  running"), and a loop per thread would be left open when its thread ends. Calls from many
  threads run concurrently on the loop thread.

Cancellation propagates either way: a KeyboardInterrupt while waiting cancels the task,
which closes the provider's stream, and the interrupt is re-raised once it has closed.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

#: how long an interrupted call waits for the stream it cancelled to close
CANCEL_WAIT = 5.0

_private: asyncio.AbstractEventLoop | None = None
_worker: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _private_loop() -> asyncio.AbstractEventLoop:
    global _private
    with _lock:
        if _private is None or _private.is_closed():
            _private = asyncio.new_event_loop()
            atexit.register(_close_private, _private)
        return _private


def _close_private(loop: asyncio.AbstractEventLoop) -> None:
    """Finish pending async generators (open streams) before exit, quietly."""
    if loop.is_closed() or loop.is_running():
        return
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


def worker_loop() -> asyncio.AbstractEventLoop:
    """The loop thread for sync calls made off the main thread or while a loop runs
    (started once)."""
    global _worker
    with _lock:
        if _worker is None or _worker.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(
                target=loop.run_forever, name="nbchat-bridge", daemon=True
            ).start()
            _worker = loop
        return _worker


def _run_here(loop: asyncio.AbstractEventLoop, aw: Awaitable[T]) -> T:
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


def _submit(coro: Coroutine[Any, Any, T]) -> tuple[asyncio.Task[T], threading.Event]:
    """Start `coro` on the worker loop, in a copy of the caller's context (display routing)."""
    loop = worker_loop()
    ctx = contextvars.copy_context()
    started: queue.SimpleQueue[asyncio.Task[T]] = queue.SimpleQueue()
    finished = threading.Event()

    def start() -> None:
        task = ctx.run(loop.create_task, coro)
        task.add_done_callback(lambda _: finished.set())
        started.put(task)

    loop.call_soon_threadsafe(start)
    return started.get(), finished


def _refuse_on_loop_thread(coro: Any) -> None:
    if _worker is not None and threading.current_thread().name == "nbchat-bridge":
        getattr(coro, "close", lambda: None)()
        raise RuntimeError(
            "a sync nbchat call inside nbchat's own loop thread would wait for itself; "
            "use the async twin (await nbchat.achat(...))")


def _run_on_worker(coro: Coroutine[Any, Any, T]) -> T:
    _refuse_on_loop_thread(coro)
    task, finished = _submit(coro)
    loop = worker_loop()
    try:
        while not finished.wait(0.1):  # short waits: KeyboardInterrupt lands between them
            pass
    except BaseException:
        loop.call_soon_threadsafe(task.cancel)
        finished.wait(CANCEL_WAIT)
        raise
    return task.result()


def _here() -> bool:
    """Whether to run in this thread's private loop: the main thread, no loop running."""
    return threading.current_thread() is threading.main_thread() and not _in_running_loop()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code (any thread)."""
    if _here():
        return _run_here(_private_loop(), coro)
    return _run_on_worker(coro)


async def _next(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()


_DONE = object()


def iterate_sync(agen: AsyncIterator[T]) -> Iterator[T]:
    """Iterate an async iterator from sync code (any thread); closing or interrupting closes it."""
    if _here():
        return _iterate_here(agen)
    return _iterate_on_worker(agen)


def _iterate_here(agen: AsyncIterator[T]) -> Iterator[T]:
    loop = _private_loop()
    try:
        while True:
            try:
                item = _run_here(loop, _next(agen))
            except StopAsyncIteration:
                return
            yield item
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            try:
                _run_here(loop, aclose())
            except RuntimeError:  # already closed by the cancelled task
                pass


def _iterate_on_worker(agen: AsyncIterator[T]) -> Iterator[T]:
    """A pump task on the worker loop feeds a thread-safe queue; no loop hop per item."""
    _refuse_on_loop_thread(agen)
    items: queue.SimpleQueue[Any] = queue.SimpleQueue()

    async def pump() -> None:
        try:
            async for item in agen:
                items.put(item)
            items.put(_DONE)
        except BaseException as exc:
            items.put(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                await aclose()

    task, finished = _submit(pump())
    try:
        while True:
            while True:
                try:
                    item = items.get(timeout=0.1)  # short waits: KeyboardInterrupt lands
                    break
                except queue.Empty:
                    continue
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if not finished.is_set():
            worker_loop().call_soon_threadsafe(task.cancel)
            finished.wait(CANCEL_WAIT)
