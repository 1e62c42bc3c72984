"""What a call would send, without sending it: `--dry-run`, `nbchat.count`.

A `Preview` holds the messages exactly as the provider would get them (the history, the system
prompt, the context's summaries, the images) and their size in tokens: the model's own count
where its provider can give one without sending (`Provider.count_tokens`: the local llama.cpp
model tokenizes with its chat template), else an estimate, marked as such (`TokenCount.estimated`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from . import replay
from .conversation import Conversation
from .images import to_image_part
from .loop import TurnLoop
from .summaries import CHARS_PER_TOKEN, estimate_tokens
from .turn import Turn
from .types import ImagePart, Message, Options

#: tokens added per message by chat formats (role markers), in the estimate
PER_MESSAGE = 4
#: tokens per image in the estimate (OpenAI's price of a low-detail image)
PER_IMAGE = 85


class TokenCount(int):
    """A number of tokens (an int) that says how it was counted: `estimated` is False for the
    model's own tokenizer, and `method` names the tokenizer or the estimate's rule."""

    estimated: bool
    method: str

    def __new__(cls, n: int, *, estimated: bool, method: str) -> TokenCount:
        obj = super().__new__(cls, n)
        obj.estimated, obj.method = estimated, method
        return obj

    def __repr__(self) -> str:
        return f"{'~' if self.estimated else ''}{int(self)} tokens ({self.method})"

    __str__ = __repr__


def estimate(messages: list[Message] | tuple[Message, ...],
             options: Options | None = None) -> TokenCount:
    """Tokens of `messages` estimated: text at `CHARS_PER_TOKEN` characters a token, plus
    `PER_MESSAGE` a message and `PER_IMAGE` an image; with `options`, the tool definitions and
    the JSON schema the request carries, as their JSON text (servers put them in the prompt)."""
    n = sum(estimate_tokens(m.text) + PER_MESSAGE + PER_IMAGE * len(m.images) for m in messages)
    tools, schema = _sent_with(options)
    if tools:
        n += estimate_tokens(json.dumps(tools))
    if schema is not None:
        n += estimate_tokens(json.dumps(schema))
    also = ", tool definitions and schema as JSON" if tools or schema is not None else ""
    return TokenCount(n, estimated=True, method=f"estimate: {CHARS_PER_TOKEN} characters a "
                      f"token, {PER_MESSAGE} a message, {PER_IMAGE} an image{also}")


def _sent_with(options: Options | None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The tool definitions (OpenAI's form) and the JSON schema a request with `options` sends
    beside its messages."""
    if options is None:
        return [], None
    return [t.to_openai() for t in options.tools], options.schema


@dataclass(frozen=True)
class Preview:
    """The request a call would send to `model` (`provider:model`): `messages` in order (the
    system prompt first, the new user message last), `tokens` (a `TokenCount`) and `endpoint`,
    the base URL it would go to, without user or password (`Endpoint.base_url` as
    `nbchat.core.credentials.resolve` gives it: explicit, `%config`, environment, default);
    None for a model run in this process."""

    model: str
    messages: tuple[Message, ...]
    tokens: TokenCount
    endpoint: str | None = None
    #: the tool definitions (OpenAI's `tools` form) and the JSON schema (`schema=`) that go with
    #: the messages
    tools: tuple[dict[str, Any], ...] = ()
    schema: dict[str, Any] | None = None

    def __str__(self) -> str:
        lines = [f"dry run: nothing was sent to {self.model}",
                 f"endpoint: {self.endpoint or 'in this process (no server)'}",
                 f"prompt: {self.tokens!r}", ""]
        for m in self.messages:
            lines.append(f"── {m.role} ──")
            for part in m.parts:
                if isinstance(part, ImagePart):
                    what = part.url if part.url and not part.data else f"{len(part.data):,} bytes"
                    lines.append(f"[image: {part.mime or 'from a URL'}, {what}]")
                else:
                    lines.append(getattr(part, "text", repr(part)))
            lines.append("")
        if self.tools:
            lines.append("── tools ──")
            lines += [json.dumps(t, ensure_ascii=False) for t in self.tools]
            lines.append("")
        if self.schema is not None:
            lines += ["── response schema ──", json.dumps(self.schema, ensure_ascii=False), ""]
        return "\n".join(lines).rstrip() + "\n"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


async def apreview(prompt: Any, model: str | None = None, *,
                   conversation: Conversation | None = None, **options: Any) -> Preview:
    """What `conversation.turn(prompt, **options)` (or a new conversation with `model`) would
    send, and its tokens. Raises what building the request raises (UsageError and kin); sends
    nothing and changes no history. Images named by URL are shown by URL, not fetched."""
    conv = conversation if conversation is not None else Conversation(model=model, **{
        k: v for k, v in options.items() if k == "system"})
    options = {k: v for k, v in options.items() if conversation is not None or k != "system"}
    turn = conv.turn(prompt, model=model if conversation is not None else None, **options)
    return await apreview_turn(turn)


async def apreview_turn(turn: Turn | TurnLoop) -> Preview:
    """What a built, not yet started `Turn` would send, and its tokens (see `apreview`); of a
    `TurnLoop`, its first request (the later ones depend on the replies)."""
    if isinstance(turn, TurnLoop):
        turn = turn.first
    request = turn.request
    if turn._images:
        parts = tuple(p if isinstance(p, ImagePart) else ImagePart(b"", "", url=p)
                      for p in map(to_image_part, turn._images))
        request = turn._with_images(request, parts)
    turn.provider.check_request(request)
    endpoint = turn.provider.endpoint(turn._base_url, turn._api_key)  # as the turn would
    counted = await turn.provider.count_tokens(request)
    tokens = (TokenCount(counted, estimated=False, method=f"{turn.reply.model}'s own tokenizer")
              if counted is not None else estimate(request.messages, request.options))
    tools, schema = _sent_with(request.options)
    return Preview(turn.reply.model, request.messages, tokens,
                   endpoint=replay.public_url(endpoint.base_url), tools=tuple(tools),
                   schema=schema)
