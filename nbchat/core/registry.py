"""Providers by name, model ids written `provider:model`, aliases, and "did you mean".

Three kinds of provider, looked up in this order:
- registered at run time with `register()` (tests register fakes this way);
- built in (`_BUILTIN`), imported on first use so that `%load_ext` stays fast;
- plugins: entry points of the group `nbchat.providers` in installed packages, whose name is
  the provider's name and whose value is a `Provider` subclass, e.g. in a plugin's
  pyproject.toml::

      [project.entry-points."nbchat.providers"]
      echo = "nbchat_echo:EchoProvider"

  Entry points are read on the first lookup that needs them (never at `%load_ext`), and a
  plugin's module is imported on first use. A plugin that fails to load raises
  `ProviderUnavailable` for its own name only: `%models` lists it with the reason, every other
  provider keeps working. A plugin cannot replace a built-in name.
"""

from __future__ import annotations

import difflib
import importlib
import os
from typing import TYPE_CHECKING

from .errors import ProviderUnavailable, UnknownModel
from .provider import Provider

if TYPE_CHECKING:  # pragma: no cover
    from importlib.metadata import EntryPoint

#: the entry-point group third-party packages add providers to
ENTRY_POINT_GROUP = "nbchat.providers"

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
_plugins: dict[str, EntryPoint] | None = None  # None until the entry points are first read


def register(provider: Provider) -> None:
    """Add (or replace) a provider under `provider.name`, ahead of built-ins and plugins.

    Tests register fakes the same way; `unregister(name)` undoes it."""
    _registered[provider.name] = provider
    _instances.pop(provider.name, None)


def unregister(name: str) -> None:
    """Remove a provider added with `register()`, and forget the cached instance of a built-in
    or plugin provider of that name (the next lookup makes a fresh one). Unknown names are
    ignored."""
    _registered.pop(name, None)
    _instances.pop(name, None)


def plugins(*, refresh: bool = False) -> dict[str, EntryPoint]:
    """Provider name -> entry point of the group `nbchat.providers`, read once (again with
    `refresh=True`, e.g. after installing a plugin into a running kernel)."""
    global _plugins
    if _plugins is None or refresh:
        from importlib.metadata import entry_points

        found: dict[str, EntryPoint] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name not in _BUILTIN:  # a plugin cannot take a built-in's name
                found.setdefault(ep.name, ep)
        _plugins = found
    return _plugins


def provider_names() -> list[str]:
    """Every provider name: built-ins, then plugins, then registered ones."""
    return list(dict.fromkeys([*_BUILTIN, *plugins(), *_registered]))


def has_provider(name: str) -> bool:
    """Whether a provider of that name exists. Built-in and registered names are checked
    first, so they never read the entry points; an unknown name reads them again (a plugin
    may have been installed since)."""
    return name in _registered or name in _BUILTIN or name in plugins() \
        or name in plugins(refresh=True)


def get_provider(name: str) -> Provider:
    """The provider of that name (one instance per name). Raises `UnknownModel` for a name no
    provider has, `ProviderUnavailable` for a plugin that cannot be loaded, and
    `ImportError` for a built-in whose optional dependency is missing."""
    if name in _registered:
        return _registered[name]
    if name not in _instances:
        if name in _BUILTIN:
            module, _, cls = _BUILTIN[name].partition(":")
            _instances[name] = getattr(importlib.import_module(module), cls)()
        elif has_provider(name):
            _instances[name] = _load_plugin(name, plugins()[name])
        else:
            raise UnknownModel(f"{name}:", [f"{p}:" for p in provider_names()])
    return _instances[name]


def _load_plugin(name: str, ep: EntryPoint) -> Provider:
    dist = getattr(ep, "dist", None)
    origin = f"the plugin {ep.value!r}" + (f" of {dist.name} {dist.version}" if dist else "")
    try:
        cls = ep.load()
    except Exception as exc:
        raise ProviderUnavailable(
            f"provider {name!r}: {origin} cannot be loaded ({type(exc).__name__}: {exc}); "
            "reinstall or uninstall that package"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise ProviderUnavailable(
            f"provider {name!r}: {origin} is not a nbchat.Provider subclass"
        )
    if cls.name and cls.name != name:
        raise ProviderUnavailable(
            f"provider {name!r}: {origin} calls itself {cls.name!r}; the entry point's name "
            "and the class's `name` must be the same"
        )
    try:
        provider = cls()
    except Exception as exc:
        raise ProviderUnavailable(
            f"provider {name!r}: {origin} failed to start ({type(exc).__name__}: {exc})"
        ) from exc
    if not provider.name:
        provider.name = name  # type: ignore[misc]
    return provider


def default_model() -> str:
    """The model id used when none is given: `NBCHAT_DEFAULT_MODEL`, else `local`."""
    return os.environ.get("NBCHAT_DEFAULT_MODEL") or DEFAULT_MODEL


def known_ids() -> list[str]:
    """Every id known without the network: the aliases, then each provider's capability table
    (a provider whose table fails is skipped).
    """
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
    base, q, query = model.partition("?")  # "local?n_ctx=8192": options ride on the alias
    model = ALIASES.get(base, base) + q + query
    if ":" not in model:
        raise UnknownModel(model, known_ids())
    prefix, _, local = model.partition(":")
    if not has_provider(prefix):
        guesses = difflib.get_close_matches(prefix, provider_names(), n=2, cutoff=0.6)
        raise UnknownModel(model, [f"{g}:{local}" for g in guesses] + known_ids())
    provider = get_provider(prefix)
    return provider, provider.normalize_model(local)


def unlisted_warning(provider: Provider, local: str, base_url: str | None) -> str | None:
    """A "did you mean" for a model id that the provider's capability table does not know but
    that is close to ids it does (a typo such as `cerebras:llama3.1-7b`), when the request goes
    to the provider's own hosted endpoint; else None. The id is still sent: new models appear
    every week, and a self-hosted endpoint serves whatever it loaded."""
    if provider.default_base_url is None:
        return None
    try:
        if provider.endpoint(base_url).base_url != provider.default_base_url:
            return None
        names = [m.name for m in provider.known_models()]
    except Exception:  # a bad key or table is reported by the turn itself
        return None
    if not names or local in names:
        return None
    near = difflib.get_close_matches(local, names, n=3, cutoff=0.75)
    if not near:
        return None
    name = provider.name
    return (f"nbchat: {name}:{local} is not in nbchat's table of {name} models; did you mean "
            f"{' or '.join(f'{name}:{n}' for n in near)}? Sending it as written.")


def full_id(provider: Provider, local: str) -> str:
    """The full id `provider:model` of a provider-local id."""
    return f"{provider.name}:{local}"
