"""`%%chat`, `%chat_error` and `%models`.

Loading the extension imports only IPython, traitlets (already in every kernel) and the
options' declaration (nbchat.core.options, for the flags' help); the rest of the core, the
providers and the display code are imported inside the magic bodies.
"""

from __future__ import annotations

import contextlib
import re
import string
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Bool, Dict, Float, Int, TraitError, Unicode, observe, validate
from traitlets.config import Configurable

from ..core.options import OPTIONS

if TYPE_CHECKING:  # pragma: no cover
    from ..core.conversation import Conversation
    from ..core.loop import TurnLoop
    from ..core.turn import Turn
    from ..core.types import Reply

# `{name}` with optional `.attr`, `[key]`, `!r` and `:spec` (no spaces), not inside `{{ }}`
_FIELD = re.compile(
    r"(?<!\{)\{(?P<expr>(?P<name>[A-Za-z_]\w*)(?:\.[A-Za-z_]\w*|\[[^\[\]{}\s]*\])*)"
    r"(?:!(?P<conv>[rsa]))?(?::(?P<spec>[^{}\s]*))?\}(?!\})"
)


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """nbchat's own errors become IPython usage errors: a short message, no traceback.

    So does a provider whose module or dependency is missing."""
    from ..core.errors import NbchatError

    try:
        yield
    except NbchatError as exc:
        raise UsageError(str(exc)) from None
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"cannot load a provider: {exc}; install the package that provides it"
        ) from None


def fill_template(text: str, namespace: dict[str, Any]) -> str:
    """Fill `{name}` from the notebook's variables; everything else is sent as typed.

    A field is `{name}`, optionally with `.attr`, `[key]`, `!r` and a `:spec` without spaces,
    where `name` is a variable of the notebook. Braces around anything else (JSON, code, a
    `{name}` that is not a variable) and double braces (`{{ user.name }}`, templates of other
    languages) stay exactly as typed. A field whose variable exists but that cannot be filled
    (a missing attribute or key, a bad format spec) raises `UsageError` saying why, before
    anything is sent.
    """
    formatter = string.Formatter()

    def one(m: re.Match[str]) -> str:
        whole = m.group(0)
        if m.group("name") not in namespace:
            return whole
        try:
            value, _ = formatter.get_field(m.group("expr"), (), namespace)
            value = formatter.convert_field(value, m.group("conv"))
            return formatter.format_field(value, m.group("spec") or "")
        except Exception as exc:  # a bad attribute, key or format spec in the template
            raise UsageError(
                f"{whole} in the cell cannot be filled from the notebook's variables "
                f"({type(exc).__name__}: {exc}); nothing was sent. Fix it, or run "
                "%%chat --no-fill to send the cell exactly as typed."
            ) from None

    return _FIELD.sub(one, text)


#: option keywords with no %%chat flag: a key typed in a cell would be saved with the notebook
#: (use `%config ChatMagics.api_keys` or the provider's variable)
NO_FLAG = ("api_key",)

#: options a thread keeps until a later cell changes them; the others (what this cell's message
#: holds and how this one answer is shaped) apply to their cell only
THREAD_KEEPS = ("temperature", "top_p", "max_tokens", "stop", "seed", "logprobs", "input",
                "base_url", "max_cost", "timeout")


def option_argument(name: str, *flags: str, note: str = "", **kwargs: Any) -> Any:
    """`@argument` for an option keyword: its help is the option's declared description and
    range (nbchat.core.options.OPTIONS), followed by what the flag itself adds (`note`)."""
    text = OPTIONS[name].help + (f"; {note}" if note else "")
    dest = {"images": "image"}.get(name, name)
    # argparse %-formats help strings
    return argument(*flags, dest=dest, help=text.replace("%", "%%"), **kwargs)


def default_help(name: str) -> str:
    """`%config ChatMagics.<name>` help: the option's declared description and range."""
    return f"Default for %%chat (its flag overrides it): {OPTIONS[name].help}."


