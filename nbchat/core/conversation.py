"""`Conversation`: history of turns, a system prompt and options, streaming each new turn."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from . import costs, registry
from .bridge import iterate_sync, run_sync
from .credentials import hide_key
from .errors import BadOption, scrub_known
from .loop import TurnLoop
from .options import Settings, parse_settings
from .turn import Turn, build_request
from .types import ImagePart, Message, Reply, Request, TextPart, ToolCall

_ROLES = {"human": "user", "user": "user", "system": "system", "ai": "assistant",
          "assistant": "assistant", "tool": "tool"}


def to_messages(prompt: Any) -> list[Message]:
    """A string, a Message, a (role, text) tuple, a dict, or a list of those -> messages.

    Content may be OpenAI-style parts: `{"type": "text", "text": ...}` and `{"type":
    "image_url", "image_url": {"url": ...}}` (or the URL as a plain string), where the URL is a
    `data:` URI, a file path or an http(s) URL; a remote one becomes an `ImagePart` holding only
    its `url`, which the `Turn` fetches before sending (as it does `images=[url]`)."""
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
        message = _message(prompt.get("role", "user"), prompt.get("content") or "")
        calls = tuple(_tool_call(c) for c in prompt.get("tool_calls") or ())
        call_id = prompt.get("tool_call_id") or None
        if calls or call_id:
            from dataclasses import replace

            message = replace(message, tool_calls=calls, tool_call_id=call_id)
        return [message]
    raise BadOption(
        "prompt",
        f"expected a string or a list of messages, got {type(prompt).__name__}",
    )


def _tool_call(call: Any) -> ToolCall:
    """An OpenAI `tool_calls[]` entry (`{"id", "type", "function": {"name", "arguments"}}`,
    arguments as JSON text or a dict) or a `ToolCall`."""
    if isinstance(call, ToolCall):
        return call
    import json

    try:
        fn = call["function"]
        args = fn.get("arguments") or {}
        if isinstance(args, str):
            args = json.loads(args) if args.strip() else {}
        return ToolCall(fn["name"], args if isinstance(args, dict) else {"value": args},
                        call.get("id") or None)
    except (KeyError, TypeError, AttributeError, ValueError):
        raise BadOption("prompt", f"a tool call needs {{'id', 'function': {{'name', "
                        f"'arguments'}}}}, got {call!r:.80}") from None


def bind_tool_results(history: list[Message], new: list[Message]) -> list[Message]:
    """`new` with each `tool` message that has no `tool_call_id` bound to the call it
    answers: the first call, in order, of the latest assistant tool calls that no tool message
    answers yet. Raises BadOption for a tool message with no call left to answer."""
    from dataclasses import replace

    pending: list[str] = []
    out: list[Message] = []
    for i, m in enumerate([*history, *new]):
        if m.role == "assistant" and m.tool_calls:
            pending = [c.id or f"call_{k}" for k, c in enumerate(m.tool_calls)]
        elif m.role == "tool":
            if not m.tool_call_id:
                if not pending:
                    raise BadOption("prompt", "a tool message answers a tool call, but no "
                                    "call is waiting for an answer: send it after a reply "
                                    "with tool_calls, or give its tool_call_id")
                m = replace(m, tool_call_id=pending[0])
            if m.tool_call_id in pending:
                pending.remove(m.tool_call_id)
        else:
            pending = []
        if i >= len(history):
            out.append(m)
    return out


#: the result sent for a tool call that nobody answered before the conversation went on
NOT_ANSWERED = "not run: the conversation went on without this call's result"


def answer_pending(messages: list[Message]) -> list[Message]:
    """`messages` with a `tool` message (`NOT_ANSWERED`) for every call of an assistant message
    that no tool message answers before the next user or assistant message, or before the end
    when tool messages answer some of its calls: servers refuse a history with unanswered
    calls (HTTP 400), which a reply that was only a tool call leaves, as does answering one of
    several parallel calls by hand. Calls in the last message, with no tool message after it,
    stay as they are (the next messages may answer them)."""
    out: list[Message] = []
    waiting: list[str] = []

    def fill() -> None:
        out.extend(Message("tool", (TextPart(NOT_ANSWERED),), tool_call_id=cid)
                   for cid in waiting)
        waiting.clear()

    for m in messages:
        if m.role != "tool" and waiting:
            fill()
        if m.role == "assistant" and m.tool_calls:
            waiting[:] = [c.id or f"call_{k}" for k, c in enumerate(m.tool_calls)]
        elif m.role == "tool" and m.tool_call_id in waiting:
            waiting.remove(m.tool_call_id)
        out.append(m)
    if waiting and out and out[-1].role == "tool":
        fill()
    return out


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
            # a remote URL is fetched by the turn before sending, as images=[url] is
            parts.append(ImagePart(b"", "", url=part) if isinstance(part, str) else part)
    return Message(r, tuple(parts))  # type: ignore[arg-type]


def with_context(messages: list[Message], pairs: tuple[tuple[str, Any], ...],
                 budget: int | None, *, vision: bool = True
                 ) -> tuple[list[Message], tuple[bytes, ...]]:
    """The messages with the named objects' summaries (nbchat.core.summaries) put before the
    last user message's text, and the images they bring (PNG bytes, e.g. figures): none for a
    model known not to see (`vision=False`), whose summary then says so (a model whose vision
    is unknown gets them, as with `images=`: the server decides)."""
    from dataclasses import replace as _replace

    from .summaries import context_text, summarize_all

    items = summarize_all(pairs, budget)
    if not vision:
        items = [_replace(i, images=(), kind=f"{i.kind}; its image is not sent, the model "
                          "cannot see") if i.images else i for i in items]
    if not items:
        return messages, ()
    block = scrub_known(context_text(items))  # a key nbchat holds never goes as context
    out = list(messages)
    at = max((i for i, m in enumerate(out) if m.role == "user"), default=None)
    if at is None:
        out.append(Message.of("user", block.rstrip()))
    else:
        m = out[at]
        parts = list(m.parts)
        first = next((i for i, p in enumerate(parts) if isinstance(p, TextPart)), None)
        if first is None:
            parts.insert(0, TextPart(block.rstrip()))
        else:
            parts[first] = TextPart(block + parts[first].text)  # type: ignore[union-attr]
        out[at] = Message(m.role, tuple(parts))
    return out, tuple(img for i in items for img in i.images)


class Conversation:
    """A chat with one model: history, system prompt and default options.

    An interrupted turn keeps its partial text in the history, marked `interrupted`.
    A turn that failed before any text arrived is not added, so a retry does not repeat it.
    Objects named with `context=` are summarized (nbchat.core.summaries) before the prompt of
    the turn that names them, or of the first turn when the Conversation is given them.
    With `max_cost` (USD), a turn is refused before it is sent when its estimated cost plus
    what this conversation's live replies cost would exceed it (`nbchat.core.costs`); replies
    dropped by a keyed turn (below) still count.

    A turn started with a `key` (`%%chat` uses the notebook cell's id) replaces the earlier turn
    that had the same key: it is sent with the history before that turn, and once it is
    recorded that turn and every turn after it are gone from the history (as an edit in a chat
    app forks the conversation there), and a note in the reply's footer says how many later
    turns went. A keyed turn that fails before any text arrived leaves the history as it was.
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
        #: where each recorded turn starts: (key, index in history, index in replies)
        self._spans: list[tuple[Any, int, int]] = []
        self._dropped: list[Reply] = []  # replies of replaced turns (their cost still counts)
        #: replies of requests that were not answers (tool-call rounds, schema retries), for
        #: `max_cost`: they cost as much as the answers do
        self._requests: list[Reply] = []

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
        self._spans.clear()
        self._requests.clear()

    def _span_of(self, key: Any) -> int | None:
        """The index in `_spans` of the turn recorded under `key`, or None."""
        if key is None:
            return None
        return next((i for i, span in enumerate(self._spans) if span[0] == key), None)

    def turn(self, prompt: Any, model: str | None = None, *, key: Any = None,
             **options: Any) -> Turn | TurnLoop:
        """Start a turn (not yet running): iterate `turn.events()` to run it.

        `key` (any hashable, e.g. a notebook cell's id): this turn replaces the earlier turn
        recorded under the same key, and the turns after it (see the class docstring).
        With functions in `tools=` or a `schema=`, the turn is a `TurnLoop` (same interface),
        which runs the calls and checks the answer over several requests (nbchat.core.loop).
        """
        hide_key(options)
        settings = parse_settings(options, self.settings) if options else self.settings
        provider, local = registry.resolve(model or self.model)
        unlisted = registry.unlisted_warning(provider, local, settings.base_url)
        if unlisted is not None:
            warnings.warn(unlisted, UserWarning, stacklevel=2)
        at = self._span_of(key)
        base = self.history if at is None else self.history[:self._spans[at][1]]
        before = answer_pending(base)  # a call left last stays: `new` may answer it
        new = answer_pending([*before, *bind_tool_results(before, to_messages(prompt))])
        new = new[len(before):]  # with NOT_ANSWERED for each call its messages leave open
        images = settings.images
        # context goes with the turn that names it, or with a conversation's first turn
        pairs = settings.context if options.get("context") is not None or not before else ()
        if pairs:
            info = provider.model_info(local)
            new, figures = with_context(new, pairs, settings.context_budget,
                                        vision=info is None or info.vision is not False)
            images = images + figures
        request = build_request(local, before, new, settings, settings.system)
        model_id = registry.full_id(provider, local)
        made: list[Turn] = []  # this turn's requests so far (a TurnLoop makes several)

        def start(request: Request, images: tuple[Any, ...] = (),
                  on_finish: Any = None) -> Turn:
            spent = 0.0
            if settings.max_cost is not None:
                spent = costs.spent([*self.replies, *self._dropped, *self._requests,
                                     *(t.reply for t in made)])
            turn = Turn(
                provider,
                request,
                model_id,
                images=images,
                on_finish=on_finish,
                base_url=settings.base_url,
                api_key=settings.api_key,
                max_cost=settings.max_cost,
                spent=spent,
                timeouts=settings.timeout,
            )
            made.append(turn)
            return turn

        def sent(turn: Turn) -> list[Message]:
            # the user message as actually sent (with resolved images)
            return list(turn.request.messages[-len(new):]) if new else []

        def place(reply: Reply) -> None:
            """Where this turn's record goes: a re-run replaces its earlier turn (and those
            after it)."""
            here = self._span_of(key)  # looked up again: the history may have moved since
            if here is not None:
                _, begin, first = self._spans[here]
                later = len(self._spans) - here - 1
                self._dropped += self.replies[first:]
                del self.history[begin:], self.replies[first:], self._spans[here:]
                reply.notes.append("replaced its earlier run" + (
                    f"; dropped the {later} later turn{'s' if later > 1 else ''}"
                    if later else ""))
            self._spans.append((key, len(self.history), len(self.replies)))

        def record(turn: Turn) -> None:
            reply = turn.reply
            if reply.error is not None and not reply.text and not reply.interrupted:
                return
            place(reply)
            self.history += sent(turn)
            self.history.append(reply.to_message())
            self.replies.append(reply)

        opts = settings.options
        if not (opts.schema is not None or any(t.function is not None for t in opts.tools)):
            return start(request, images, record)

        def record_loop(loop: TurnLoop) -> None:
            self._requests += [t.reply for t in loop.turns[:-1]]
            reply = loop.reply
            failed = reply.error is not None and not reply.text and not reply.interrupted
            if failed and not loop.added and not reply.tool_calls:
                return
            place(reply)
            self.history += sent(loop.first) + loop.added
            if not failed or reply.tool_calls:
                self.history.append(reply.to_message())
                self.history += loop.answered  # an interrupted round: what ran, what did not
            self.replies.append(reply)

        return TurnLoop(start(request, images), start, settings, record_loop)

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
