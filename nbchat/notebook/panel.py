"""`ChatPanel`: an interactive chat widget on the core `Conversation`.

Generation runs as an asyncio task on the kernel's event loop, so the panel stays live after
its cell finished and Stop can cancel it. Text goes to the front end as custom messages that
carry only new text, batched by `Batcher`; the transcript trait is rewritten once per turn.

Displayed, a panel is two outputs: the widget view, never updated (so the live panel is never
redrawn), then a static, sanitized copy of the transcript (`text/html` and `text/plain`) under a
display id of its own, updated after each turn. The copy is for wherever the panel cannot be
drawn: nbconvert offline (with or without saved widget state: its widget manager comes from a
CDN), GitHub, VS Code without a kernel, Lab reopened without the widget state. Wherever the
panel is drawn (live, or from saved widget state) the copy is hidden by a rule in the panel's
CSS, which anywidget puts in the page with the panel (js/nbchat.css): an output that follows one
holding `.nbchat-panel` and holds `.nbchat-transcript` is not shown. So the transcript shows
once on every surface.
"""

from __future__ import annotations

import asyncio
import html
import json
import uuid
from dataclasses import replace
from typing import Any

import anywidget
import traitlets

from ..core import registry
from ..core.conversation import Conversation
from ..core.credentials import hide_key
from ..core.errors import NbchatError
from ..core.images import png_bytes
from ..core.markdown import clean, markdown_embedding, render_html, text_html
from ..core.options import OPTIONS, control_spec, parse_settings
from ..core.render import (
    call_text,
    footer,
    footer_html,
    reasoning_html,
    refusal_html,
    tool_block_html,
    tool_step_text,
)
from ..core.types import (
    ImageEvent,
    Message,
    ModelInfo,
    Reply,
    Status,
    TextDelta,
    ToolCall,
    ToolResultEvent,
)
from . import last_result
from .widgets import STATIC, Batcher, image_data_url, short_error

THUMBNAIL_SIZE = 256
#: the options the panel has a control for; each is a synced trait of the same name, and the
#: front end draws the controls from their declared specs (the `controls` trait)
CONTROLS = ("temperature", "max_tokens")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
#: the widget view's `text/plain`, for front ends that cannot draw widgets (the copy follows)
VIEW_TEXT = "nbchat chat panel (needs a running kernel; transcript below)"


def option_trait(name: str) -> Any:
    """A synced trait for an option's control: Float or Int as declared, None = default."""
    kind = traitlets.Float if OPTIONS[name].type == "number" else traitlets.Int
    return kind(None, allow_none=True, help=OPTIONS[name].help).tag(sync=True)


def key_status(provider: Any) -> tuple[str, str]:
    """Whether `provider` can send now, from nbchat's credentials resolution (never the key):
    `("ready" | "missing" | "error", what to do)`, e.g. `("missing", "set CEREBRAS_API_KEY")`."""
    try:
        endpoint = provider.endpoint()
    except Exception as exc:  # noqa: BLE001 - a malformed key: say so, not why in detail
        return "error", short_error(exc)
    if endpoint.api_key is None and endpoint.key_required and endpoint.key_env:
        return "missing", (f"set {endpoint.key_env} (environment) or %config "
                           f"ChatMagics.api_keys = {{'{provider.name}': ...}}")
    if endpoint.base_url is None and provider.base_url_env:
        return "missing", f"set {provider.base_url_env} to the server's URL"
    if endpoint.api_key is not None:
        return "ready", "key set"
    return "ready", "no key needed"


def catalog_entry(info: ModelInfo | None, model_id: str, status: tuple[str, str]) -> dict[str, Any]:
    """One picker row: `{id, provider, ready, key, hint, vision, tools, description}`;
    `vision` and `tools` are None when no capability table knows the model."""
    return {
        "id": model_id,
        "provider": model_id.split(":", 1)[0],
        "ready": status[0] == "ready",
        "key": status[0],
        "hint": status[1],
        "vision": info.vision if info is not None else None,
        "tools": info.tools if info is not None else None,
        "description": info.description if info is not None else "",
    }


