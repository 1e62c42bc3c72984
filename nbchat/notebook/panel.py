"""`ChatPanel`: an interactive chat widget on the core `Conversation`.

Generation runs as an asyncio task on the kernel's event loop, so the panel stays live after
its cell finished and Stop can cancel it. Text goes to the front end as custom messages that
carry only new text, batched by `Batcher`; the transcript trait is rewritten once per turn.
"""

from __future__ import annotations

import asyncio
import html
import json
from dataclasses import replace
from typing import Any

import anywidget
import traitlets

from ..core import registry
from ..core.conversation import Conversation
from ..core.credentials import hide_key
from ..core.images import png_bytes
from ..core.markdown import markdown_embedding, render_html, text_html
from ..core.options import OPTIONS, control_spec, parse_settings
from ..core.render import footer, footer_html, reasoning_html, tool_step_text
from ..core.types import ImageEvent, Message, Reply, Status, TextDelta, ToolCall, ToolResultEvent
from . import last_result
from .widgets import STATIC, Batcher, image_data_url, short_error

THUMBNAIL_SIZE = 256
#: the options the panel has a control for; each is a synced trait of the same name, and the
#: front end draws the controls from their declared specs (the `controls` trait)
CONTROLS = ("temperature", "max_tokens")


def option_trait(name: str) -> Any:
    """A synced trait for an option's control: Float or Int as declared, None = default."""
    kind = traitlets.Float if OPTIONS[name].type == "number" else traitlets.Int
    return kind(None, allow_none=True, help=OPTIONS[name].help).tag(sync=True)


def model_choices(current: str) -> list[str]:
    """Model ids for the picker, from every provider's capability table (no network)."""
    ids = [current]
    for name in registry.provider_names():
        try:
            ids += [m.id for m in registry.get_provider(name).known_models()]
        except Exception:  # a provider that cannot load (missing extra) is left out
            continue
    return list(dict.fromkeys(ids))


