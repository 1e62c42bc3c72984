"""llama.cpp's context kept between calls: the live KV cache, plus saved states per conversation.

Evaluating a prompt is most of the wait in a conversation: turn 8 re-reads turns 1 to 7. The
KV cache of the previous call already holds them, so a call evaluates only what is new after the
longest reusable prefix. Two conversations on one model (two `%%chat` threads, a panel and a
cell) would evict each other on every turn, so before the live context is overwritten by another
conversation its sequence state (`llama_state_seq_get_data`: the KV cells of sequence 0, about
23 kB a token for SmolLM2-135M) is saved, and restored when that conversation comes back.
At most `max_states` states (default 8) and `max_bytes` (default 1 GiB) are kept per loaded
model, least recently used evicted first, and fewer when the machine's available memory runs
short.

Repeatability. llama.cpp's numbers depend on how tokens were batched: a prompt evaluated in one
batch and the same prompt evaluated as a cached prefix plus a suffix can differ in the last bits,
enough to flip a temperature-0 token now and then. So a prefix is reused only up to a position
where the cached evaluation started a batch (or generated a token), never in the middle of one:
- a call continuing its own conversation reuses everything up to the new text;
- the same prompt again re-evaluates its last message the way the first call did, and so gives
  the same text;
- an unrelated prompt that merely shares a few tokens reuses nothing.
A reply therefore depends on its conversation's own earlier turns, not on other calls in between,
and the same sequence of calls gives the same text. What changed from evaluating every prompt
afresh: the text of turn N of a conversation may differ in rare tokens from the text the same
prompt would get as a fresh one-shot call, and a conversation whose state was evicted is
evaluated afresh on its next turn.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_STATES = 8
DEFAULT_BYTES = 1 << 30
#: keep this much of the machine's memory available when saving a state (bytes)
MEMORY_RESERVE = 512 << 20
#: the end of the segment of generated tokens, which grows as tokens are generated
OPEN = 1 << 62


@dataclass(frozen=True)
class Segment:
    """Positions [start, end) evaluated in batches of `step` tokens starting at `start`."""

    start: int
    end: int
    step: int


@dataclass
class State:
    """A context's tokens, how they were evaluated, and (when saved) its KV cells."""

    tokens: np.ndarray
    prompt_len: int  # tokens of the prompt that produced it; the rest were generated
    segments: list[Segment] = field(default_factory=list)
    data: Any = None  # ctypes byte array from llama_state_seq_get_data
    size: int = 0


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading tokens two token arrays share."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


