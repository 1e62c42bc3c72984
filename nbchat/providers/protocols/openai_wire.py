"""The OpenAI chat-completions wire codec: pure functions, no I/O.

Shared by every provider that speaks or imitates the OpenAI wire (the HTTP engine in
`openai_compat`, and the local llama.cpp provider, whose `create_chat_completion` takes and
yields the same shapes). Tests feed these with recorded wire data.

- `build_body(request, caps)`: a `Request` as a `POST /chat/completions` JSON body
  (https://platform.openai.com/docs/api-reference/chat/create).
- `StreamState.feed(chunk)`: one parsed `chat.completion.chunk` -> its events (text and
  reasoning deltas), collecting tool-call fragments (by index), the finish reason, usage and
  mid-stream errors.
- `parse_completion(obj)`: a non-streamed `chat.completion` (some servers ignore `stream`).

What a chunk's `delta` may hold, as servers send it:
- `content`: a string, or a list of typed parts (`[{"type": "text", "text": ...}]`, from some
  providers and proxies); anything else is a `ProtocolError` (the text so far is kept);
- `reasoning_content` (DeepSeek, llama.cpp server, vLLM) or `reasoning` (Cerebras gpt-oss):
  a reasoning model's thinking, as `ReasoningDelta`;
- `refusal`: the model declining, as `RefusalDelta` (kept apart from the text, in
  `Reply.refusal`; the finish reason is still `stop`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ...core import http
from ...core.errors import (
    BadOption,
    ContextTooLong,
    NbchatError,
    ProtocolError,
    ProviderError,
    RateLimited,
    redact,
    shorten,
)
from ...core.surrogates import join_surrogates
from ...core.types import (
    Done,
    Event,
    ImagePart,
    Message,
    ReasoningDelta,
    RefusalDelta,
    Request,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallEvent,
    Usage,
)

SchemaStyle = Literal["json_schema", "json_object", "guided_json"]


@dataclass(frozen=True)
class Caps:
    """What one endpoint/model takes on the wire (not what the model is good at)."""

    include_usage: bool = True  # send stream_options.include_usage
    max_tokens_field: str = "max_tokens"  # or "max_completion_tokens"
    default_max_tokens: int | None = None  # always send one (Cerebras reserves budget from it)
    schema_style: SchemaStyle = "json_schema"  # json_object = {"type":"json_object","schema":..}
    strict_schema: bool = False
    image_url_string: bool = False  # NVIDIA nv-vlm: "image_url": "<url>"
    max_stop: int | None = None


# ---- request --------------------------------------------------------------------------------


def image_content(part: ImagePart, caps: Caps, url: str | None = None) -> dict[str, Any]:
    """An image as an OpenAI content part: `{"type": "image_url", "image_url": {"url": url}}`, or
    `"image_url": url` for `caps.image_url_string` (NVIDIA nv-vlm models). `url` defaults to the
    image's data URI.
    """
    url = url or part.data_uri()
    if caps.image_url_string:
        return {"type": "image_url", "image_url": url}
    return {"type": "image_url", "image_url": {"url": url}}


def to_openai_messages(
    messages: tuple[Message, ...],
    caps: Caps = Caps(),
    image_url: Callable[[ImagePart], str | None] | None = None,
) -> list[dict[str, Any]]:
    """Messages in the OpenAI `messages[]` form: text-only content as a string, content with
    images as a list of `text` / `image_url` parts, assistant `tool_calls` (id `call_<i>` when the
    model gave none) and `tool` messages with their `tool_call_id`. `image_url(part)` may give
    a URL to use instead of a data URI.

    An assistant message with tool calls and no text goes with `"content": ""`: the OpenAI
    spec allows null there, but llama_cpp.server refuses null (HTTP 500) and every server
    takes "". A `tool` message without a `tool_call_id` raises `BadOption` (servers answer
    400, or silently mismatch it): the core binds one to the call it answers first
    (`nbchat.core.conversation.bind_tool_results`).
    """
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            if not m.tool_call_id:
                raise BadOption("prompt", "a tool message needs the tool_call_id of the call "
                                "it answers; put it after the assistant message that made "
                                "the call, or give tool_call_id")
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.text})
            continue
        content: Any
        if any(isinstance(p, ImagePart) for p in m.parts):
            content = [
                {"type": "text", "text": p.text}
                if isinstance(p, TextPart)
                else image_content(p, caps, image_url(p) if image_url else None)
                for p in m.parts
            ]
        else:
            content = m.text
        msg: dict[str, Any] = {"role": m.role, "content": content}
        if m.tool_calls:
            msg["tool_calls"] = [
                {
                    "id": t.id or f"call_{i}",
                    "type": "function",
                    "function": {"name": t.name, "arguments": t.arguments_json},
                }
                for i, t in enumerate(m.tool_calls)
            ]
        out.append(msg)
    return out


def build_body(
    request: Request,
    caps: Caps = Caps(),
    *,
    stream: bool = True,
    image_url: Callable[[ImagePart], str | None] | None = None,
) -> dict[str, Any]:
    """The JSON body of `POST /chat/completions` for a request."""
    o = request.options
    body: dict[str, Any] = {
        "model": request.model,
        "messages": to_openai_messages(request.messages, caps, image_url),
    }
    if stream:
        body["stream"] = True
        if caps.include_usage:
            body["stream_options"] = {"include_usage": True}
    if o.temperature is not None:
        body["temperature"] = o.temperature
    if o.top_p is not None:
        body["top_p"] = o.top_p
    max_tokens = o.max_tokens or caps.default_max_tokens
    if max_tokens is not None:
        body[caps.max_tokens_field] = max_tokens
    if o.stop:
        if caps.max_stop is not None and len(o.stop) > caps.max_stop:
            raise BadOption("stop", f"this provider takes at most {caps.max_stop} stop strings")
        body["stop"] = list(o.stop)
    if o.seed is not None:
        body["seed"] = o.seed
    if o.schema is not None:
        if caps.schema_style == "json_schema":
            spec: dict[str, Any] = {"name": o.schema_name, "schema": o.schema}
            if caps.strict_schema:
                spec["strict"] = True
            body["response_format"] = {"type": "json_schema", "json_schema": spec}
        elif caps.schema_style == "guided_json":
            body["guided_json"] = o.schema
        else:
            body["response_format"] = {"type": "json_object", "schema": o.schema}
    elif o.json:
        body["response_format"] = {"type": "json_object"}
    if o.tools:
        body["tools"] = [t.to_openai() for t in o.tools]
        choice = o.tool_choice
        if choice in ("auto", "required", "none"):
            body["tool_choice"] = choice
        elif choice:
            body["tool_choice"] = {"type": "function", "function": {"name": choice}}
    if o.logprobs is not None:
        body["logprobs"] = True
        if o.logprobs:
            body["top_logprobs"] = o.logprobs
    taken = RESERVED_INPUTS.intersection(o.extra)
    if taken:
        raise BadOption("input", f"{', '.join(sorted(taken))} cannot be set with input=: nbchat "
                        "sends the model id (-m / model=), the messages (the prompt and the "
                        "thread) and streaming itself; remove "
                        f"{'it' if len(taken) == 1 else 'them'} from input")
    body.update(o.extra)
    return body


#: body fields that input= may not replace: without them the request is not the turn asked for
RESERVED_INPUTS = frozenset({"model", "messages", "stream", "stream_options"})


# ---- response -------------------------------------------------------------------------------


class ToolCallAssembler:
    """Streamed tool-call fragments, by index: arguments concatenate; id and name are set
    when first seen (llama.cpp repeats the whole name in every fragment: not concatenated)."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]

    def add(self, fragments: list[dict[str, Any]]) -> None:
        """Take one chunk's `delta.tool_calls` fragments (`{"index", "id", "function": {"name",
        "arguments"}}`, as in tests/wire/openai_tool_fragments.sse and llamacpp_forced_tool.sse).
        """
        for i, frag in enumerate(fragments):
            idx = frag.get("index", i)
            call = self.calls.get(idx)
            if call is None:
                call = self.calls[idx] = ["", "", ""]
            if frag.get("id"):
                call[0] = frag["id"]
            fn = frag.get("function") or {}
            name = fn.get("name")
            if name and name != call[1]:
                call[1] = name if not call[1] else call[1] + name
            args = fn.get("arguments")
            if args:
                # a server that repeats the complete arguments each time (seen in llama.cpp)
                if call[2] and args.startswith(call[2]) and _complete_json(args):
                    call[2] = args
                else:
                    call[2] += args

    def finish(self) -> list[ToolCall]:
        """The assembled calls in index order. Arguments are parsed as JSON: invalid JSON becomes
        `{"_raw": text}`, a non-object value `{"value": v}`, empty arguments `{}`.
        """
        out = []
        for _, (cid, name, raw) in sorted(self.calls.items()):
            raw, name = join_surrogates(raw), join_surrogates(name)
            try:
                args = json.loads(raw) if raw.strip() else {}
            except ValueError:
                args = {"_raw": raw}
            if not isinstance(args, dict):
                args = {"value": args}
            out.append(ToolCall(name, args, cid or None))
        return out


