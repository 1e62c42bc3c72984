"""Option keywords: one validator for every entry point (functions, Conversation, panel,
compare)."""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .credentials import Secret
from .errors import BadOption, UnknownOption
from .types import Options, Tool

#: every option keyword nbchat takes, the same everywhere
OPTION_NAMES = (
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "seed",
    "json",
    "schema",
    "tools",
    "tool_choice",
    "logprobs",
    "images",
    "system",
    "base_url",
    "api_key",
    "input",
)


@dataclass(frozen=True)
class Settings:
    """Everything a call was given, validated: request options plus per-call inputs."""

    options: Options = field(default_factory=Options)
    images: tuple[Any, ...] = ()
    system: str | None = None
    base_url: str | None = None
    api_key: Secret | None = field(default=None, repr=False)


def _number(name: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadOption(name, f"expected a number, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise BadOption(name, f"{value} is outside {lo}..{hi}")
    return float(value)


def _int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadOption(name, f"expected an integer, got {type(value).__name__}")
    if value < lo:
        raise BadOption(name, f"{value} is below {lo}")
    return value


def parse_settings(kwargs: Mapping[str, Any], base: Settings | None = None) -> Settings:
    """Validate option keywords, layered over `base` (e.g. a Conversation's defaults)."""
    base = base or Settings()
    opts: dict[str, Any] = {}
    top: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name not in OPTION_NAMES:
            raise UnknownOption(name, OPTION_NAMES)
        if value is None and name not in ("tool_choice",):
            continue
        if name == "temperature":
            opts[name] = _number(name, value, 0, 2)
        elif name == "top_p":
            opts[name] = _number(name, value, 0, 1)
        elif name == "max_tokens":
            opts[name] = _int(name, value, 1)
        elif name == "seed":
            opts[name] = _int(name, value, 0)
        elif name == "logprobs":
            if value is True:
                value = 0
            opts[name] = None if value is False else _int(name, value, 0)
        elif name == "stop":
            opts[name] = _stop(value)
        elif name == "json":
            if not isinstance(value, bool):
                raise BadOption(name, "expected True or False")
            opts[name] = value
        elif name == "schema":
            opts["schema"], opts["schema_name"] = schema_of(value)
            opts["json"] = True
        elif name == "tools":
            opts[name] = tuple(tool_of(t) for t in _as_list(value))
        elif name == "tool_choice":
            opts[name] = value
        elif name == "input":
            if not isinstance(value, Mapping):
                raise BadOption(name, "expected a dict of model inputs")
            opts["extra"] = {**base.options.extra, **value}
        elif name == "images":
            top[name] = tuple(_as_list(value))
        elif name == "api_key":
            if not isinstance(value, (str, Secret)):
                raise BadOption(name, f"expected a string, got {type(value).__name__}")
            top[name] = value if isinstance(value, Secret) else Secret(value)
        elif name in ("system", "base_url"):
            if not isinstance(value, str):
                raise BadOption(name, f"expected a string, got {type(value).__name__}")
            top[name] = value
    options = replace(base.options, **opts)
    _check_tool_choice(options)
    return replace(base, options=options, **top)


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _stop(value: Any) -> tuple[str, ...]:
    items = _as_list(value)
    if not all(isinstance(s, str) and s for s in items):
        raise BadOption("stop", "expected a non-empty string or a list of them")
    return tuple(items)


def _check_tool_choice(options: Options) -> None:
    choice = options.tool_choice
    if choice is None:
        return
    if not isinstance(choice, str):
        raise BadOption("tool_choice", 'expected "auto", "required", "none" or a tool name')
    names = [t.name for t in options.tools]
    if choice not in ("auto", "required", "none") and choice not in names:
        if not names:
            raise BadOption("tool_choice", "give tools=[...] to choose from")
        raise BadOption(
            "tool_choice", f'{choice!r} is not "auto", "required", "none" or one of {names}'
        )


# ---- JSON schemas from Python things -------------------------------------------------------

_PY_TO_JSON: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def json_type(tp: Any) -> dict[str, Any]:
    """A JSON schema for a type hint (enough for tool parameters and dataclass fields)."""
    if tp in _PY_TO_JSON:
        return {"type": _PY_TO_JSON[tp]}
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple):
        return {"type": "array", "items": json_type(args[0])} if args else {"type": "array"}
    if origin in (dict,) or tp is dict:
        return {"type": "object"}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return json_type(non_none[0])
        return {"anyOf": [json_type(a) for a in args]}
    if dataclasses.is_dataclass(tp):
        return schema_of(tp)[0]
    if hasattr(tp, "model_json_schema"):
        return dict(tp.model_json_schema())
    return {}


def schema_of(value: Any) -> tuple[dict[str, Any], str]:
    """(JSON schema, name) from a dict, a dataclass or a pydantic model class."""
    if isinstance(value, Mapping):
        schema = dict(value)
        return schema, str(schema.get("title") or "response")
    if isinstance(value, type) and dataclasses.is_dataclass(value):
        hints = typing.get_type_hints(value)
        props = {f.name: json_type(hints.get(f.name, Any)) for f in dataclasses.fields(value)}
        required = [
            f.name
            for f in dataclasses.fields(value)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        schema = {"type": "object", "properties": props, "required": required}
        return schema, _schema_name(value.__name__)
    if isinstance(value, type) and hasattr(value, "model_json_schema"):
        return dict(value.model_json_schema()), _schema_name(value.__name__)
    raise BadOption("schema", "expected a JSON schema dict, a dataclass or a pydantic model")


def _schema_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "response"


def tool_of(value: Any) -> Tool:
    """A Tool from a function (schema from hints and docstring) or an OpenAI-style schema dict."""
    if isinstance(value, Tool):
        return value
    if isinstance(value, Mapping):
        spec = value.get("function", value)
        if "name" not in spec:
            raise BadOption("tools", "a tool schema needs a 'name'")
        return Tool(
            name=spec["name"],
            description=spec.get("description", ""),
            parameters=dict(spec.get("parameters") or {"type": "object", "properties": {}}),
        )
    if callable(value):
        return _tool_from_function(value)
    raise BadOption("tools", "expected functions or JSON schema dicts")


def _tool_from_function(fn: Callable[..., Any]) -> Tool:
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    doc = inspect.getdoc(fn) or ""
    summary, arg_docs = _parse_docstring(doc)
    props: dict[str, Any] = {}
    required = []
    for pname, param in sig.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        schema = json_type(hints.get(pname, str))
        if pname in arg_docs:
            schema["description"] = arg_docs[pname]
        props[pname] = schema
        if param.default is inspect.Parameter.empty:
            required.append(pname)
    params = {"type": "object", "properties": props, "required": required}
    return Tool(name=fn.__name__, description=summary, parameters=params, function=fn)


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Summary and per-argument descriptions (Google or reST style)."""
    lines = doc.splitlines()
    summary_lines: list[str] = []
    for line in lines:
        if not line.strip():
            break
        summary_lines.append(line.strip())
    args: dict[str, str] = {}
    for line in lines:
        m = re.match(r"\s*:param\s+(\w+):\s*(.+)", line) or re.match(
            r"\s+(\w+)\s*(?:\([^)]*\))?:\s*(.+)", line
        )
        if m:
            args[m.group(1)] = m.group(2).strip()
    return " ".join(summary_lines), args