@magics_class
class ChatMagics(Magics, Configurable):
    """Chat with a model from a cell. Defaults: `%config ChatMagics.<trait> = value`."""

    default_model = Unicode(
        "", help="Model used when %%chat has no -m (empty: NBCHAT_DEFAULT_MODEL or 'local')."
    ).tag(config=True)
    system = Unicode(
        None, allow_none=True, help="System prompt for new threads without -s."
    ).tag(config=True)
    temperature = Float(None, allow_none=True, help=default_help("temperature")).tag(config=True)
    max_tokens = Int(None, allow_none=True, help=default_help("max_tokens")).tag(config=True)
    seed = Int(None, allow_none=True, help=default_help("seed")).tag(config=True)
    stream = Bool(True, help="Show replies as they arrive; False (or --no-stream) shows each "
                  "reply once complete. The request is streamed either way.").tag(config=True)
    update_interval = Float(
        0.1, help="Minimum seconds between two updates of the streaming output."
    ).tag(config=True)
    max_block_chars = Int(
        400, help="While streaming, a block longer than this is cut (at a line break, or after "
        "a sentence in a one-line paragraph) and frozen; the finished reply is one output."
    ).tag(config=True)
    api_keys = Dict(
        key_trait=Unicode(),
        help="API keys by provider name, e.g. {'cerebras': getpass.getpass()}; used when a call "
        "passes no api_key=, before the provider's environment variable. Shown as ***.",
    ).tag(config=True)
    base_urls = Dict(
        key_trait=Unicode(), value_trait=Unicode(),
        help="Base URLs by provider name, e.g. {'openai': 'http://localhost:8080/v1'}; used when "
        "a call passes no base_url=, before the provider's environment variable.",
    ).tag(config=True)
    max_cost = Float(None, allow_none=True, help=default_help("max_cost")).tag(config=True)
    connect_timeout = Float(
        None, allow_none=True, help="Seconds allowed to open a connection (default 10)."
    ).tag(config=True)
    first_byte_timeout = Float(
        None, allow_none=True,
        help="Seconds allowed from sending a request to the start of its answer (default 60).",
    ).tag(config=True)
    idle_timeout = Float(
        None, allow_none=True,
        help="Longest silence allowed inside a streamed reply, in seconds (default 60).",
    ).tag(config=True)
    total_timeout = Float(
        None, allow_none=True, help="Seconds allowed for a whole reply, retries included "
                                    "(default 600)."
    ).tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.threads: dict[str, Conversation] = {}
        #: (thread, cell key) -> (run number, %%chat calls in that run so far - 1)
        self._calls: dict[tuple[str, Any], tuple[int | None, int]] = {}
        if shell is not None:
            from .context import install

            install(shell)  # the log learns each request's notebook and cell
            if self not in shell.configurables:
                shell.configurables.append(self)  # so that %config ChatMagics... reaches us
            if "ChatMagics" in shell.config:
                self.update_config(shell.config)

    # ---- %config ChatMagics.api_keys / base_urls -> the core's credentials ---------------

    # A TraitError makes traitlets keep the previous value (and %config print the message).

    @validate("api_keys")
    def _valid_api_keys(self, proposal: Any) -> dict[str, Any]:
        from ..core.credentials import checked_key
        from ..core.errors import NbchatError

        _check_providers(proposal.value, "api_keys")
        try:  # held as Secrets: %config ChatMagics shows them as ***
            return {str(name): checked_key(value, str(name), "in %config ChatMagics.api_keys")
                    for name, value in proposal.value.items() if value}
        except NbchatError as exc:
            raise TraitError(str(exc)) from None

    @validate("base_urls")
    def _valid_base_urls(self, proposal: Any) -> dict[str, str]:
        _check_providers(proposal.value, "base_urls")
        return dict(proposal.value)

    @observe("api_keys", "base_urls")
    def _push_credentials(self, change: Any) -> None:
        from ..core import credentials

        credentials.configure(**{change.name: change.new},
                              source=f"%config ChatMagics.{change.name}")

    # ---- %%chat ------------------------------------------------------------------------

    @magic_arguments(name="%chat")  # IPython adds one "%": the usage line says %%chat
    @argument("-m", "--model", help="model id, an alias like 'local', 'A,B' or 'provider:*'")
    @option_argument("system", "-s", "--system", note="kept for the thread")
    @option_argument("temperature", "-t", "--temperature", type=float)
    @option_argument("top_p", "--top-p", type=float)
    @option_argument("max_tokens", "--max-tokens", type=int)
    @option_argument("stop", "--stop", action="append", metavar="S", note="repeatable")
    @option_argument("seed", "--seed", type=int)
    @option_argument("json", "--json", action="store_true")
    @option_argument("schema", "--schema", metavar="VAR", note="VAR: a variable holding a "
                     "JSON schema dict, a dataclass or a pydantic model")
    @option_argument("tools", "--tools", action="append", metavar="VAR",
                     note="VAR: variables (comma-separated) holding a function, a tool schema "
                     "or a list of them; repeatable; functions run and the model answers "
                     "with their results")
    @option_argument("tool_choice", "--tool-choice", metavar="C")
    @option_argument("approve", "--approve", metavar="VAR",
                     note="VAR: a variable holding the function")
    @option_argument("max_tool_steps", "--max-tool-steps", type=int, metavar="N")
    @option_argument("schema_retries", "--schema-retries", type=int, metavar="N")
    @option_argument("logprobs", "--logprobs", type=int, metavar="N")
    @argument("--new", action="store_true",
              help="start the thread afresh: no history, system prompt or options; its model "
              "and endpoint stay")
    @argument("--thread", metavar="NAME",
              help="conversation to continue (default: 'default'); it keeps its model, endpoint "
              "and options until a cell changes them, and running a cell again replaces that "
              "cell's turn")
    @argument("--as", dest="as_var", metavar="VAR", help="also store the reply in VAR")
    @argument("--no-stream", action="store_true",
              help="show the reply only once it is complete (a display setting: the request "
              "is still streamed, so timeouts, Ctrl-C and partial replies work as usual)")
    @argument("--no-fill", action="store_true",
              help="send the cell exactly as typed: {name} is not filled from variables")
    @option_argument("base_url", "--base-url", metavar="URL")
    @option_argument("max_cost", "--max-cost", type=float, metavar="USD")
    @option_argument("timeout", "--timeout", type=float, metavar="S",
                     note="a number here: the whole reply (%config ChatMagics.*_timeout)")
    @option_argument("images", "--image", action="append", metavar="PATH_OR_VAR",
                     note="a file path, a URL or a variable; repeatable")
    @option_argument("input", "--input", action="append", metavar="KEY=VALUE",
                     note="one input; VALUE is read as JSON when it parses (512, true, "
                     '[1, 2]), else as text; repeatable')
    @option_argument("context", "--context", action="append", metavar="NAMES",
                     note="comma-separated, e.g. df,arr,error,cell:-1; repeatable; this cell only")
    @option_argument("context_budget", "--context-budget", type=int, metavar="TOKENS")
    @argument("--dry-run", action="store_true",
              help="show the messages that would be sent (context included) and their tokens; "
                   "send nothing")
    @argument("--code", action="store_true",
              help="put the reply's first code block into a new cell below (not run)")
    @argument(
        "--save", metavar="PATH",
        help="save reply images: PATH for one; PATH with {i}, or stem_1.png, stem_2.png...",
    )
    @cell_magic
    def chat(self, line: str, cell: str) -> None:
        """Send the cell to a model and stream the reply as Markdown.

        Each cell continues the thread (`--thread NAME`, `--new` to start afresh); the reply is
        also `nbchat.last`. `{var}` in the cell is filled from the notebook's variables; other
        braces are sent as typed (see `fill_template`), and `--no-fill` sends the whole cell as
        typed. `-m A,B` (or `provider:*`) sends the cell to several models side by side.

        Examples::

            %%chat
            Explain list comprehensions in two sentences.

            %%chat -m cerebras:llama3.1-8b -t 0.2 --max-tokens 200
            Summarise {text} in three bullet points.

            %%chat -m local,nvidia:meta/llama-3.1-8b-instruct
            Which is larger, 9.11 or 9.9?

        The default model is `local` (SmolLM2 on llama.cpp: no key, no network); change it with
        `%config ChatMagics.default_model = "cerebras:llama3.1-8b"`. Keys, first found wins:
        `%config ChatMagics.api_keys = {"cerebras": ...}`, then the provider's environment
        variable (CEREBRAS_API_KEY, NVIDIA_API_KEY, REPLICATE_API_TOKEN, ANYSCALE_API_KEY,
        OPENAI_API_KEY). `%models` lists the models and says which keys are set.
        """
        args = _unquoted(_parse_args(self.chat, line))
        if args.model is not None and not args.model.strip():
            raise UsageError(
                '-m "": give a model id such as local or cerebras:llama3.1-8b (see %models), or '
                "leave out -m to keep the thread's model"
            )
        ns = self.shell.user_ns if self.shell is not None else {}
        prompt = (cell if args.no_fill else fill_template(cell, ns)).strip()
        if not prompt:
            raise UsageError("the cell is empty: write the prompt below %%chat")
        if args.as_var is not None and not args.as_var.isidentifier():
            raise UsageError(f"--as {args.as_var!r}: give a valid variable name")
        options = self._options(args, ns)
        if args.dry_run:
            self._dry_run(args, line, cell, prompt, options)
            return
        if args.model and ("," in args.model or args.model.endswith(":*")):
            self._compare(args.model, prompt, _layered(self._defaults(), options), args.as_var,
                          ns)
            return
        with usage_errors():
            reply = self._chat(args, args.model, prompt, options, self._turn_key(args, line, cell))
        self._store(reply, args.as_var, ns)
        if args.save:
            self._save(reply, args.save)
        if args.code and reply.error is None:
            self._code_below(reply.text)
        if reply.error is not None:
            raise UsageError(str(reply.error))
        if reply.interrupted:
            raise UsageError(
                "interrupted: the partial reply is kept in nbchat.last and in the thread's history"
            )

    def _options(self, args: Any, ns: dict[str, Any]) -> dict[str, Any]:
        """The option keywords this cell's flags give (not the `%config` defaults)."""
        opts: dict[str, Any] = {
            "temperature": args.temperature,
            "max_tokens": args.max_tokens,
            "seed": args.seed,
            "top_p": args.top_p,
            "stop": args.stop,
            "base_url": args.base_url,
            "tool_choice": args.tool_choice,
            "logprobs": args.logprobs,
            "max_cost": args.max_cost,
            "max_tool_steps": args.max_tool_steps,
            "schema_retries": args.schema_retries,
        }
        if args.tools:
            opts["tools"] = [t for names in args.tools for name in names.split(",") if name
                             for t in _as_list(_lookup(ns, name.strip(), "--tools"))]
        if args.approve:
            opts["approve"] = _lookup(ns, args.approve, "--approve")
        if args.json:
            opts["json"] = True
        if args.schema:
            opts["schema"] = _lookup(ns, args.schema, "--schema")
        if args.image:
            opts["images"] = [_image_arg(ns, v) for v in args.image]
        if args.input:
            opts["input"] = model_inputs(args.input)
        if args.system is not None:
            opts["system"] = args.system
        if args.timeout is not None:
            opts["timeout"] = {"total": args.timeout}
        if args.context:
            opts["context"] = [n.strip() for v in args.context for n in v.split(",") if n.strip()]
        if args.context_budget is not None:
            opts["context_budget"] = args.context_budget
        return {k: v for k, v in opts.items() if v is not None}

    def _defaults(self) -> dict[str, Any]:
        """The `%config ChatMagics.*` defaults of the options a cell's flags override."""
        limits = {name: getattr(self, f"{name}_timeout")
                  for name in ("connect", "first_byte", "idle", "total")}
        opts = {"temperature": self.temperature, "max_tokens": self.max_tokens,
                "seed": self.seed, "max_cost": self.max_cost,
                "timeout": {k: v for k, v in limits.items() if v is not None} or None}
        return {k: v for k, v in opts.items() if v is not None}

    def _turn_key(self, args: Any, line: str, cell: str) -> tuple[Any, ...]:
        """What identifies this cell's turn in its thread, so that running the cell again
        replaces it: the cell's id (`nbchat.notebook.context.cell_key`; its source when the
        front end sends no id), and how many `%%chat` calls on that thread this same run of the
        cell made before (a loop of `run_cell_magic` calls in one cell is several turns)."""
        from .context import cell_key, run_number

        where = (args.thread or "default", cell_key(f"%%chat {line}\n{cell}"))
        run = run_number()
        last_run, count = self._calls.get(where, (None, -1))
        count = count + 1 if last_run == run else 0
        self._calls[where] = (run, count)
        return (*where[1], count)

    def _conversation(self, thread: str, model: str | None, new: bool, system: str | None,
                      base_url: str | None) -> Conversation:
        from dataclasses import replace

        from ..core import registry
        from ..core.conversation import Conversation
        from ..core.options import parse_settings

        conv = self.threads.get(thread)
        if conv is None:
            conv = Conversation(model=model or self.default_model or None,
                                system=system or self.system)
            self.threads[thread] = conv
            return conv
        if model is not None and model != conv.model:
            provider, _ = registry.resolve(model)  # an unknown id fails before anything changes
            if provider is not registry.resolve(conv.model)[0] and base_url is None:
                # the endpoint and key belonged to the old provider
                conv.settings = replace(conv.settings, base_url=None, api_key=None)
            conv.model = model
        if new:
            # afresh: no history, no system prompt or options; the model and its endpoint stay
            kept = conv.settings
            conv = Conversation(model=conv.model, system=system or self.system)
            conv.settings = replace(conv.settings, base_url=kept.base_url, api_key=kept.api_key)
            self.threads[thread] = conv
        elif system is not None:
            conv.settings = parse_settings({"system": system}, conv.settings)
        return conv

    def _chat(self, args: Any, model: str | None, prompt: str, options: dict[str, Any],
              key: Any = None) -> Reply:
        from ..core.bridge import iterate_sync
        from ..core.errors import NbchatError
        from ..core.images import png_bytes
        from ..core.markdown import text_html
        from ..core.render import refusal_html
        from ..core.types import ImageEvent, SchemaRetry, Status, TextDelta, ToolResultEvent
        from .display import (
            StreamingMarkdown,
            footer_bundle,
            image_bundle,
            ipython_clear,
            ipython_publisher,
            reply_output,
        )
        from .status import StatusLine, note_bundle, reasoning_bundle

        thread = args.thread or "default"
        saved = self._thread_state(thread)
        try:
            conv = self._conversation(thread, model, args.new, options.pop("system", None),
                                      options.get("base_url"))
            turn = self._turn(conv, prompt, options, key)
        except BaseException:
            self._restore_thread(thread, saved)  # a cell that fails before sending: no change
            raise
        # the outputs that stay carry the reply's provenance as metadata; the streamed pieces
        # and the status line, replaced or emptied by the end, do not (bytes on every update)
        publish = ipython_publisher(lambda: {"nbchat": turn.reply.provenance})
        transient = ipython_publisher()
        status = StatusLine(transient)
        clear = ipython_clear if _cell_is_ours(self.shell) else None

        def streamed() -> StreamingMarkdown:
            return StreamingMarkdown(
                transient,
                final_publish=publish,
                clear=clear,
                update_interval=self.update_interval,
                max_block_chars=self.max_block_chars,
            )

        out = streamed()
        live = self.stream and not args.no_stream
        events = iterate_sync(turn.events())
        shown_steps = 0  # tool steps shown as they came (an interrupt keeps more on the reply)
        try:
            for ev in events:
                if isinstance(ev, Status):
                    status.show(ev.message)
                    continue
                if isinstance(ev, (ToolResultEvent, SchemaRetry)):  # shown as they come
                    if not live and isinstance(ev, SchemaRetry):
                        continue  # nothing of the rejected attempt was shown
                    if clear is not None:  # the text so far becomes one output, once
                        if live:
                            out.close(others=status.created)
                        elif status.created:
                            clear()
                        clear = None  # from here on, a clear would take the calls' blocks
                    elif live:
                        out.close()
                    out = streamed()
                    if isinstance(ev, SchemaRetry):
                        note = (f"The reply above did not fit the schema ({ev.reason}); "
                                f"asked again ({ev.attempt}).")
                        publish({"text/plain": note,
                                 "text/html": text_html(note, "nbchat-retry")}, None, False)
                    else:
                        publish(tool_step_bundle(ev.step), None, False)
                        shown_steps += 1
                    continue
                if not live:
                    continue
                if isinstance(ev, TextDelta):
                    out.feed(ev.text)
                elif isinstance(ev, ImageEvent):
                    out.image(png_bytes(ev.image))
        except KeyboardInterrupt:
            pass  # the turn is marked interrupted and keeps its partial text
        except NbchatError:
            pass  # kept on the reply; shown after the partial text
        finally:
            getattr(events, "close", lambda: None)()  # runs the turn's cleanup now
            status.clear()
            if not any(r is turn.reply for r in conv.replies):
                # failed before any reply arrived (the Conversation did not record it): the
                # thread keeps the model, endpoint and options it had before this cell
                self._restore_thread(thread, saved)
        reply = turn.reply
        if not live:
            if clear is not None and status.created:
                clear()  # the emptied status line goes: the reply is the cell's first output
            if reply.text:
                publish(reply_output(reply.text), None, False)
            for part in reply.image_parts:
                publish(image_bundle(png_bytes(part)), None, False)
        else:
            # may clear the cell (blocks, an emptied status line) to leave the reply as one output
            out.close(others=status.created)
        for step in reply.steps[shown_steps:]:  # calls that finished before an interrupt
            publish(tool_step_bundle(step), None, False)
        if reply.reasoning:  # after the reply (collapsed), so that clearing cannot drop it
            publish(reasoning_bundle(reply.reasoning), None, False)
        if reply.refusal:
            publish({"text/html": refusal_html(reply.refusal),
                     "text/plain": f"Refused: {reply.refusal}"}, None, False)
        if reply.tool_calls:
            from ..core.render import call_text, tool_calls_html

            calls = "\n".join(call_text(t) for t in reply.tool_calls)
            publish({"text/html": tool_calls_html(reply), "text/plain": f"Tool calls:\n{calls}"},
                    None, False)
        if reply.empty_reason:
            publish(note_bundle(reply.empty_reason), None, False)
        if reply.error is None or reply.text or reply.image_parts or reply.interrupted:
            publish(footer_bundle(reply.footer()), None, False)
        return reply

    def _thread_state(self, thread: str) -> tuple[Conversation | None, Any, Any]:
        """What a cell may change of `thread`: its Conversation (`--new` replaces it), model
        and settings (endpoint, key, options), for `_restore_thread`."""
        conv = self.threads.get(thread)
        return (conv, None, None) if conv is None else (conv, conv.model, conv.settings)

    def _restore_thread(self, thread: str, saved: tuple[Conversation | None, Any, Any]) -> None:
        """Put `thread` back as `_thread_state` saw it (a thread this cell started goes)."""
        conv, model, settings = saved
        if conv is None:
            self.threads.pop(thread, None)
            return
        conv.model, conv.settings = model, settings
        self.threads[thread] = conv

    def _turn(self, conv: Conversation, prompt: str, options: dict[str, Any], key: Any
              ) -> Turn | TurnLoop:
        """The thread's next turn: the options it keeps (`THREAD_KEEPS`) become the thread's
        own from this cell on; this cell's other options and the `%config` defaults of what the
        thread has not set apply to this turn only."""
        from ..core.options import parse_settings

        keeps = {k: v for k, v in options.items() if k in THREAD_KEEPS}
        once = {k: v for k, v in options.items() if k not in THREAD_KEEPS}
        before = conv.settings
        after = parse_settings(keeps, before)
        for name, value in self._defaults().items():
            if name == "timeout":
                have = after.timeout.set_fields() if after.timeout is not None else {}
                value = {k: v for k, v in value.items() if k not in have}
                if value:
                    once["timeout"] = value
            elif getattr(after.options, name, getattr(after, name, None)) is None:
                once[name] = value
        conv.settings = after
        try:
            return conv.turn(prompt, key=key, **once)
        except BaseException:
            conv.settings = before  # a cell that fails before sending changes nothing
            raise

    def _dry_run(self, args: Any, line: str, cell: str, prompt: str, options: dict[str, Any]
                 ) -> None:
        """`--dry-run`: show what this cell would send (nbchat.core.preview), built the way
        `_chat` builds it (the thread, its kept options, the `%config` defaults, the cell's
        turn key), on a copy: the thread is not changed."""
        import copy

        from IPython.display import display

        from ..core.bridge import run_sync
        from ..core.preview import apreview_turn

        if args.model and ("," in args.model or args.model.endswith(":*")):
            raise UsageError("--dry-run shows one model's request: give one -m")
        thread = args.thread or "default"
        threads, calls = dict(self.threads), dict(self._calls)
        original = self.threads.get(thread)
        if original is not None:  # the copy's lists are its own: nothing reaches the thread
            twin = copy.copy(original)
            for name in ("history", "replies", "_spans", "_dropped"):
                setattr(twin, name, list(getattr(original, name)))
            self.threads[thread] = twin
        try:
            key = self._turn_key(args, line, cell)
            with usage_errors():
                conv = self._conversation(thread, args.model, args.new,
                                          options.pop("system", None), options.get("base_url"))
                preview = run_sync(apreview_turn(self._turn(conv, prompt, options, key)))
        finally:
            self.threads.clear()
            self.threads.update(threads)
            self._calls = calls
        display(preview)

    def _code_below(self, text: str) -> None:
        """`--code`: the first code block of the reply becomes a new cell below (not run)."""
        code = first_code_block(text)
        if code is None:
            print("--code: the reply has no code block; no cell was added")
        elif self.shell is not None:
            self.shell.set_next_input(code, replace=False)

    # ---- %chat_error -----------------------------------------------------------------------

    @line_magic
    def chat_error(self, line: str) -> None:
        """Explain the last exception: `%chat_error [%%chat flags, e.g. -m MODEL --code]`.

        Sends the error, its traceback and the cell that raised it (`--context error`) with a
        request to explain it and fix the cell, in a thread of its own ("chat_error")."""
        self.chat(f"--new --thread chat_error --context error {line}", ERROR_PROMPT)

    def _store(self, reply: Any, as_var: str | None, ns: dict[str, Any]) -> None:
        from . import last_result

        last_result.remember(reply)
        if as_var:
            ns[as_var] = reply

    def _save(self, reply: Reply, path: str) -> None:
        from ..core.images import png_bytes as to_png
        from ..core.images import to_pil

        parts = reply.image_parts
        if not parts:
            print(f"--save {path}: the reply has no images; nothing saved")
            return
        paths = image_paths(path, len(parts))
        for part, dest in zip(parts, paths, strict=True):
            if dest.lower().endswith(".png") or "." not in dest.rsplit("/", 1)[-1]:
                with open(dest, "wb") as fh:
                    fh.write(to_png(part))
            else:
                img = to_pil(part)
                if img.mode not in ("RGB", "L") and dest.lower().endswith((".jpg", ".jpeg")):
                    img = img.convert("RGB")
                img.save(dest)
        print("saved " + ", ".join(paths))

    def _compare(self, model: str, prompt: str, options: dict[str, Any], as_var: str | None,
                 ns: dict[str, Any]) -> None:
        try:
            from .compare import compare
        except ModuleNotFoundError as exc:
            if exc.name != "nbchat.notebook.compare":
                raise
            raise UsageError(
                "comparing models (-m A,B or -m 'provider:*') needs nbchat.notebook.compare, "
                "which this version of nbchat does not have"
            ) from None
        with usage_errors():
            models = expand_models(model, base_url=options.get("base_url"),
                                   api_key=options.get("api_key"))
            result = compare(models, prompt, **options)
        self._store(result, as_var, ns)

    # ---- %models ---------------------------------------------------------------------

    @line_magic
    def models(self, line: str) -> None:
        """Show the models nbchat knows: `%models` or `%models PROVIDER`."""
        from IPython.display import display

        from .table import model_table

        with usage_errors():
            table = model_table(line.strip() or None)
        display(table)


    # ---- the log: %chat_log, %chat_replay, %chat_usage -----------------------------------

    @magic_arguments()
    @argument("-n", type=int, default=20, help="how many entries (newest first; default 20)")
    @argument("-m", "--model", help="only this model (an id or alias)")
    @argument("search", nargs="*", help="only entries whose prompt or reply contains this text")
    @line_magic
    def chat_log(self, line: str) -> None:
        """Show recent entries of the local log (NBCHAT_LOG) as a table."""
        from IPython.display import display

        from ..core import log
        from .log_tables import LogTable

        args = _unquoted(_parse_args(self.chat_log, line))
        if args.n < 1:
            raise UsageError("-n: give a positive number of entries")
        lg = log.current()
        with usage_errors():
            entries = [] if lg is None else lg.entries(
                args.n, models=log.model_ids(args.model), text=" ".join(args.search) or None)
        display(LogTable(entries, lg.path if lg is not None else None))

    @magic_arguments()
    @argument("mode", nargs="?", choices=["on", "strict", "off"],
              help="on: answer logged requests from the log, others from the provider; "
                   "strict: only from the log (a request not logged is an error); off")
    @argument("--paced", action="store_true", help="replay at the recorded speed")
    @line_magic
    def chat_replay(self, line: str) -> None:
        """Answer requests from the local log: `%chat_replay on|strict|off [--paced]`."""
        from ..core import replay

        args = _parse_args(self.chat_replay, line)
        with usage_errors():
            if args.mode is not None:
                replay.set_mode(args.mode, paced=args.paced)
            mode = replay.mode()
        pace = " at the recorded pace" if replay.paced() and mode != "off" else ""
        print(f"replay: {mode}{pace}")

    @line_magic
    def chat_usage(self, line: str) -> None:
        """Requests, tokens and estimated cost per model: this kernel session and the whole log.
        """
        from IPython.display import display

        from ..core import costs, log
        from .log_tables import UsageRow, UsageTable

        session = [UsageRow(m, u.requests, u.input_tokens, u.output_tokens, u.replayed)
                   for m, u in costs.ledger.rows()]
        lg = log.current()
        whole = None
        problem = None
        if lg is not None:
            try:
                whole = [UsageRow(*row) for row in lg.usage()]
            except log.LogUnusable as exc:
                problem = exc.message
        display(UsageTable(session, whole, lg.path if lg is not None else None, problem))