def reuse_point(state: State, limit: int) -> int:
    """The largest position <= limit where reusing `state` keeps the batches it was made with:
    the start of one of its batches, or any position among its generated tokens."""
    best = 0
    for seg in state.segments:
        if seg.start > limit:
            break
        top = min(limit, seg.end)
        best = max(best, seg.start + (top - seg.start) // seg.step * seg.step)
    return best


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes, or None where there is no such file."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class PromptCache:
    """The live context of one `Llama` and its saved conversation states.

    `prepare(llm, tokens)` runs before each generation (under the model's lock): it saves the
    live context if another conversation is about to overwrite it, restores the best saved
    state, and cuts the live context back to the reuse point, so that `Llama.generate`'s own
    prefix match evaluates exactly the rest.
    """

    def __init__(self, max_states: int = DEFAULT_STATES, max_bytes: int = DEFAULT_BYTES) -> None:
        self.max_states = max_states
        self.max_bytes = max_bytes
        self.saved: OrderedDict[int, State] = OrderedDict()
        self._ids = 0
        self.live: State | None = None
        self.saves = 0  # states saved and restored, for tests and benchmarks
        self.restores = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the saved states (llama.cpp state sizes)."""
        return sum(s.size for s in self.saved.values())

    def clear(self, llm: Any) -> None:
        """Drop every saved state and reset the model's live context."""
        self.saved.clear()
        self.live = None
        llm.reset()

    # ---- the hook -------------------------------------------------------------------------

    def prepare(self, llm: Any, prompt: list[int]) -> None:
        """Before a generation: restore or keep the state sharing the longest usable prefix with
        `prompt` (token ids), so llama.cpp evaluates only the rest; the live one is saved first."""
        tokens = np.asarray(prompt, dtype=np.intc)
        limit = len(tokens) - 1  # at least one token is evaluated: its logits pick the next
        live = self._live(llm)
        live_lcp = common_prefix(live.tokens, tokens)
        best_r = reuse_point(live, min(live_lcp, limit))
        best_key: int | None = None
        for key, state in self.saved.items():
            r = reuse_point(state, min(common_prefix(state.tokens, tokens), limit))
            if r > best_r:
                best_r, best_key = r, key
        restored = self.saved.pop(best_key) if best_key is not None else None
        lost = restored is not None or best_r < len(live.tokens)
        if lost and live_lcp < live.prompt_len:  # another conversation takes over: keep this one
            self._save(llm, live)
        if restored is not None:
            self._restore(llm, restored)
            if common_prefix(restored.tokens, tokens) < restored.prompt_len and self.max_states:
                # a branch off it: keep it for its own conversation (else it lives on as live)
                self._make_room(0)
                self.saved[best_key] = restored  # type: ignore[index]
            live = restored
        kept = [Segment(s.start, min(s.end, best_r), s.step) for s in live.segments
                if s.start < best_r]
        step = min(llm.n_batch, llm.context_params.n_ubatch)
        kept += [Segment(best_r, len(tokens), step), Segment(len(tokens), OPEN, 1)]
        self.live = State(tokens, len(tokens), kept)
        if best_r == 0:
            llm.reset()
        else:
            llm.n_tokens = best_r
            llm._ctx.kv_cache_seq_rm(-1, best_r, -1)
            llm._requires_eval = True

    def _live(self, llm: Any) -> State:
        """The live context as we left it, or one nobody reuses if something else changed it."""
        n = llm.n_tokens
        tokens = np.array(llm.input_ids[:n], dtype=np.intc)
        live = self.live
        if live is not None and n >= live.prompt_len and not (
            tokens[: live.prompt_len] != live.tokens
        ).any():
            return State(tokens, live.prompt_len, live.segments)
        return State(tokens, n, [Segment(0, n, n + 1)])  # reusable from position 0 only

    # ---- saved states -----------------------------------------------------------------------

    def _save(self, llm: Any, live: State) -> None:
        import llama_cpp

        n = len(live.tokens)
        if self.max_states <= 0 or reuse_point(live, n) == 0:
            return  # nothing in it could be reused
        for key, state in list(self.saved.items()):  # a state that this one extends adds nothing
            m = len(state.tokens)
            if m <= n and not (state.tokens != live.tokens[:m]).any():
                del self.saved[key]
        ctx = llm._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        if size > self.max_bytes:
            return
        self._make_room(size)
        avail = available_memory()
        if avail is not None and avail - size < MEMORY_RESERVE:
            return
        data = (ctypes.c_uint8 * size)()
        if llama_cpp.llama_state_seq_get_data(ctx, data, size, 0) != size:
            return
        self._ids += 1
        self.saved[self._ids] = State(live.tokens, live.prompt_len, live.segments, data, size)
        self.saves += 1

    def _make_room(self, size: int) -> None:
        while self.saved and (
            len(self.saved) >= self.max_states or self.nbytes + size > self.max_bytes
        ):
            self.saved.popitem(last=False)
        avail = available_memory()
        while self.saved and avail is not None and avail - size < MEMORY_RESERVE:
            freed = self.saved.popitem(last=False)[1].size
            avail += freed

    def _restore(self, llm: Any, state: State) -> None:
        import llama_cpp

        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        if llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, state.data, state.size, 0) == 0:
            raise RuntimeError("llama.cpp refused a saved context state")
        n = len(state.tokens)
        llm.input_ids[:n] = state.tokens
        llm.n_tokens = n
        llm._requires_eval = True
        self.restores += 1


def caching_llama_class() -> type:
    """`llama_cpp.Llama` with the prompt cache (and an optional prompt-length limit) hooked
    into `generate`, which every completion path calls with the exact prompt tokens."""
    global _CLASS
    if _CLASS is None:
        from llama_cpp import Llama

        class CachingLlama(Llama):
            prompt_cache: PromptCache | None = None
            #: refuse prompts longer than this many tokens (history_window in tokens)
            token_limit: int | None = None
            last_prompt_tokens: int | None = None

            def generate(self, tokens: Any, *args: Any, **kwargs: Any) -> Any:
                tokens = list(tokens)
                if self.token_limit is not None and len(tokens) > self.token_limit:
                    raise PromptTooLong(len(tokens), self.token_limit)
                self.last_prompt_tokens = len(tokens)
                if self.prompt_cache is not None and kwargs.get("reset", True):
                    self.prompt_cache.prepare(self, tokens)
                return super().generate(tokens, *args, **kwargs)

        _CLASS = CachingLlama
    return _CLASS


_CLASS: type | None = None


class PromptTooLong(Exception):
    """A prompt of `n_tokens` tokens that does not fit the context (`limit` tokens)."""

    def __init__(self, n_tokens: int, limit: int) -> None:
        super().__init__(f"{n_tokens} prompt tokens, more than {limit}")
        self.n_tokens = n_tokens
        self.limit = limit