def model_catalog(current: str) -> list[dict[str, Any]]:
    """The picker's rows, grouped by provider (current model first): every provider's capability
    table (no network) with the provider's key status."""
    rows: dict[str, dict[str, Any]] = {}
    statuses: dict[str, tuple[str, str]] = {}
    for name in registry.provider_names():
        try:
            provider = registry.get_provider(name)
            infos = provider.known_models()
        except Exception:  # a provider that cannot load (missing extra) is left out
            continue
        statuses[name] = key_status(provider)
        for info in infos:
            rows.setdefault(info.id, catalog_entry(info, info.id, statuses[name]))
    if current not in rows:
        name = current.split(":", 1)[0]
        try:
            status = statuses.get(name) or key_status(registry.get_provider(name))
        except Exception:  # noqa: BLE001
            status = ("error", "unknown provider")
        rows[current] = catalog_entry(None, current, status)
    first = rows.pop(current)
    ordered = sorted(rows.values(),
                     key=lambda r: (r["provider"] != first["provider"], r["provider"]))
    return [first, *ordered]


def images_html(sources: list[Any]) -> str:
    """`<img>` paragraphs for a transcript entry's image data URLs (the sanitizer keeps only
    inline raster `data:` sources: nothing is fetched)."""
    return "".join(f"<p><img class='nbchat-image' alt='image' src='{html.escape(str(src))}'></p>"
                   for src in sources)


def assistant_html(e: dict[str, Any]) -> str:
    """One reply of a transcript as sanitized HTML, as the panel shows it: the model's name,
    its reasoning and tool calls collapsed, the text, a refusal, images and the footer."""
    note = " (interrupted)" if e.get("interrupted") else ""
    name = html.escape(str(e.get("model", "assistant")) + note)
    thought = reasoning_html(str(e["reasoning"])) if e.get("reasoning") else ""
    steps = "".join(tool_block_html(str(s.get("call", "")), str(s.get("result", "")))
                    for s in e.get("steps") or ())
    refusal = refusal_html(str(e["refusal"])) if e.get("refusal") else ""
    empty = text_html(str(e["note"]), "nbchat-note") if e.get("note") else ""
    return clean(f"<p><strong>{name}</strong></p>{thought}{steps}"
                 f"{render_html(str(e.get('text', '')))}{refusal}{empty}"
                 f"{images_html(e.get('images') or [])}{footer_html(str(e.get('badge', '')))}")


def transcript_html(entries: list[dict[str, Any]]) -> str:
    """A transcript as one sanitized HTML fragment (the static copy of a panel): each message
    rendered and sanitized on its own (`nbchat.core.markdown`), images as inline data URLs."""
    out = []
    for e in entries:
        text = str(e.get("text", ""))
        images = clean(images_html(e.get("images") or []))
        if e.get("role") == "user":
            out.append("<div class='nbchat-md'><p><strong>You</strong></p>"
                       f"{clean(render_html(text))}{images}</div>")
        elif e.get("role") == "assistant":
            out.append(f"<div class='nbchat-md'>{assistant_html(e)}</div>")
        else:
            out.append(text_html(f"Error: {text}"))
    return clean("<hr>".join(out))


def transcript_text(model: str, entries: list[dict[str, Any]]) -> str:
    """A transcript as plain text: one `You:` / `<model>:` / `Error:` paragraph per message."""
    sent = sum(e.get("role") == "user" for e in entries)
    lines = [f"ChatPanel({model!r}): {sent} message{'' if sent == 1 else 's'}"]
    for e in entries:
        who = {"user": "You", "assistant": str(e.get("model", "assistant"))}.get(
            str(e.get("role")), "Error")
        for step in e.get("steps") or ():
            lines.append(f"[tool] {step.get('call', '')} -> {step.get('result', '')}")
        lines.append(f"{who}: {e.get('text', '')}")
        if e.get("refusal"):
            lines.append(f"{who} refused: {e['refusal']}")
    return "\n\n".join(lines)