#: what %chat_error asks, with the last error as context
ERROR_PROMPT = ("Explain the error above: what went wrong, in one or two sentences, then the "
                "corrected cell in one Python code block.")


def first_code_block(text: str) -> str | None:
    """The first fenced or indented code block of a Markdown reply that holds code
    (CommonMark, markdown-it), without its fence; None when there is none (an empty block is
    passed over: it would make an empty cell)."""
    from markdown_it import MarkdownIt

    for token in MarkdownIt("commonmark").parse(text):
        if token.type in ("fence", "code_block") and token.content.strip():
            return token.content.rstrip("\n")
    return None
def tool_step_bundle(step: Any) -> dict[str, Any]:
    """A tool call that ran and its result, collapsed (sanitized HTML) and as text."""
    from ..core.render import tool_step_html, tool_step_text

    head, result = tool_step_text(step)
    return {"text/html": tool_step_html(step), "text/plain": f"Tool call: {head}\n{result}"}


def _check_providers(mapping: dict[str, Any], trait: str) -> None:
    """`TraitError` with a close match for a name in `mapping` that no provider has."""
    import difflib

    from ..core import registry

    for name in map(str, mapping):
        if not registry.has_provider(name):
            names = registry.provider_names()
            near = difflib.get_close_matches(name, names, n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise TraitError(
                f"%config ChatMagics.{trait}: no provider is called {name!r}.{hint} "
                f"Providers: {', '.join(names)}."
            )


def _cell_is_ours(shell: Any) -> bool:
    """Whether the running cell is a `%%chat` cell (all its outputs are the magic's), so the
    streamed blocks may be cleared and replaced by one output."""
    result = getattr(getattr(shell, "displayhook", None), "exec_result", None)
    raw = getattr(getattr(result, "info", None), "raw_cell", None)
    return isinstance(raw, str) and raw.lstrip().startswith("%%chat")


def _unquote(value: Any) -> Any:
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _unquoted(args: Any) -> Any:
    """IPython's argument splitting keeps quotes: `-s "Be brief."` means `Be brief.`."""
    for name, value in vars(args).items():
        setattr(args, name, _unquote(value))
    return args


def _layered(defaults: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The cell's options over the `%config` defaults (timeout limits merged one by one)."""
    out = {**defaults, **options}
    if "timeout" in defaults and "timeout" in options:
        out["timeout"] = {**defaults["timeout"], **options["timeout"]}
    return out


def model_inputs(items: list[str]) -> dict[str, Any]:
    """`--input KEY=VALUE` flags -> the `input` option's dict. A VALUE that parses as JSON is
    that value (`width=512` -> 512, `go_fast=true` -> True); any other VALUE is the text itself
    (`prompt=a cat`). Raises `UsageError` for an item without `=` or with an empty KEY."""
    import json

    out: dict[str, Any] = {}
    for item in items:
        name, eq, text = item.partition("=")
        if not eq or not name.strip():
            raise UsageError(f"--input {item}: write KEY=VALUE, e.g. --input width=512")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        out[name.strip()] = value
    return out


def _lookup(ns: dict[str, Any], name: str, flag: str) -> Any:
    if name not in ns:
        raise UsageError(f"{flag} {name}: no variable {name!r} is defined")
    return ns[name]


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _image_arg(ns: dict[str, Any], value: str) -> Any:
    """A variable's value when `value` names one, else the path or URL itself."""
    import os

    if value.isidentifier() and value in ns:
        return ns[value]
    if value.isidentifier() and not os.path.exists(value):
        raise UsageError(f"--image {value}: no variable or file named {value!r}")
    return value


def image_paths(path: str, n: int) -> list[str]:
    """Where --save writes n images: PATH for one; PATH.format(i=1..n) when it has {i};
    else stem_1.ext, stem_2.ext, ..."""
    if "{i}" in path:
        return [path.replace("{i}", str(i)) for i in range(1, n + 1)]
    if n == 1:
        return [path]
    import os

    stem, ext = os.path.splitext(path)
    return [f"{stem}_{i}{ext or '.png'}" for i in range(1, n + 1)]


def _parse_args(magic: Any, line: str) -> Any:
    """`parse_argstring`, with a "did you mean" for a mistyped flag (`--tempreature`): argparse
    before Python 3.12 names the flag it does not know and nothing more."""
    try:
        return parse_argstring(magic, line)
    except UsageError as exc:
        import difflib

        text = str(exc)
        if "unrecognized arguments:" not in text:
            raise
        flags = [s for a in magic.parser._actions for s in a.option_strings if s.startswith("--")]
        unknown = [w for w in text.split("unrecognized arguments:", 1)[1].split()
                   if w.startswith("-")]
        hints = []
        for word in unknown:
            near = difflib.get_close_matches(word.split("=", 1)[0], flags, n=2, cutoff=0.7)
            if near:
                hints.append(f"{word}: did you mean {' or '.join(near)}?")
        if not hints:
            raise
        raise UsageError(f"{text}; {'; '.join(hints)}") from None


def expand_models(spec: str, *, base_url: str | None = None,
                  api_key: Any = None) -> list[str]:
    """'A,B' -> [A, B]; 'provider:*' -> every model that provider lists (at `base_url` with
    `api_key` when given, as `--base-url` / `--api-key` name them)."""
    out: list[str] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item.endswith(":*"):
            from ..core.api import models

            out += [m.id for m in models(item[:-2], base_url=base_url, api_key=api_key)]
        else:
            out.append(item)
    return out
