"""Pure value types shared by every provider and every front end.

Messages are lists of parts; a provider turns them into its own wire form. Streams are
sequences of events; every front end (functions, magics, panel, compare) consumes the same ones.
"""

from __future__ import annotations

import json as _json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class TextPart:
    """A run of text in a message."""

    text: str


@dataclass(frozen=True)
class ImagePart:
    """An image as raw bytes; providers choose data URI, asset upload or string form."""

    data: bytes
    mime: str = "image/png"
    url: str | None = None  # the remote URL it came from, when it had one

    def data_uri(self) -> str:
        """The image as a `data:<mime>;base64,...` URI (RFC 2397), the form OpenAI-style
        `image_url` parts take.
        """
        import base64

        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"

    def __repr__(self) -> str:
        return f"ImagePart(mime={self.mime!r}, {len(self.data)} bytes)"


Part = TextPart | ImagePart


@dataclass(frozen=True)
class ToolCall:
    """A call the model asked for: the tool's name, its arguments (a JSON object, parsed)
    and the call id the provider gave (None when it gave none).

    Arguments that were not valid JSON arrive as `{"_raw": text}`; a non-object value as
    `{"value": v}` (see `openai_wire.ToolCallAssembler.finish`).
    """

    name: str
    arguments: dict[str, Any]
    id: str | None = None

    @property
    def arguments_json(self) -> str:
        """The arguments as compact JSON text, the OpenAI wire's `function.arguments` form."""
        return _json.dumps(self.arguments)