class ChatPanel(anywidget.AnyWidget):
    """A chat panel: message list, model picker, system prompt, options, Stop and New chat."""

    _esm = STATIC / "panel.js"
    _css = STATIC / "nbchat.css"

    model = traitlets.Unicode("").tag(sync=True)
    models = traitlets.List(traitlets.Unicode()).tag(sync=True)
    system = traitlets.Unicode("").tag(sync=True)
    temperature = option_trait("temperature")
    max_tokens = option_trait("max_tokens")
    #: one spec per option control (nbchat.core.options.control_spec), in CONTROLS' order
    controls = traitlets.List(traitlets.Dict()).tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)
    #: what the running turn waits for ("waiting for cerebras, 12 s"); "" when nothing
    status = traitlets.Unicode("").tag(sync=True)
    #: what the panel shows, saved with the notebook; rewritten at the end of each turn
    transcript = traitlets.List(traitlets.Dict()).tag(sync=True)

    def __init__(self, model: str | None = None, system: str | None = None, **options: Any):
        """`options` are option keywords (nbchat.core.options), e.g. `tools=[fn]`; with
        `approve=True` each tool call waits for the user's Run or Deny in the panel."""
        hide_key(options)
        self._approvals: dict[str, asyncio.Future[bool]] = {}
        if options.get("approve") is True:
            options["approve"] = self._confirm
        self.conversation = Conversation(model=model, system=system, **options)
        opts = self.conversation.settings.options
        super().__init__(
            model=self.conversation.model_id,
            models=model_choices(self.conversation.model_id),
            system=system or "",
            controls=[control_spec(name) for name in CONTROLS],
            **{name: getattr(opts, name) for name in CONTROLS},
        )
        self._task: asyncio.Task[Reply | None] | None = None
        self.on_msg(self._on_front_end_msg)

    # ---- Python API ---------------------------------------------------------------------

    @property
    def messages(self) -> list[Message]:
        """The conversation's messages: the system message (if any), then the history."""
        return self.conversation.messages

    @property
    def replies(self) -> list[Reply]:
        """The replies so far, oldest first (including interrupted ones)."""
        return self.conversation.replies

    def submit(self, text: str, images: list[Any] | tuple[Any, ...] = ()) -> asyncio.Task[Any]:
        """Start a turn as a task on the running (kernel) loop; the front end's Send does this."""
        if self.busy:
            raise RuntimeError("a reply is still streaming: stop it first")
        if any(e.get("role") == "error" for e in self.transcript):
            self.transcript = [e for e in self.transcript if e.get("role") != "error"]
        self.busy = True
        loop = asyncio.get_event_loop()
        self._task = loop.create_task(self._run(text, tuple(images)))
        return self._task

    def stop(self) -> None:
        """Cancel the running reply; its partial text stays, marked interrupted."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def new_chat(self) -> None:
        """Stop any running reply and start over with an empty history and transcript; the model,
        system prompt and options stay.
        """
        self.stop()
        self.conversation.reset()
        self.transcript = []

    async def wait(self) -> Reply | None:
        """Wait for the running turn (if any) and return its reply."""
        if self._task is None:
            return None
        return await self._task

    def to_markdown(self) -> str:
        """The transcript as a Markdown document (the panel's Markdown export).

        Every message is rendered and sanitized on its own (`nbchat.core.markdown`) and written
        as one raw HTML block, so any Markdown reader (JupyterLab's `Markdown(...)`, nbconvert,
        a Markdown viewer) shows it as rendered here and no message can change how another is
        read; user text, model text, badges and errors alike.
        """
        out = []
        for e in self.transcript:
            text = str(e.get("text", ""))
            if e["role"] == "user":
                out.append(f"**You**\n\n{markdown_embedding(render_html(text))}")
            elif e["role"] == "assistant":
                note = " (interrupted)" if e.get("interrupted") else ""
                name = html.escape(str(e.get("model", "assistant")) + note)
                thought = reasoning_html(str(e["reasoning"])) if e.get("reasoning") else ""
                empty = text_html(str(e["note"]), "nbchat-note") if e.get("note") else ""
                body = (f"<p><strong>{name}</strong></p>" + thought + render_html(text) + empty
                        + footer_html(str(e.get("badge", ""))))
                out.append(markdown_embedding(body))
            else:
                out.append(markdown_embedding(text_html(f"Error: {text}")))
        return "\n\n---\n\n".join(out) + "\n"

    def to_json(self) -> str:
        """The transcript as JSON text (the export's `chat.json`), indented by 2:
        `{"model", "system", "messages": [{"role": "user" | "assistant" | "error", "text", ...}]}`.
        """
        return json.dumps(
            {"model": self.model, "system": self.system or None, "messages": self.transcript},
            indent=2,
        )

    # ---- traits -> conversation ---------------------------------------------------------------

    @traitlets.observe("model")
    def _model_changed(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self.conversation.model = change["new"]

    @traitlets.observe("system", *CONTROLS)
    def _settings_changed(self, change: dict[str, Any]) -> None:
        conv = self.conversation
        # an emptied control (None) goes back to the model's default
        checked = parse_settings({name: getattr(self, name) for name in CONTROLS}).options
        options = replace(conv.settings.options,
                          **{name: getattr(checked, name) for name in CONTROLS})
        conv.settings = replace(conv.settings, options=options, system=self.system or None)

    # ---- the front end ------------------------------------------------------------------------

    def _on_front_end_msg(self, _widget: Any, content: dict[str, Any], buffers: list[Any]) -> None:
        kind = content.get("type")
        if kind == "send":
            if not self.busy:
                self.submit(str(content.get("text", "")), [bytes(b) for b in buffers or []])
        elif kind == "approval":
            fut = self._approvals.get(str(content.get("id")))
            if fut is not None and not fut.done():
                fut.set_result(content.get("ok") is True)
        elif kind == "stop":
            self.stop()
        elif kind == "new":
            self.new_chat()
        elif kind == "export":
            md = content.get("format") == "markdown"
            self.send(
                {
                    "type": "export",
                    "content": self.to_markdown() if md else self.to_json(),
                    "mime": "text/markdown" if md else "application/json",
                    "filename": "chat.md" if md else "chat.json",
                }
            )

    async def _confirm(self, call: ToolCall) -> bool:
        """The approval hook of `approve=True`: show the call with Run and Deny, wait for one."""
        import uuid

        key = uuid.uuid4().hex
        fut = self._approvals[key] = asyncio.get_running_loop().create_future()
        self.send({"type": "approve", "id": key, "call": f"{call.name}({call.arguments_json})"})
        self.status = f"waiting for you to run or deny {call.name}"
        try:
            return await fut
        finally:
            self._approvals.pop(key, None)
            self.status = ""

    async def _run(self, text: str, images: tuple[Any, ...]) -> Reply | None:
        user: dict[str, Any] = {"role": "user", "text": text, "images": []}
        batcher = Batcher(lambda b: self.send({"type": "delta", "text": b[0]}))
        turn = None
        try:
            turn = self.conversation.turn(text, model=self.model or None, images=images)
            self.send({"type": "start", "model": turn.reply.model})
            async for ev in turn.events(errors_as_events=True):
                if isinstance(ev, TextDelta):
                    batcher.add(0, ev.text)
                elif isinstance(ev, Status):
                    self.status = ev.message
                elif isinstance(ev, ImageEvent):
                    batcher.flush()
                    self.send({"type": "image", "mime": "image/png"}, [png_bytes(ev.image)])
                elif isinstance(ev, ToolResultEvent):
                    batcher.flush()
                    call, result = tool_step_text(ev.step)
                    self.send({"type": "tool", "call": call, "result": result})
        except asyncio.CancelledError:
            pass  # the turn marked its reply interrupted and closed the provider's stream
        except Exception as exc:  # noqa: BLE001 - a failing provider must not kill the panel
            self._fail(text, exc)
            return None
        finally:
            batcher.flush()
            self.status = ""
            self.busy = False
        assert turn is not None  # created before the first await
        reply = turn.reply
        if reply.error is not None and not reply.text and not reply.interrupted:
            self._fail(text, reply.error)
            return None
        sent = turn.request.messages[-1]
        user["images"] = [image_data_url(p, THUMBNAIL_SIZE) for p in sent.images]
        entry = {
            "role": "assistant",
            "model": reply.model,
            "text": reply.text,
            "images": [image_data_url(p) for p in reply.image_parts],
            "badge": footer(reply),
            "interrupted": reply.interrupted,
            "provenance": reply.provenance,  # saved with the widget state
        }
        if reply.reasoning:
            entry["reasoning"] = reply.reasoning  # shown collapsed, as text
        if reply.empty_reason:
            entry["note"] = reply.empty_reason
        if reply.steps:  # shown collapsed, as text
            entry["steps"] = [dict(zip(("call", "result"), tool_step_text(s), strict=True))
                              for s in reply.steps]
        if reply.refusal:
            entry["refusal"] = reply.refusal
        extra = [{"role": "error", "text": short_error(reply.error)}] if reply.error else []
        self.transcript = [*self.transcript, user, entry, *extra]
        last_result.remember(reply)
        return reply

    def _fail(self, text: str, exc: BaseException) -> None:
        """Show the error inline and give the typed prompt back to the input box."""
        self.transcript = [*self.transcript, {"role": "error", "text": short_error(exc)}]
        self.send({"type": "error", "prompt": text})

