"""Option keywords, declared once in `OPTIONS`: every entry point validates with it
(`parse_settings`: the functions, `Conversation`, the panel, compare), and the `%%chat` flags'
help, the panel's controls (`control_spec`) and the README's table (scripts/options_table.py)
are derived from it.

A request option fills a field of `types.Options` (what providers read); a per-call input
(images, system, base_url, api_key) fills a field of `Settings` and shapes the request itself.
The magics read the declaration when `%load_ext nbchat` runs, so this module imports
`types` only when a value is built: its fifteen dataclasses cost more to create than the rest
of the extension's load.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .errors import BadOption, UnknownOption

if TYPE_CHECKING:  # pragma: no cover
    from .credentials import Secret
    from .types import Options, Tool
    from .waits import Timeouts


def _empty_options() -> Options:
    from .types import Options

    return Options()


@dataclass(frozen=True)
class Settings:
    """Everything a call was given, validated: request options plus per-call inputs."""

    options: Options = field(default_factory=_empty_options)
    images: tuple[Any, ...] = ()
    system: str | None = None
    base_url: str | None = None
    api_key: Secret | None = field(default=None, repr=False)
    max_cost: float | None = None  # USD a request (plus its thread so far) may cost; costs.py
    timeout: Timeouts | None = None  # limits on waiting for this call; waits.py
    # named objects summarized with the prompt, and their budget in tokens; summaries.py
    context: tuple[tuple[str, Any], ...] = ()
    context_budget: int | None = None
    # the tool loop and structured output (nbchat.core.loop)
    approve: Callable[[Any], Any] | None = None  # approve(call) -> bool (or awaitable)
    max_tool_steps: int = 8  # rounds of tool calls run before the loop stops
    schema_retries: int = 1  # asks again, with the validation error, when a reply does not fit
    schema_type: Any = None  # the type `schema=` named (reply.parsed is one); None: a dict

    def __repr__(self) -> str:
        # a base URL may carry a key as its user or password (http://user:key@host): shown
        # as `Reply.endpoint` shows it (`replay.public_url`: no user, password or fragment,
        # key-shaped text redacted)
        from .replay import public_url

        shown = []
        for f in dataclasses.fields(self):
            if not f.repr:
                continue
            value = getattr(self, f.name)
            if f.name == "base_url" and value:
                try:
                    value = public_url(value)
                except ValueError:
                    value = "<a URL that cannot be parsed>"
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"


#: the built-in providers (nbchat.core.registry), in the order of the README's providers table
ALL_PROVIDERS = ("llamacpp", "openai", "cerebras", "nvidia", "anyscale", "replicate", "cog")
#: the providers that speak OpenAI's chat format (JSON mode, schemas, tools, logprobs)
OPENAI_STYLE = ("llamacpp", "openai", "cerebras", "nvidia", "anyscale")

#: types checked by `Option.check`; any other `type` text describes what `Option.parse` takes
SIMPLE_TYPES = ("number", "integer", "boolean", "string")

Parser = Callable[[Any, Settings], Mapping[str, Any]]


@dataclass(frozen=True)
class Option:
    """One option keyword: its type, range, description and the providers that take it.

    `type` is "number", "integer", "boolean" or "string" (checked here, against `minimum` and
    `maximum`), or a description of the values `parse` takes. `parse(value, base)` returns the
    fields to set. `input` marks a per-call input (a `Settings` field) rather than a request
    option (an `Options` field); `field` names that field when it differs from `name`. `step` is
    the increment of the panel's control. `unset` says what happens when the option is not
    given (its default is None). `none_clears`: None resets the option to its default instead
    of leaving an earlier value (e.g. a Conversation's) in place.
    """

    name: str
    type: str
    description: str
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    input: bool = False
    providers: tuple[str, ...] = ALL_PROVIDERS
    field: str = ""
    parse: Parser | None = None
    unset: str = "the model's default"
    none_clears: bool = False

    @property
    def target(self) -> str:
        """The `Options` field (request option) or `Settings` field (input) it fills."""
        return self.field or self.name

    @property
    def default(self) -> Any:
        """The value when not given (None: the provider's or model's own default)."""
        from .types import Options

        owner = Settings if self.input else Options
        f = next(f for f in dataclasses.fields(owner) if f.name == self.target)
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return f.default

    @property
    def range(self) -> str:
        """The allowed range as text ("0..2", "at least 1"), or "" when unbounded."""
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None:
            return f"{_num(lo)}..{_num(hi)}"
        if lo is not None:
            return f"at least {_num(lo)}"
        if hi is not None:
            return f"at most {_num(hi)}"
        return ""

    @property
    def help(self) -> str:
        """The description with the range, as the `%%chat` flags' help (`%%chat?`) shows it."""
        return f"{self.description} ({self.range})" if self.range else self.description

    def check(self, value: Any, base: Settings) -> Mapping[str, Any]:
        """The fields to set for `value`; raises BadOption (naming the option) if it is bad."""
        if self.parse is not None:
            return self.parse(value, base)
        if self.type == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BadOption(self.name, f"expected a number, got {type(value).__name__}")
            self._check_range(value, "a number")
            return {self.target: float(value)}
        if self.type == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                raise BadOption(self.name, f"expected an integer, got {type(value).__name__}")
            self._check_range(value, "an integer")
            return {self.target: value}
        if self.type == "boolean":
            if not isinstance(value, bool):
                raise BadOption(self.name, "expected True or False")
            return {self.target: value}
        if self.type == "string":
            if not isinstance(value, str):
                raise BadOption(self.name, f"expected a string, got {type(value).__name__}")
            return {self.target: value}
        raise TypeError(f"option {self.name!r}: type {self.type!r} needs a parse function")

    def _check_range(self, value: float, what: str) -> None:
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None and not lo <= value <= hi:
            raise BadOption(
                self.name, f"{value} is outside {self.range}: give {what} from {_num(lo)} to "
                f"{_num(hi)}"
            )
        if lo is not None and value < lo:
            raise BadOption(self.name, f"{value} is below {_num(lo)}: give {what} {self.range}")
        if hi is not None and value > hi:
            raise BadOption(self.name, f"{value} is above {_num(hi)}: give {what} {self.range}")


def _num(x: float) -> str:
    return f"{x:g}"


# ---- parsers of the options that are not a plain number, integer, boolean or string ---------


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _stop(value: Any, base: Settings) -> dict[str, Any]:
    items = _as_list(value)
    if not all(isinstance(s, str) and s for s in items):
        raise BadOption("stop", "expected a non-empty string or a list of them")
    return {"stop": tuple(items)}


def _logprobs(value: Any, base: Settings) -> Mapping[str, Any]:
    if value is False:
        return {"logprobs": None}
    count = replace(OPTIONS["logprobs"], type="integer", parse=None)  # its declared range
    return count.check(0 if value is True else value, base)


def _schema(value: Any, base: Settings) -> dict[str, Any]:
    schema, name = schema_of(value)
    # parsed into the user's own type when pydantic can build one (a model or a dataclass)
    kind = value if isinstance(value, type) and (
        dataclasses.is_dataclass(value) or hasattr(value, "model_validate")) else None
    return {"schema": schema, "schema_name": name, "json": True, "schema_type": kind}


def _tools(value: Any, base: Settings) -> dict[str, Any]:
    return {"tools": tuple(tool_of(t) for t in _as_list(value))}


def _approve(value: Any, base: Settings) -> dict[str, Any]:
    if not callable(value):
        raise BadOption("approve", "expected a function: approve(call) -> bool")
    return {"approve": value}


def _tool_choice(value: Any, base: Settings) -> dict[str, Any]:
    if value is not None and not isinstance(value, str):
        raise BadOption("tool_choice", 'expected "auto", "required", "none" or a tool name')
    return {"tool_choice": value}  # checked against the tools once all options are in


def _input(value: Any, base: Settings) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise BadOption("input", "expected a dict of model inputs")
    return {"extra": {**base.options.extra, **value}}


def _images(value: Any, base: Settings) -> dict[str, Any]:
    return {"images": tuple(_as_list(value))}


def _api_key(value: Any, base: Settings) -> dict[str, Any]:
    from .credentials import Secret  # on first use: %load_ext reads this module

    if not isinstance(value, (str, Secret)):
        raise BadOption("api_key", f"expected a string, got {type(value).__name__}")
    return {"api_key": value if isinstance(value, Secret) else Secret(value)}


def _timeout(value: Any, base: Settings) -> dict[str, Any]:
    from .waits import parse_timeout  # on first use: %load_ext reads this module

    new = parse_timeout(value)
    return {"timeout": new.over(base.timeout) if base.timeout is not None else new}


def _context(value: Any, base: Settings) -> dict[str, Any]:
    from .summaries import named  # on first use: %load_ext reads this module

    return {"context": named(value)}


#: every option keyword nbchat takes, the same everywhere (functions, Conversation, %%chat,
#: ChatPanel, compare); the README's options table is generated from it
OPTIONS: dict[str, Option] = {o.name: o for o in (
    Option("temperature", "number",
           "sampling temperature: 0 picks the likeliest token every time, higher is more varied",
           minimum=0, maximum=2, step=0.1),
    Option("top_p", "number",
           "nucleus sampling: draw only from the likeliest tokens whose probabilities add up "
           "to top_p", minimum=0, maximum=1, step=0.05),
    Option("max_tokens", "integer",
           "longest reply in tokens; a reply cut there has finish_reason 'length'",
           minimum=1, step=1),
    Option("stop", "string or list of strings",
           "stop sequences: the reply ends before the first one it would contain", parse=_stop),
    Option("seed", "integer",
           "sampling seed: the same seed, prompt and temperature repeat a reply where the "
           "model allows it", minimum=0, step=1),
    Option("json", "boolean", "ask for a reply that is one JSON object (reply.json parses it)",
           providers=OPENAI_STYLE),
    Option("schema", "dict, dataclass or pydantic model",
           "JSON schema the reply must follow (implies json)", providers=OPENAI_STYLE,
           parse=_schema, unset="none"),
    Option("tools", "function, tool schema or a list of them",
           "tools the model may call; a function's schema comes from its type hints and "
           "docstring", providers=OPENAI_STYLE, parse=_tools),
    Option("tool_choice", "string",
           '"auto", "required", "none" or a tool\'s name: whether and which tool to call',
           providers=OPENAI_STYLE, parse=_tool_choice, unset="the model chooses",
           none_clears=True),
    # ---- the tool loop and structured output (nbchat.core.loop) ----
    Option("approve", "function",
           "called with each tool call before it runs (approve(call) -> bool, or awaitable); "
           "a denied call sends 'denied by user' to the model", input=True,
           providers=OPENAI_STYLE, parse=_approve, unset="every call runs"),
    Option("max_tool_steps", "integer",
           "rounds of tool calls run before the tool loop stops (ToolStepLimit, keeping what "
           "arrived)", minimum=1, step=1, input=True, providers=OPENAI_STYLE, unset="8"),
    Option("schema_retries", "integer",
           "with schema=: times to ask again, with the validation error, when a reply does "
           "not fit; then SchemaMismatch holds the raw text", minimum=0, step=1,
           input=True, providers=OPENAI_STYLE, unset="1"),
    Option("logprobs", "integer or boolean",
           "token log-probabilities in reply.logprobs, with N alternatives per token; "
           "0 or True: the chosen token only", minimum=0, providers=OPENAI_STYLE,
           parse=_logprobs, unset="off"),
    Option("input", "dict",
           "raw model inputs merged into the request as given (Replicate and Cog input "
           "fields, extra request-body fields elsewhere)", field="extra", parse=_input),
    Option("images", "path, URL, bytes, PIL image or a list of them",
           "images sent with the prompt, to models that can see", input=True, parse=_images),
    Option("system", "string", "system prompt", input=True, unset="none"),
    Option("base_url", "string",
           "endpoint of a self-hosted or proxy server", input=True,
           providers=ALL_PROVIDERS[1:],
           unset="`%config ChatMagics.base_urls`, else the provider's `*_BASE_URL` variable"),
    Option("api_key", "string",
           "API key; never shown in any output", input=True,
           providers=("openai", "cerebras", "nvidia", "anyscale", "replicate"),
           parse=_api_key, unset="`%config ChatMagics.api_keys`, else the provider's key variable"),
    Option("max_cost", "number",
           "refuse a request, before sending it, whose estimated cost in US dollars "
           "(prices in nbchat.core.costs) plus what its thread already spent would exceed this",
           minimum=0, input=True, unset="no limit"),
    Option("timeout", "seconds or dict",
           "limits on waiting, in seconds: a number bounds the whole reply; a dict sets any of "
           "connect, first_byte (to the start of the answer), idle (the longest silence in a "
           "stream) and total", input=True, parse=_timeout,
           unset="connect 10, first_byte 60, idle 60, total 600 (`%config ChatMagics.*_timeout`)"),
    # ---- context (nbchat.core.summaries) ----
    Option("context", "names or {name: value}",
           "objects summarized with the prompt (DataFrames, arrays, strings, collections, "
           "figures; in a notebook also 'error' and 'cell:N' / 'In[N]'); only what is named is "
           "sent", input=True, parse=_context, unset="none"),
    Option("context_budget", "integer",
           "tokens the context's summaries may take together (estimated at 4 characters a "
           "token)", minimum=50, step=50, input=True, unset="1000"),
)}

#: every option keyword nbchat takes
OPTION_NAMES = tuple(OPTIONS)


def parse_settings(kwargs: Mapping[str, Any], base: Settings | None = None) -> Settings:
    """Validate option keywords, layered over `base` (e.g. a Conversation's defaults).

    None means "not given" (the base's value stays), except for options declared
    `none_clears`. Raises UnknownOption (with the close match) or BadOption.
    """
    base = base or Settings()
    opts: dict[str, Any] = {}
    top: dict[str, Any] = {}
    for name, value in kwargs.items():
        spec = OPTIONS.get(name)
        if spec is None:
            raise UnknownOption(name, OPTION_NAMES)
        if value is None and not spec.none_clears:
            continue
        for key, field_value in spec.check(value, base).items():
            (top if spec.input or key in _SETTINGS_ONLY else opts)[key] = field_value
    if not opts and not top:
        return base  # nothing given (Settings are frozen): a map builds one per row
    options = replace(base.options, **opts)
    _check_tool_choice(options)
    return replace(base, options=options, **top)


#: Settings fields that an option which is not an input may fill too (schema= keeps its type)
_SETTINGS_ONLY = frozenset({"schema_type"})


def control_spec(name: str) -> dict[str, Any]:
    """What a front end needs to draw a number control for an option: name, label, type
    ("number" or "integer"), min, max, step (None: unbounded) and description."""
    spec = OPTIONS[name]
    if spec.type not in ("number", "integer"):
        raise ValueError(f"option {name!r} is a {spec.type}, not a number")
    return {
        "name": spec.name,
        "label": spec.name.replace("_", " ").capitalize(),
        "type": spec.type,
        "min": spec.minimum,
        "max": spec.maximum,
        "step": spec.step,
        "description": spec.help[:1].upper() + spec.help[1:],
    }


def _check_tool_choice(options: Options) -> None:
    choice = options.tool_choice
    if choice is None:
        return
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
    """(JSON schema, name) from a dict, a dataclass or a pydantic model class.

    A tool-shaped dict (`{"type": "function", "function": {"name", "parameters"}}`, or the
    bare `{"name", "parameters"}`) gives its parameters and name; one without parameters
    raises BadOption. Any other dict is the schema itself, named by its `title`."""
    if isinstance(value, Mapping):
        fn = value.get("function") if value.get("type") == "function" else None
        if fn is None and "parameters" in value and "properties" not in value:
            fn = value  # the bare function form
        if fn is not None:
            params = fn.get("parameters") if isinstance(fn, Mapping) else None
            if not isinstance(params, Mapping):
                raise BadOption("schema", "this is a tool schema without 'parameters'; give the "
                                "JSON schema of the reply, or pass the tool in tools=[...]")
            return dict(params), _schema_name(str(fn.get("name") or "response"))
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


_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names


def tool_of(value: Any) -> Tool:
    """A Tool from a function (schema from its signature, type hints and docstring, built by
    pydantic, which also checks the model's arguments before the function runs) or from an
    OpenAI-style schema dict, kept as written (`strict` and any other key go on the wire).

    The bare form `{"name", "description", "parameters", ...}` is wrapped as
    `{"type": "function", "function": {...}}`. Raises BadOption for a dict without a name, a
    function whose name is not a valid tool name (a lambda) or whose parameters pydantic
    cannot describe."""
    from .types import Tool

    if isinstance(value, Tool):
        return value
    if isinstance(value, Mapping):
        spec = value.get("function", value)
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise BadOption("tools", "a tool schema needs a 'name'")
        wire = dict(value) if "function" in value else {"type": "function", "function": dict(value)}
        return Tool(
            name=spec["name"],
            description=spec.get("description", ""),
            parameters=dict(spec.get("parameters") or {"type": "object", "properties": {}}),
            spec=wire,
        )
    if callable(value):
        try:
            tool = _function_tools.get(value)
        except TypeError:  # not weakly referable: built each time
            return _tool_from_function(value)
        if tool is None:
            tool = _function_tools[value] = _tool_from_function(value)
        return tool
    raise BadOption("tools", "expected functions or JSON schema dicts")


#: tools built from functions (building one takes pydantic milliseconds; a loop sends many)
_function_tools: weakref.WeakKeyDictionary[Any, Tool] = weakref.WeakKeyDictionary()


def _tool_from_function(fn: Callable[..., Any]) -> Tool:
    import warnings

    import pydantic

    from .types import Tool

    name = getattr(fn, "__name__", type(fn).__name__)
    if not _TOOL_NAME.match(name):
        raise BadOption("tools", f"{name!r} is not a tool name (letters, digits, _ and -, "
                        "at most 64): define the function with def and a name")
    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that does not resolve: use them as written
        hints = {p: a.annotation for p, a in sig.parameters.items()
                 if a.annotation is not inspect.Parameter.empty}
    summary, arg_docs = _parse_docstring(inspect.getdoc(fn) or "")
    fields: dict[str, Any] = {}
    # `**kwargs` takes the arguments no other parameter does, as the model sent them (the
    # schema says so with additionalProperties: true); without it, unknown keys are dropped
    extra = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    for i, (pname, param) in enumerate(sig.parameters.items()):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        # fields are p0, p1...: a parameter may be called like a BaseModel attribute (json)
        fields[f"p{i}"] = (hints.get(pname, str), pydantic.Field(
            default, alias=pname, description=arg_docs.get(pname)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = pydantic.create_model(
                f"{name}_arguments", __config__=pydantic.ConfigDict(extra="allow") if extra
                else None, **fields)
            params = model.model_json_schema()
    except Exception as exc:
        raise BadOption("tools", f"{name}: pydantic cannot describe its parameters ({exc}); "
                        "use JSON types (str, int, float, bool, lists, dicts, pydantic "
                        "models) or give a tool schema dict") from None
    params.pop("title", None)
    for prop in params.get("properties", {}).values():
        prop.pop("title", None)
    params.setdefault("required", [])
    return Tool(name=name, description=summary, parameters=params, function=fn,
                arguments=model)


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
