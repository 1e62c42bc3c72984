"""The local llama.cpp model: load options, nbchat's settings for it, its cache and its weights.

    import nbchat.local
    nbchat.local.configure(n_ctx=8192, n_gpu_layers=-1)        # every local model
    nbchat.local.configure("smollm2", chat_format="chatml-function-calling")  # one model
    nbchat.local.options("smollm2")   # {"n_ctx": 8192, "n_gpu_layers": -1, ...}
    nbchat.local.clear_cache()        # forget the reused contexts
    nbchat.local.unload()             # free the weights

Options are llama.cpp's load options (the keyword arguments of `llama_cpp.Llama`) plus
`history_window`, `cache_states` and `cache_bytes`; an unknown name is refused with the list of
valid ones. In a notebook, `%config LlamaCpp.options = {"n_ctx": 8192}` does the same as
`configure(n_ctx=8192)`. The same options go on a model id (`llamacpp:smollm2?n_ctx=8192`) or in
`NBCHAT_LLAMACPP_OPTIONS` (`n_ctx=8192&n_threads=4`). A changed load option reloads the model on
its next use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from traitlets import Dict, TraitError, observe, validate
from traitlets.config import Configurable

if TYPE_CHECKING:  # pragma: no cover
    from .providers.llamacpp.provider import LlamaCppProvider

__all__ = ["LlamaCpp", "clear_cache", "configure", "load_option_names", "options", "unload"]


def _provider() -> LlamaCppProvider:
    from .core.registry import get_provider

    return get_provider("llamacpp")  # type: ignore[return-value]


def configure(model: str | None = None, **options: Any) -> None:
    """Set options for one local model (an id such as "smollm2" or a .gguf path) or, with no
    model, for every local model. `name=None` unsets one. Raises UnknownOption (with the valid
    names), BadOption, UnknownModel."""
    _provider().configure(model, **options)


def options(model: str = "default") -> dict[str, Any]:
    """The load options and settings in effect for a model id (defaults included)."""
    _, load, settings = _provider().resolve_options(model)
    return {**load, **settings}


def load_option_names() -> list[str]:
    """Every option name `configure` accepts: llama.cpp's load options, then nbchat's."""
    from .providers.llamacpp.options import SETTINGS, load_option_types

    return [*load_option_types(), *SETTINGS]


def clear_cache(model: str | None = None) -> None:
    """Forget the reused contexts (the live KV cache and the saved conversation states), so
    the next call evaluates its prompt afresh; of one model or of all loaded ones."""
    from .providers.llamacpp.options import model_path, split_id

    path = None if model is None else model_path(split_id(model)[0])
    for loaded in _provider().loaded():
        if path is None or loaded.path == path:
            with loaded.lock:
                loaded.cache.clear(loaded.llm)


def unload(model: str | None = None) -> None:
    """Free a model's weights (or every local model's); the next call loads them again."""
    _provider().unload(model)


class LlamaCpp(Configurable):
    """`%config LlamaCpp.options = {...}`: options for every local model (see nbchat.local)."""

    options = Dict(
        help="llama.cpp load options and nbchat settings for every local model, e.g. "
        "{'n_ctx': 8192, 'n_gpu_layers': -1, 'history_window': 'auto'}"
    ).tag(config=True)

    @validate("options")
    def _check(self, proposal: dict[str, Any]) -> dict[str, Any]:
        from .core.errors import NbchatError
        from .providers.llamacpp.options import check_options

        try:
            check_options(proposal["value"])
        except NbchatError as exc:
            raise TraitError(str(exc)) from None
        return proposal["value"]

    @observe("options")
    def _apply(self, change: dict[str, Any]) -> None:
        removed = {name: None for name in change["old"] or {} if name not in change["new"]}
        configure(**removed, **change["new"])


def register(shell: Any) -> LlamaCpp:
    """Make `%config LlamaCpp...` reach the local model (once per shell)."""
    for c in shell.configurables:
        if isinstance(c, LlamaCpp):
            return c
    config = LlamaCpp(config=shell.config)
    shell.configurables.append(config)
    if config.options:  # from an IPython profile's config file
        configure(**config.options)
    return config
