"""The public functions: chat/achat, stream/astream, batch, count, models. Sync and async
twins. `nbchat.map` (prompts over a table) lives in nbchat.core.mapping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from . import registry, replay
from .bridge import iterate_sync, run_sync
from .conversation import Conversation
from .credentials import Secret, hide_key
from .errors import BadOption
from .types import ModelInfo, Reply

if TYPE_CHECKING:  # pragma: no cover
    from .preview import TokenCount


def _one_shot(model: str | None, options: dict[str, Any]) -> Conversation:
    return Conversation(model=model, **options)


async def achat(prompt: Any, model: str | None = None, **options: Any) -> Reply:
    """Send one prompt and return the whole reply.

    `prompt` is a string, a `Message`, or a list of messages (`Message`, `(role, text)` tuples
    or OpenAI-style dicts). `model` is `"provider:model"` or an alias (`"local"`, the default).
    `options` are the keywords every entry point takes (see `nbchat.core.options`).

    Raises `UsageError` (unknown model or option, bad value) before any I/O, `MissingKey`,
    `ProviderError` (with `status`), `ConnectionFailed` or `ProtocolError`.
    """
    hide_key(options)
    return await _one_shot(model, options).asend(prompt)


def chat(prompt: Any, model: str | None = None, **options: Any) -> Reply:
    """`achat`, from synchronous code (in a running loop, on nbchat's own loop thread)."""
    hide_key(options)
    return run_sync(achat(prompt, model, **options))


def astream(prompt: Any, model: str | None = None, **options: Any) -> AsyncIterator[str]:
    """Yield the reply's text chunks (str, in order) as they arrive; same arguments and errors
    as `achat`. Closing the iterator early stops the provider's stream."""
    hide_key(options)
    return _one_shot(model, options).astream(prompt)


def stream(prompt: Any, model: str | None = None, **options: Any) -> Iterator[str]:
    """`astream`, from synchronous code: an iterator of text chunks."""
    hide_key(options)
    return iterate_sync(astream(prompt, model, **options))


async def abatch(
    prompts: Iterable[Any], model: str | None = None, *, concurrency: int = 4, **options: Any
) -> list[Reply]:
    """Many prompts to one model, at most `concurrency` at a time; replies in prompt order.

    Options are validated once, before any request; the first failing prompt's error is raised.
    """
    hide_key(options)
    if concurrency < 1:
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
    """`abatch`, from synchronous code."""
    hide_key(options)
    return run_sync(abatch(prompts, model, concurrency=concurrency, **options))


async def acount(prompt: Any, model: str | None = None, **options: Any) -> TokenCount:
    """Tokens of the request `achat(prompt, model, **options)` would send (system prompt and
    `context=` summaries included), without sending it: an int (`TokenCount`) whose
    `estimated` is False when the model's own tokenizer counted (the local llama.cpp model:
    its chat template and tokenizer; loads the model) and True for an estimate (other
    providers: 4 characters a token, see nbchat.core.preview). Raises what `achat` raises
    before any I/O (`UsageError` and kin)."""
    from .preview import apreview

    hide_key(options)
    return (await apreview(prompt, model, **options)).tokens


def count(prompt: Any, model: str | None = None, **options: Any) -> TokenCount:
    """`acount`, from synchronous code, e.g. `nbchat.count("Hello", model="local")`."""
    hide_key(options)
    return run_sync(acount(prompt, model, **options))


async def amodels(
    provider: str | None = None,
    *,
    base_url: str | None = None,
    api_key: str | Secret | None = None,
) -> list[ModelInfo]:
    """Models of one provider or of all: the live list where reachable, else the table.

    `base_url` and `api_key` (with a provider) list the server they name, e.g.
    `amodels("openai", base_url="http://127.0.0.1:8080/v1")` for a llama.cpp server; otherwise
    the endpoint comes from `%config`, then the environment (see `nbchat.core.credentials`).
    Returns `ModelInfo`s with full ids (`provider:model`). Asked for one provider, raises its
    errors (`MissingKey`, `ProviderError`, `ConnectionFailed`, `UnknownModel` for an unknown
    name, `ProviderUnavailable` for a plugin that cannot load); for all providers, one that
    cannot list falls back to its table, and one that cannot load is left out.
    """
    if isinstance(api_key, str):
        api_key = Secret(api_key)  # from here on, no frame holds it plain
    if (base_url or api_key) and not provider:
        raise BadOption(
            "base_url" if base_url else "api_key",
            "name the provider too, e.g. nbchat.models('openai', base_url=...)",
        )
    if provider:
        registry.get_provider(provider)  # unknown -> UnknownModel with close matches
    names = [provider] if provider else registry.provider_names()

    async def listing(name: str) -> list[ModelInfo]:
        try:
            p = registry.get_provider(name)
        except Exception:
            if provider:
                raise
            return []  # a plugin that cannot load: the others still list
        try:
            endpoint = p.endpoint(base_url, api_key)
            # logged; answered from the log under replay
            return await replay.listing(p, endpoint, lambda: p.list_models(endpoint=endpoint))
        except Exception:
            if provider:  # asked for this provider: show why it failed
                raise
        try:
            return p.known_models()
        except Exception:  # e.g. a malformed key in its variable
            return []

    lists = await asyncio.gather(*(listing(n) for n in names))
    return [m for lst in lists for m in lst]


def models(
    provider: str | None = None,
    *,
    base_url: str | None = None,
    api_key: str | Secret | None = None,
) -> list[ModelInfo]:
    """`amodels`, from synchronous code: a list of `ModelInfo` (id, capabilities, key status),
    e.g. `nbchat.models("openai", base_url="http://127.0.0.1:8080/v1")`."""
    if isinstance(api_key, str):
        api_key = Secret(api_key)
    return run_sync(amodels(provider, base_url=base_url, api_key=api_key))