class ChatPanel(anywidget.AnyWidget):
    """A chat panel for notebooks: a message list that streams replies, a searchable model picker
    (grouped by provider, with key status and capabilities), system prompt, options, Stop,
    New chat (undoable once), image attachments, Markdown/JSON export and, per message, Copy,
    Regenerate, Edit and Delete.

    `ChatPanel(model=None, system=None, **options)`:

    - `model`: a model id such as `"local"` (the default: SmolLM2 on llama.cpp, no key),
      `"cerebras:llama3.1-8b"`, `"nvidia:meta/llama-3.1-8b-instruct"`, `"openai:<model>"`;
    - `system`: the system prompt;
    - `options`: any nbchat option, e.g. `temperature=0.2`, `max_tokens=512`, `seed=1`
      (see `nbchat.options()`); `temperature` and `max_tokens` get a control in the panel.

    Keys come from nbchat's credentials resolution, first found wins: `api_key=...` here,
    `%config ChatMagics.api_keys = {"cerebras": ...}`, then the provider's environment variable
    (`CEREBRAS_API_KEY`, `NVIDIA_API_KEY`, `REPLICATE_API_TOKEN`, `ANYSCALE_API_KEY`,
    `OPENAI_API_KEY`). The picker says which providers still need one; no key is ever shown.

    Keys typed in the panel stay in the panel: Enter sends, Shift+Enter adds a line, Escape
    stops a streaming reply; none of them reaches the notebook's shortcuts.

    From Python: `submit(text, images)`, `stop()`, `new_chat()`, `undo_new_chat()`,
    `regenerate(model=None)`, `edit(index, text)`, `delete(index)`, `await wait()`,
    `to_markdown()`, `to_json()`; `messages`, `replies` and `transcript` hold the chat.

    Example::

        from nbchat import ChatPanel
        panel = ChatPanel("local", system="Answer briefly.", temperature=0.2)
        panel
    """

    _esm = STATIC / "panel.js"
    _css = STATIC / "nbchat.css"

    model = traitlets.Unicode("").tag(sync=True)
    #: the picker's rows (`model_catalog`): id, provider, key status, capabilities
    catalog = traitlets.List(traitlets.Dict()).tag(sync=True)
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
    #: whether the last "New chat" can still be undone (until the next message is sent)
    can_undo = traitlets.Bool(False).tag(sync=True)

    def __init__(self, model: str | None = None, system: str | None = None, **options: Any):
        """`ChatPanel(model=None, system=None, **options)`: see the class docstring; e.g.
        `tools=[fn]`, and with `approve=True` each tool call waits for the user's Run or Deny in
        the panel. Raises UnknownModel for an unknown id, UnknownOption / BadOption for a bad
        option."""
        hide_key(options)
        self._approvals: dict[str, asyncio.Future[bool]] = {}
        if options.get("approve") is True:
            options["approve"] = self._confirm
        self.conversation = Conversation(model=model, system=system, **options)
        opts = self.conversation.settings.options
        catalog = model_catalog(self.conversation.model_id)
        super().__init__(
            model=self.conversation.model_id,
            catalog=catalog,
            system=system or "",
            controls=[control_spec(name) for name in CONTROLS],
            **{name: getattr(opts, name) for name in CONTROLS},
        )
        self._task: asyncio.Task[Reply | None] | None = None
        #: per turn shown (one per user entry of the transcript): where its messages start in
        #: the conversation's history
        self._starts: list[int] = []
        self._undo: tuple[list[Message], list[Reply], list[int], list[dict[str, Any]]] | None = None
        self._display_id: str | None = None
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

    def submit(self, text: str, images: list[Any] | tuple[Any, ...] = (),
               model: str | None = None) -> asyncio.Task[Any]:
        """Start a turn as a task on the running (kernel) loop; the front end's Send does this.
        `model` sends this turn to another model (the panel's stays). Raises RuntimeError while a
        reply streams."""
        if self.busy:
            raise RuntimeError("a reply is still streaming: stop it first")
        if any(e.get("role") == "error" for e in self.transcript):
            self.transcript = [e for e in self.transcript if e.get("role") != "error"]
        self._undo = None
        self.can_undo = False
        self.busy = True
        loop = asyncio.get_event_loop()
        self._task = loop.create_task(self._run(text, tuple(images), model))
        return self._task

    def stop(self) -> None:
        """Cancel the running reply; its partial text stays, marked interrupted."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def new_chat(self) -> None:
        """Stop any running reply and start over with an empty history and transcript; the model,
        system prompt and options stay. `undo_new_chat()` brings the chat back (once, until the
        next message is sent).
        """
        self.stop()
        conv = self.conversation
        if self.transcript or conv.history:
            self._undo = (list(conv.history), list(conv.replies), list(self._starts),
                          list(self.transcript))
        conv.reset()
        self._starts = []
        self.transcript = []
        self.can_undo = self._undo is not None

    def undo_new_chat(self) -> None:
        """Bring back the chat the last `new_chat()` cleared. Raises RuntimeError when there is
        nothing to undo (no New chat, or a message was sent since)."""
        if self._undo is None:
            raise RuntimeError("nothing to undo: New chat was not used, or a message was sent "
                               "since")
        if self.busy:
            raise RuntimeError("a reply is still streaming: stop it first")
        history, replies, starts, transcript = self._undo
        self._undo = None
        self.conversation.history[:] = history
        self.conversation.replies[:] = replies
        self._starts = starts
        self.transcript = transcript
        self.can_undo = False

    def delete(self, index: int) -> None:
        """Remove turn `index` (0-based: the index-th message you sent, its reply and error)
        from the transcript and from the history sent with later turns. Raises IndexError for a
        turn that does not exist, RuntimeError while a reply streams."""
        self._check_turn(index)
        conv, starts = self.conversation, self._starts
        end = starts[index + 1] if index + 1 < len(starts) else len(conv.history)
        del conv.history[starts[index]:end]
        del conv.replies[index]
        self._starts = starts[:index] + [s - (end - starts[index]) for s in starts[index + 1:]]
        lo, hi = self._span(index)
        self.transcript = self.transcript[:lo] + self.transcript[hi:]

    def edit(self, index: int, text: str, images: list[Any] | tuple[Any, ...] | None = None,
             model: str | None = None) -> asyncio.Task[Any]:
        """Replace turn `index`'s message by `text` and send it again: that turn and every later
        one are dropped (history and transcript), then a new turn starts. The message's images go
        again unless `images` is given. Raises IndexError, or RuntimeError while a reply streams.
        """
        self._check_turn(index)
        if model:
            registry.resolve(model)  # an unknown id fails here, before anything is dropped
        sent = self.conversation.history[self._starts[index]]
        kept = sent.images if images is None else tuple(images)
        self._truncate(index)
        return self.submit(text, kept, model=model)

    def regenerate(self, model: str | None = None) -> asyncio.Task[Any]:
        """Ask again for the last reply, from the same message (text and images), with `model`
        or the panel's model; the old reply is dropped. Raises IndexError when there is none."""
        if not self._starts:
            raise IndexError("no reply to regenerate yet")
        last = len(self._starts) - 1
        sent = self.conversation.history[self._starts[last]]
        return self.edit(last, sent.text, sent.images, model=model)

    async def wait(self) -> Reply | None:
        """Wait for the running turn (if any) and return its reply."""
        if self._task is None:
            return None
        return await self._task

    def to_markdown(self) -> str:
        """The transcript as a Markdown document (the panel's Markdown export), images included
        as inline `data:` URLs (the thumbnails of sent images, the generated images in full).

        Every message is rendered and sanitized on its own (`nbchat.core.markdown`) and written
        as one raw HTML block, so any Markdown reader (JupyterLab's `Markdown(...)`, nbconvert,
        a Markdown viewer) shows it as rendered here and no message can change how another is
        read; user text, model text, badges and errors alike.
        """
        out = []
        for e in self.transcript:
            text = str(e.get("text", ""))
            images = images_html(e.get("images") or [])
            if e["role"] == "user":
                out.append(f"**You**\n\n{markdown_embedding(render_html(text) + images)}")
            elif e["role"] == "assistant":
                out.append(markdown_embedding(assistant_html(e)))
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

    # ---- display: the widget view, then a static copy of the transcript -----------------------

    def _static_copy(self) -> dict[str, str]:
        """The static copy of the transcript, as a mimebundle: sanitized `text/html` in a
        `<div class="nbchat-transcript">` (`transcript_html`) and `text/plain`
        (`transcript_text`). Shown where the panel cannot be drawn; hidden next to a drawn one."""
        return {"text/html": (f"<div class='nbchat-transcript'>"
                              f"{transcript_html(self.transcript)}</div>"),
                "text/plain": transcript_text(self.model, self.transcript)}

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[Any, Any], dict[Any, Any]] | None:
        """For a front end that asks for one bundle: the widget view plus the static copy
        (`_static_copy`). Returns `(data, metadata)`, as anywidget does; None when the widget
        has no comm. In IPython, `_ipython_display_` shows the two as separate outputs instead."""
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle
        return {**data, **self._static_copy()}, metadata

    def _ipython_display_(self, **kwargs: Any) -> None:
        """Two outputs: the widget view (with a `text/plain` line pointing at the copy, for
        front ends without widgets), never updated; then the static copy under this panel's
        display id, which `_transcript_changed` updates after each turn."""
        from IPython.display import display

        bundle = super()._repr_mimebundle_()
        if bundle is None:
            return
        view = {WIDGET_VIEW: bundle[0][WIDGET_VIEW], "text/plain": VIEW_TEXT}
        display(view, metadata=bundle[1], raw=True)
        self._display_id = self._display_id or f"nbchat-transcript-{self.model_id}"
        display(self._static_copy(), raw=True, display_id=self._display_id)

    @traitlets.observe("transcript")
    def _transcript_changed(self, change: dict[str, Any]) -> None:
        # the copy saved with the notebook keeps the latest transcript; the view is left alone
        if self._display_id is None:
            return
        from IPython.display import update_display

        update_display(self._static_copy(), raw=True, display_id=self._display_id)

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
        try:
            self._handle(kind, content, buffers)
        except (IndexError, RuntimeError, NbchatError) as exc:
            self.transcript = [*self.transcript, {"role": "error", "text": short_error(exc)}]

    def _handle(self, kind: Any, content: dict[str, Any], buffers: list[Any]) -> None:
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
        elif kind == "undo_new":
            self.undo_new_chat()
        elif kind == "regenerate":
            self.regenerate(str(content["model"]) if content.get("model") else None)
        elif kind == "edit":
            images = [bytes(b) for b in buffers] if buffers else None
            self.edit(int(content["index"]), str(content.get("text", "")), images)
        elif kind == "delete":
            self.delete(int(content["index"]))
        elif kind == "catalog":  # the picker opened: key status may have changed since
            self.catalog = model_catalog(self.model)
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
        key = uuid.uuid4().hex
        fut = self._approvals[key] = asyncio.get_running_loop().create_future()
        self.send({"type": "approve", "id": key, "call": call_text(call)})
        self.status = f"waiting for you to run or deny {call.name}"
        try:
            return await fut
        finally:
            self._approvals.pop(key, None)
            self.status = ""

    # ---- turns ----------------------------------------------------------------------------------

    def _check_turn(self, index: int) -> None:
        if self.busy:
            raise RuntimeError("a reply is still streaming: stop it first")
        if not 0 <= index < len(self._starts):
            raise IndexError(f"no message {index}: the chat has {len(self._starts)}")

    def _span(self, index: int) -> tuple[int, int]:
        """Where turn `index` sits in the transcript: its user entry up to the next one."""
        users = [i for i, e in enumerate(self.transcript) if e.get("role") == "user"]
        lo = users[index]
        return lo, users[index + 1] if index + 1 < len(users) else len(self.transcript)

    def _truncate(self, index: int) -> None:
        """Drop turn `index` and every later one, from the history and the transcript."""
        lo, _ = self._span(index)
        del self.conversation.history[self._starts[index]:]
        del self.conversation.replies[index:]
        del self._starts[index:]
        self.transcript = self.transcript[:lo]

    async def _run(self, text: str, images: tuple[Any, ...], model: str | None = None
                   ) -> Reply | None:
        user: dict[str, Any] = {"role": "user", "text": text, "images": []}
        batcher = Batcher(lambda b: self.send({"type": "delta", "text": b[0]}))
        turn = None
        start = len(self.conversation.history)
        try:
            turn = self.conversation.turn(text, model=model or self.model or None, images=images)
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
        self._starts.append(start)
        self.transcript = [*self.transcript, user, entry, *extra]
        last_result.remember(reply)
        return reply

    def _fail(self, text: str, exc: BaseException) -> None:
        """Show the error inline and give the typed prompt (and the attached images, which the
        front end keeps) back to the input box."""
        self.transcript = [*self.transcript, {"role": "error", "text": short_error(exc)}]
        self.send({"type": "error", "prompt": text})

