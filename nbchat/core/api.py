"""The public functions: chat/achat, stream/astream, batch, models. Sync and async twins."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from . import registry
from .bridge import iterate_sync, run_sync
from .conversation import Conversation
from .types import ModelInfo, Reply


def _one_shot(model: str | None, options: dict[str, Any]) -> Conversation:
    return Conversation(model=model, **options)


async def achat(prompt: Any, model: str | None = None, **options: Any) -> Reply:
    """Send one prompt (a string or a list of messages) and return the whole reply."""
    return await _one_shot(model, options).asend(prompt)


def chat(prompt: Any, model: str | None = None, **options: Any) -> Reply:
    return run_sync(achat(prompt, model, **options))


def astream(prompt: Any, model: str | None = None, **options: Any) -> AsyncIterator[str]:
    """Yield the reply's text chunks as they arrive."""
    return _one_shot(model, options).astream(prompt)


def stream(prompt: Any, model: str | None = None, **options: Any) -> Iterator[str]:
    return iterate_sync(astream(prompt, model, **options))


async def abatch(
    prompts: Iterable[Any], model: str | None = None, *, concurrency: int = 4, **options: Any
) -> list[Reply]:
    """Many prompts to one model, at most `concurrency` at a time; replies in prompt order."""
    if concurrency < 1:
        from .errors import BadOption

        raise BadOption("concurrency", "must be at least 1")
    _one_shot(model, options)  # validates model and options once, up front
    sem = asyncio.Semaphore(concurrency)

    async def one(p: Any) -> Reply:
        async with sem:
            return await Conversation(model=model, **options).asend(p)

    return list(await asyncio.gather(*(one(p) for p in prompts)))


def batch(
    prompts: Iterable[Any], model: str | None = None, *, concurrency: int = 4, **options: Any
) -> list[Reply]:
    return run_sync(abatch(prompts, model, concurrency=concurrency, **options))


async def amodels(provider: str | None = None) -> list[ModelInfo]:
    """Models of one provider or of all: the live list where reachable, else the table."""
    names = [provider] if provider else registry.provider_names()
    for name in names:
        registry.get_provider(name)  # unknown provider -> UnknownModel with close matches

    async def listing(name: str) -> list[ModelInfo]:
        p = registry.get_provider(name)
        try:
            return await p.list_models()
        except Exception:
            if provider:  # asked for this provider: show why it failed
                raise
            return p.known_models()

    lists = await asyncio.gather(*(listing(n) for n in names))
    return [m for lst in lists for m in lst]


def models(provider: str | None = None) -> list[ModelInfo]:
    return run_sync(amodels(provider))