def _complete_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def usage_of(obj: dict[str, Any] | None) -> Usage | None:
    """A `Usage` from an OpenAI `usage` object (`prompt_tokens`, `completion_tokens`); None
    when there is none.
    """
    if not obj:
        return None
    return Usage(obj.get("prompt_tokens"), obj.get("completion_tokens"))


def stream_error(obj: Any, provider: str, partial: str = "", *,
                 in_stream: bool = True) -> NbchatError:
    """An error record that arrived inside a stream (`{"error": {...}}` or `event: error`),
    or (`in_stream=False`) as a whole answer. Long messages are cut (whole on `.body`)."""
    err = obj.get("error", obj) if isinstance(obj, dict) else obj
    message = http.message_of({"error": err}) if err is not None else None
    full = redact(message or "the stream ended with an error")
    message = shorten(full, http.BODY_HEAD, "body")
    code = err.get("code") if isinstance(err, dict) else None
    status = code if isinstance(code, int) else None
    if isinstance(err, dict) and isinstance(err.get("status"), int):
        status = err["status"]
    kw: dict[str, Any] = {"provider": provider, "partial_text": partial, "status": status,
                          "body": full if full != message else None}
    if status == 429 or code == "rate_limit_exceeded":
        return RateLimited(message + "; wait a moment and retry", **kw)
    if http.is_context_error(message, code):
        return ContextTooLong(message + " (shorten the prompt or lower max_tokens)", **kw)
    where = " (the reply stopped mid-stream)" if in_stream else ""
    return ProviderError(message + where, **kw)


