"""`Conversation`: history of turns, a system prompt and options, streaming each new turn."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from . import costs, registry
from .bridge import iterate_sync, run_sync
from .credentials import hide_key
from .errors import BadOption
from .options import Settings, parse_settings
from .turn import Turn, build_request
from .types import ImagePart, Message, Reply, TextPart

_ROLES = {"human": "user", "user": "user", "system": "system", "ai": "assistant",
          "assistant": "assistant", "tool": "tool"}


def to_messages(prompt: Any) -> list[Message]:
    """A string, a Message, a (role, text) tuple, a dict, or a list of those -> messages."""
    if isinstance(prompt, str):
        return [Message.of("user", prompt)]
    if isinstance(prompt, Message):
        return [prompt]
    if isinstance(prompt, (list, tuple)) and not (
        len(prompt) == 2 and isinstance(prompt[0], str) and prompt[0] in _ROLES
    ):
        out: list[Message] = []
        for item in prompt:
            out += to_messages(item)
        return out
    if isinstance(prompt, tuple) and len(prompt) == 2:
        role, content = prompt
        return [_message(role, content)]
    if isinstance(prompt, Mapping):
        return [_message(prompt.get("role", "user"), prompt.get("content", ""))]
    raise BadOption(
        "prompt",
        f"expected a string or a list of messages, got {type(prompt).__name__}",
    )


def _message(role: str, content: Any) -> Message:
    if role not in _ROLES:
        raise BadOption("prompt", f"unknown role {role!r}; use system, user/human or assistant")
    r = _ROLES[role]
    if isinstance(content, str):
        return Message.of(r, content)  # type: ignore[arg-type]
    parts: list[TextPart | ImagePart] = []
    for p in content:  # OpenAI-style content parts
        if p.get("type") == "text":
            parts.append(TextPart(p["text"]))
        elif p.get("type") == "image_url":
            from .images import to_image_part

            url = p["image_url"]["url"] if isinstance(p["image_url"], dict) else p["image_url"]
            part = to_image_part(url)
            if isinstance(part, str):
                raise BadOption("prompt", "remote image URLs go in images=[...]")
            parts.append(part)
    return Message(r, tuple(parts))  # type: ignore[arg-type]


class Conversation:
    """A chat with one model: history, system prompt and default options.

    An interrupted turn keeps its partial text in the history, marked `interrupted`.
    A turn that failed before any text arrived is not added, so a retry does not repeat it.
    With `max_cost` (USD), a turn is refused before it is sent when its estimated cost plus
    what this conversation's live replies cost would exceed it (`nbchat.core.costs`).
    """

    def __init__(
        self,
        model: str | None = None,
        system: str | None = None,
        *,
        settings: Settings | None = None,
        **options: Any,
    ):
        """`options` are option keywords (nbchat.core.options.OPTIONS), validated here and
        layered over `settings` when given: settings validated once, e.g. by a compare
        that starts one Conversation per model. Raises UnknownOption, BadOption or
        UnknownModel."""
        hide_key(options)
        self.settings: Settings = parse_settings({"system": system, **options}, settings)
        self.model = model
        registry.resolve(model)  # fail early on an unknown model
        self.history: list[Message] = []
        self.replies: list[Reply] = []

    @property
    def system(self) -> str | None:
        """The system prompt (the `system` option), or None."""
        return self.settings.system

    @property
    def model_id(self) -> str:
        """The full id `provider:model` this conversation talks to (aliases resolved)."""
        provider, local = registry.resolve(self.model)
        return registry.full_id(provider, local)

    @property
    def messages(self) -> list[Message]:
        """The system message (if any) followed by the history: a new list each time."""
        head = [Message.of("system", self.system)] if self.system else []
        return head + list(self.history)

    def reset(self) -> None:
        """Forget the history and the replies; the model, system prompt and options stay."""
        self.history.clear()
        self.replies.clear()

    def turn(self, prompt: Any, model: str | None = None, **options: Any) -> Turn:
        """Start a turn (not yet running): iterate `turn.events()` to run it."""
        hide_key(options)
        settings = parse_settings(options, self.settings) if options else self.settings
        provider, local = registry.resolve(model or self.model)
        new = to_messages(prompt)
        request = build_request(local, self.history, new, settings, settings.system)

        def record(turn: Turn) -> None:
            reply = turn.reply
            if reply.error is not None and not reply.text and not reply.interrupted:
                return
            # the user message as actually sent (with resolved images)
            sent = list(turn.request.messages[-len(new):]) if new else []
            self.history += sent
            self.history.append(reply.to_message())
            self.replies.append(reply)

        return Turn(
            provider,
            request,
            registry.full_id(provider, local),
            images=settings.images,
            on_finish=record,
            base_url=settings.base_url,
            api_key=settings.api_key,
            max_cost=settings.max_cost,
            spent=costs.spent(self.replies) if settings.max_cost is not None else 0.0,
            timeouts=settings.timeout,
        )

    async def asend(self, prompt: Any, **options: Any) -> Reply:
        """Send `prompt` (any form `nbchat.achat` takes) and return the whole `Reply`; `options`
        apply to this turn only, over the conversation's own. Raises as `nbchat.achat` does.
        """
        hide_key(options)
        return await self.turn(prompt, **options).collect()

    def send(self, prompt: Any, **options: Any) -> Reply:
        """`asend`, from synchronous code."""
        hide_key(options)
        return run_sync(self.asend(prompt, **options))

    def astream(self, prompt: Any, **options: Any) -> AsyncIterator[str]:
        """The reply's text chunks (str, in order) as they arrive; same arguments and errors as
        `asend`. Closing the iterator early stops the turn, kept in the history as interrupted.
        """
        hide_key(options)
        return self.turn(prompt, **options).text_chunks()

    def stream(self, prompt: Any, **options: Any) -> Iterator[str]:
        """`astream`, from synchronous code: an iterator of text chunks."""
        hide_key(options)
        return iterate_sync(self.astream(prompt, **options))

    def __repr__(self) -> str:
        return f"Conversation(model={self.model_id!r}, turns={len(self.replies)})"
