"""Providers by name, model ids written `provider:model`, aliases, and "did you mean"."""

from __future__ import annotations

import difflib
import importlib
import os

from .errors import UnknownModel
from .provider import Provider

#: provider name -> "module:Class", imported on first use so that `%load_ext` stays fast
_BUILTIN: dict[str, str] = {
    "llamacpp": "nbchat.providers.llamacpp:LlamaCppProvider",
    "openai": "nbchat.providers.openai:OpenAIProvider",
    "cerebras": "nbchat.providers.cerebras:CerebrasProvider",
    "nvidia": "nbchat.providers.nvidia:NvidiaProvider",
    "anyscale": "nbchat.providers.anyscale:AnyscaleProvider",
    "replicate": "nbchat.providers.replicate:ReplicateProvider",
    "cog": "nbchat.providers.cog:CogProvider",
}

ALIASES: dict[str, str] = {
    "local": "llamacpp:default",
    "smollm2": "llamacpp:smollm2",
}

DEFAULT_MODEL = "local"

_instances: dict[str, Provider] = {}
_registered: dict[str, Provider] = {}


def register(provider: Provider) -> None:
    """Add (or replace) a provider; tests register fakes the same way."""
    _registered[provider.name] = provider
    _instances.pop(provider.name, None)


def unregister(name: str) -> None:
    _registered.pop(name, None)
    _instances.pop(name, None)


def provider_names() -> list[str]:
    return list(dict.fromkeys([*_BUILTIN, *_registered]))


def get_provider(name: str) -> Provider:
    if name in _registered:
        return _registered[name]
    if name not in _instances:
        if name not in _BUILTIN:
            raise UnknownModel(f"{name}:", [f"{p}:" for p in provider_names()])
        module, _, cls = _BUILTIN[name].partition(":")
        _instances[name] = getattr(importlib.import_module(module), cls)()
    return _instances[name]


def default_model() -> str:
    return os.environ.get("NBCHAT_DEFAULT_MODEL") or DEFAULT_MODEL


def known_ids() -> list[str]:
    ids = list(ALIASES)
    for name in provider_names():
        try:
            ids += [m.id for m in get_provider(name).known_models()]
        except Exception:  # a provider that cannot even list its table is not a reason to fail
            continue
    return ids


def resolve(model: str | None) -> tuple[Provider, str]:
    """(provider, provider-local model id) for a full id, an alias, or None (the default)."""
    model = (model or default_model()).strip()
    model = ALIASES.get(model, model)
    if ":" not in model:
        raise UnknownModel(model, known_ids())
    prefix, _, local = model.partition(":")
    if prefix not in provider_names():
        guesses = difflib.get_close_matches(prefix, provider_names(), n=2, cutoff=0.6)
        raise UnknownModel(model, [f"{g}:{local}" for g in guesses] + known_ids())
    provider = get_provider(prefix)
    return provider, provider.normalize_model(local)


def full_id(provider: Provider, local: str) -> str:
    return f"{provider.name}:{local}"