_NONE: tuple[Event, ...] = ()
_TEXT_PARTS = ("text", "output_text")


def content_text(content: Any, provider: str = "") -> str:
    """`content` as text: a string, or the text of a list of typed parts (others skipped).

    Raises `ProtocolError` for any other shape (a number, an object)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict) and part.get("type", "text") in _TEXT_PARTS:
                text = part.get("text")
                if not isinstance(text, str):
                    raise _unreadable(provider, content)
                out.append(text)
            elif not isinstance(part, dict):
                raise _unreadable(provider, content)
        return "".join(out)
    raise _unreadable(provider, content)


def _unreadable(provider: str, what: Any) -> ProtocolError:
    return ProtocolError(
        f"{provider} sent a stream record nbchat cannot read: {what!r:.80}; "
        "the reply is incomplete (what arrived is kept), try again"
    )


class StreamState:
    """Accumulates one streamed reply. `feed` is the hot path: keep it short."""

    __slots__ = ("provider", "tools", "finish_reason", "usage", "n_deltas")

    def __init__(self, provider: str = "") -> None:
        self.provider = provider
        self.tools = ToolCallAssembler()
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.n_deltas = 0

    def feed(self, obj: Any) -> tuple[Event, ...]:
        """One parsed chunk -> its events (often one `TextDelta`); raises on an error record."""
        try:
            choices = obj.get("choices")
            if obj.get("usage"):
                self.usage = usage_of(obj["usage"])
            if not choices:
                if "error" in obj:
                    raise stream_error(obj, self.provider)
                return _NONE
            choice = choices[0]
            delta = choice.get("delta") or {}
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            if "tool_calls" in delta and delta["tool_calls"]:
                self.tools.add(delta["tool_calls"])
                self.n_deltas += 1
            text = delta.get("content")
            if text.__class__ is not str:
                text = content_text(text, self.provider) if text is not None else None
            thought = delta.get("reasoning_content") or delta.get("reasoning")
            if delta.get("refusal"):  # the model declining: its own event, before any text
                self.n_deltas += 1
                refusal = RefusalDelta(content_text(delta["refusal"], self.provider))
                return (refusal, *self._text_events(choice, text, thought))
            return self._text_events(choice, text, thought)
        except (AttributeError, TypeError, IndexError):  # a record of an unexpected shape
            raise _unreadable(self.provider, obj) from None

    def _text_events(self, choice: Any, text: str | None, thought: Any) -> tuple[Event, ...]:
        if thought:
            thought = content_text(thought, self.provider)
            self.n_deltas += 1
            if not text:
                return (ReasoningDelta(thought),)
        if text:
            self.n_deltas += 1
            lp = choice.get("logprobs")
            if lp and lp.get("content"):
                out: Event = TextDelta(text, tuple(lp["content"]))
            else:
                out = TextDelta(text)
            return (ReasoningDelta(thought), out) if thought else (out,)
        return _NONE

    def done_events(self) -> list[Event]:
        """The events that close the stream: one `ToolCallEvent` per call, then `Done`. The finish
        reason becomes `tool_calls` when calls arrived with `stop` or none; without a `usage` chunk,
        the output count is the number of deltas.
        """
        calls = self.tools.finish()
        events: list[Event] = [ToolCallEvent(c) for c in calls]
        finish = self.finish_reason
        if calls and finish in (None, "stop"):
            finish = "tool_calls"
        usage = self.usage or Usage(None, self.n_deltas or None)
        events.append(Done(finish, usage))
        return events


def parse_completion(obj: Any, provider: str = "") -> list[Event]:
    """A whole (non-streamed) `chat.completion` as events."""
    if not isinstance(obj, dict):
        raise _unreadable(provider, obj)
    if not obj.get("choices"):
        if "error" in obj:
            raise stream_error(obj, provider, in_stream=False)
        raise ProtocolError(f"{provider} sent a reply with no choices: {json.dumps(obj)[:120]}")
    try:
        choice = obj["choices"][0]
        message = choice.get("message") or {}
        events: list[Event] = []
        thought = message.get("reasoning_content") or message.get("reasoning")
        if thought:
            events.append(ReasoningDelta(content_text(thought, provider)))
        text = content_text(message.get("content") or "", provider)
        if message.get("refusal"):
            events.append(RefusalDelta(content_text(message["refusal"], provider)))
        if text:
            lp = (choice.get("logprobs") or {}).get("content") or ()
            events.append(TextDelta(text, tuple(lp)))
        state = StreamState(provider)
        if message.get("tool_calls"):
            state.tools.add([{**tc, "index": i} for i, tc in enumerate(message["tool_calls"])])
        state.finish_reason = choice.get("finish_reason")
    except (AttributeError, TypeError, IndexError):
        raise _unreadable(provider, obj) from None
    state.usage = usage_of(obj.get("usage"))
    return events + state.done_events()