@dataclass(frozen=True)
class Message:
    """One chat message: a role (`system`, `user`, `assistant`, `tool`) and its parts in order.

    An assistant message may carry `tool_calls`; a `tool` message answers the call whose id is
    `tool_call_id`. `interrupted` marks an assistant turn stopped before it finished.
    """

    role: Role
    parts: tuple[Part, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None  # for role="tool"
    interrupted: bool = False  # an assistant turn that was stopped before it finished

    @classmethod
    def of(cls, role: Role, text: str, images: tuple[ImagePart, ...] = ()) -> Message:
        """A message of `role` with `text` (left out when empty) followed by `images`."""
        parts: tuple[Part, ...] = ((TextPart(text),) if text else ()) + tuple(images)
        return cls(role, parts)

    @property
    def text(self) -> str:
        """The text parts joined, without separators ("" when there are none)."""
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def images(self) -> tuple[ImagePart, ...]:
        """The image parts, in order."""
        return tuple(p for p in self.parts if isinstance(p, ImagePart))


@dataclass(frozen=True)
class Usage:
    """Token counts of one turn; None when the provider did not say.

    On the OpenAI wire these are `usage.prompt_tokens` and `usage.completion_tokens`. When a
    stream reports no usage (llama.cpp server, an interrupted stream), `output_tokens` is the
    number of text deltas, one delta counted as one token.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None

    @property
    def total_tokens(self) -> int | None:
        """Input plus output tokens; None unless both are known."""
        if self.input_tokens is None or self.output_tokens is None:
            return None
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class Tool:
    """A tool the model may call: a JSON schema for its parameters, and the function if given.

    `spec` is the `tools[]` entry exactly as the user wrote it (`strict`, and any other key,
    kept on the wire); None for a tool built from a function. `arguments` is the pydantic model
    that checks a function's arguments before it runs (None for a written schema).
    """

    name: str
    description: str
    parameters: dict[str, Any]
    function: Any = None
    spec: dict[str, Any] | None = None
    arguments: Any = None

    def to_openai(self) -> dict[str, Any]:
        """The tool as an OpenAI `tools[]` entry: `{"type": "function", "function": {"name",
        "description", "parameters"}}` (https://platform.openai.com/docs/api-reference/chat/create),
        or the user's own entry as written (`spec`).
        """
        if self.spec is not None:
            return self.spec
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass(frozen=True)
class ToolStep:
    """One tool call the model made and what went back to it (a `tool` message).

    `result` is the text sent back; `value` what the function returned (None when it raised,
    was denied or has no function); `error` the exception's text when it raised; `denied` when
    the approval hook said no; `duration` the seconds it ran.
    """

    call: ToolCall
    result: str
    value: Any = None
    error: str | None = None
    denied: bool = False
    duration: float | None = None


@dataclass(frozen=True)
class Options:
    """Validated request options; None means the provider's default."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    json: bool = False
    schema: dict[str, Any] | None = None
    schema_name: str = "response"
    tools: tuple[Tool, ...] = ()
    tool_choice: str | None = None  # "auto" | "required" | "none" | a tool's name
    logprobs: int | None = None  # None: off; N: top N alternatives (0 = chosen token only)
    extra: dict[str, Any] = field(default_factory=dict)  # provider-specific inputs passed through


@dataclass(frozen=True)
class Request:
    """What a provider is asked to do: one model, a history and options.

    Where it goes and with which key is not part of the request: the core resolves an
    `nbchat.core.credentials.Endpoint` and passes it to `Provider.stream` beside it.
    """

    model: str  # the provider-local id (without "provider:")
    messages: tuple[Message, ...]
    options: Options = field(default_factory=Options)


# ---- stream events -------------------------------------------------------------------------


@dataclass(frozen=True)
class TextDelta:
    """Event: the next piece of reply text (a token or a few), in order.

    `logprobs` holds the OpenAI wire's `choices[0].logprobs.content[]` entries for this piece
    (`{"token", "logprob", "bytes", "top_logprobs"}`, as in
    tests/wire/llamacpp_text_logprobs.sse) when `logprobs=` was asked for; else ().
    """

    text: str
    logprobs: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class ReasoningDelta:
    """Text a reasoning model thinks before its answer (`delta.reasoning_content` or
    `delta.reasoning` on the OpenAI wire); kept apart from the answer, in `Reply.reasoning`."""

    text: str


@dataclass(frozen=True)
class RefusalDelta:
    """The model declining to answer (`delta.refusal` / `message.refusal` on the OpenAI wire),
    kept apart from the answer, in `Reply.refusal`."""

    text: str


@dataclass(frozen=True)
class Status:
    """What the turn is waiting for, for the user ("waiting for cerebras, 12 s"); sent by the
    turn itself after a second of silence and then every second, "" once something arrives."""

    message: str
    elapsed: float = 0.0  # seconds since the turn started


@dataclass(frozen=True)
class ToolCallEvent:
    """Event: one complete tool call, sent once its arguments have all arrived."""

    tool_call: ToolCall


@dataclass(frozen=True)
class ToolResultEvent:
    """Event: a tool call was run (or denied) and its result goes back to the model; sent by
    the tool loop (`nbchat.core.loop`), between the turns it chains."""

    step: ToolStep


@dataclass(frozen=True)
class SchemaRetry:
    """Event: the reply did not fit `schema=`, and the model is asked again (the tool loop's
    `schema_retries`, `nbchat.core.loop`). The text streamed since the last request was the
    rejected attempt; `reason` is the validation error, `attempt` counts from 1."""

    reason: str
    attempt: int


@dataclass(frozen=True)
class ImageEvent:
    """Event: one generated image (text-to-image models)."""

    image: ImagePart


@dataclass(frozen=True)
class Done:
    """Event: the last one of every stream; the finish reason and the turn's token `Usage`.

    `finish_reason` is the provider's (`stop`, `length`, `tool_calls`, ...); None if it gave none.
    """

    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    #: what the footer should say about this turn, e.g. "dropped the 2 oldest turns"
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ErrorEvent:
    """A failure, as an event, for front ends that show errors in place (panel, compare)."""

    error: BaseException


Event = (TextDelta | ReasoningDelta | RefusalDelta | ToolCallEvent | ToolResultEvent | ImageEvent
         | Done | ErrorEvent | Status | SchemaRetry)


# ---- model listing -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """One model in a listing: its full id `provider:model` and what it takes.

    `stream`, `tools`, `json`, `vision` and `image_generation` are capabilities (from the
    provider's table or its listing, not probed); `tools` and `vision` are None when unknown (a
    model a self-hosted or OpenAI-compatible server lists and no table describes: calls with
    tools or images are sent, and the server decides). `key_set` says whether the variable
    `key_env` is set (the key itself is never held here).
    """

    id: str  # full id: "provider:model"
    provider: str
    stream: bool = True
    tools: bool | None = False
    json: bool = False
    vision: bool | None = False
    image_generation: bool = False
    key_set: bool = False
    key_env: str | None = None
    description: str = ""

    @property
    def name(self) -> str:
        """The provider-local id: the part of `id` after the first `:`."""
        return self.id.split(":", 1)[1]

    def __str__(self) -> str:
        return self.id


# ---- the result of a turn ------------------------------------------------------------------


#: the fewest output tokens that give a tokens-per-second figure
MIN_RATE_TOKENS = 3


@dataclass
class Reply:
    """One assistant turn: text, tool calls, images, usage and timing."""

    text: str = ""
    model: str = ""
    reasoning: str = ""  # a reasoning model's thinking, apart from the answer (may be "")
    refusal: str = ""  # the model declining to answer (OpenAI's `refusal`), apart from text
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    image_parts: list[ImagePart] = field(default_factory=list)
    logprobs: list[dict[str, Any]] | None = None
    interrupted: bool = False
    error: BaseException | None = None
    json_mode: bool = False
    time_to_first_token: float | None = None  # seconds
    duration: float | None = None  # seconds, request start to end
    # where the reply came from (see `provenance`)
    endpoint: str | None = None  # the base URL asked, without credentials; None in process
    host: str | None = None  # the endpoint's host[:port] when not the provider's default one
    options: Options | None = None  # the request's options
    request_hash: str | None = None  # sha256 of the canonical request (nbchat.core.replay)
    log_id: str | None = None  # its entry in the local log (nbchat.core.log), if logged
    replayed: bool = False  # answered from the log instead of the provider
    notes: list[str] = field(default_factory=list)  # said in the footer (e.g. dropped turns)
    #: the tool calls the tool loop ran before this answer, in order (nbchat.core.loop)
    steps: list[ToolStep] = field(default_factory=list)
    #: with `schema=`: the reply as an instance of the schema's type (a dict for a JSON schema)
    parsed: Any = None

    @property
    def provenance(self) -> dict[str, Any]:
        """What produced this reply, as JSON: the `nbchat` entry of its outputs' metadata.

        Keys: model, endpoint, options (those that change the answer), request_hash, log_id,
        usage {input_tokens, output_tokens}, time_to_first_token and duration (seconds, as
        recorded when replayed), finish_reason, replayed (bool).
        """
        from .replay import options_json

        return {
            "model": self.model,
            "endpoint": self.endpoint,
            "options": options_json(self.options) if self.options is not None else {},
            "request_hash": self.request_hash,
            "log_id": self.log_id,
            "usage": {"input_tokens": self.usage.input_tokens,
                      "output_tokens": self.usage.output_tokens},
            "time_to_first_token": self.time_to_first_token,
            "duration": self.duration,
            "finish_reason": self.finish_reason,
            "replayed": self.replayed,
        }

    @property
    def images(self) -> list[Image]:
        """The generated images as PIL images (decoded on each access); [] for text replies."""
        from .images import to_pil

        return [to_pil(p) for p in self.image_parts]

    @property
    def json(self) -> Any:
        """The reply parsed as JSON (JSON mode or a schema); raises ValueError if it is not JSON."""
        from .errors import ReplyNotJSON

        text = self.text.strip()
        if text.startswith("```"):
            text = text.strip("`")
            text = text[4:] if text.startswith("json") else text
        try:
            return _json.loads(text)
        except ValueError as exc:
            if self.refusal:  # asked for JSON, the model declined: asking for JSON is not it
                raise ReplyNotJSON(
                    f"the model refused, so there is no JSON: {self.refusal!r:.200} (on "
                    "reply.refusal); rephrase the request or try another model") from None
            if self.json_mode or (self.options is not None and self.options.schema is not None):
                hint = ("the model did not keep to it; try again, or give a schema= (checked, "
                        "and asked again once when it does not fit)")
            else:
                hint = "ask with json=True or schema=..."
            raise ReplyNotJSON(
                f"the reply is not valid JSON ({exc.args[0]}); {hint}"
            ) from None

    @property
    def empty_reason(self) -> str | None:
        """A plain sentence when the reply finished with no answer at all, saying why (from
        `finish_reason`); None when there is an answer, an error or an interruption."""
        if (self.text or self.image_parts or self.tool_calls or self.error is not None
                or self.interrupted or self.refusal):
            return None
        finish = self.finish_reason
        after = " after reasoning" if self.reasoning else ""
        if finish == "length":
            return (f"The model gave no answer: it reached the token limit{after} "
                    "(finish_reason: length). Raise max_tokens and ask again.")
        if finish == "content_filter":
            return ("The model gave no answer: the provider's content filter stopped it "
                    "(finish_reason: content_filter).")
        if finish == "stop":
            return f"The model gave an empty answer{after} (finish_reason: stop)."
        return f"The model gave no answer{after} (finish_reason: {finish or 'none given'})."

    @property
    def tokens_per_second(self) -> float | None:
        """Output tokens per second of generation (after the first token), or None when the
        usage or the timing is unknown.
        """
        n = self.usage.output_tokens
        if not n or self.duration is None or self.time_to_first_token is None:
            return None
        gen = self.duration - self.time_to_first_token
        # a token or two is no rate (a refusal, a cut stream: "11,993 tok/s"); not a time
        # threshold: whether a footer shows a rate would then depend on the machine's speed
        return n / gen if n >= MIN_RATE_TOKENS and gen > 0 else None

    def footer(self) -> str:
        """The one-line summary under a reply: model, tokens in/out, first-token time (s), tok/s."""
        from .render import footer

        return footer(self)

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Sanitized `text/html` (see `nbchat.core.markdown`) and the text as `text/plain`;
        the provenance as output metadata (`nbchat`)."""
        from .render import reply_mimebundle

        return reply_mimebundle(self)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        bits = [f"model={self.model!r}", f"text={self.text[:60]!r}"]
        if self.reasoning:
            bits.append(f"reasoning={len(self.reasoning)} chars")
        if self.tool_calls:
            bits.append(f"tool_calls={[t.name for t in self.tool_calls]!r}")
        if self.steps:
            bits.append(f"steps={[s.call.name for s in self.steps]!r}")
        if self.refusal:
            bits.append(f"refusal={self.refusal[:60]!r}")
        if self.image_parts:
            bits.append(f"images={len(self.image_parts)}")
        if self.interrupted:
            bits.append("interrupted=True")
        return f"Reply({', '.join(bits)})"

    def to_message(self) -> Message:
        """The reply as an assistant `Message` (text, images, tool calls) for the history."""
        parts: tuple[Part, ...] = ((TextPart(self.text),) if self.text else ()) + tuple(
            self.image_parts
        )
        return Message(
            "assistant", parts, tuple(self.tool_calls), interrupted=self.interrupted
        )
