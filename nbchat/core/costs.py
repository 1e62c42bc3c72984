"""Prices, cost estimates, the `max_cost` guard and the usage ledger of this process.

Prices are per million tokens in US dollars, each with the date it was read and its source
(`PRICES`). A model not in the table has an unknown price: its cost shows as "?" and
`max_cost` cannot limit it (a warning says so once per model). Models that run on the user's
own machine or server (llama.cpp in process, a self-hosted Cog model) cost nothing per token.

`max_cost` (USD; an option of every entry point, `%config ChatMagics.max_cost`) refuses a
request before anything is sent when its estimate, plus what its thread (`Conversation`,
`%%chat --thread`, a panel) already spent, would exceed it. The estimate: input tokens as
characters / 4 plus 4 per message and `IMAGE_TOKENS` per image (no tokenizer is shipped for
hosted models), output tokens as `max_tokens`, or `DEFAULT_OUTPUT_TOKENS` when it is not set.
"""

from __future__ import annotations

import math
import threading
import warnings
from dataclasses import dataclass, field

from .errors import CostLimit
from .types import Reply, Request, Usage

#: output tokens assumed by the estimate when `max_tokens` is not set
DEFAULT_OUTPUT_TOKENS = 4096
#: input tokens assumed per image (OpenAI counts 85 to about 1,100 for one image)
IMAGE_TOKENS = 1000


@dataclass(frozen=True)
class Price:
    """A model's price: USD per million `input` and per million `output` tokens, the `date`
    it was read (YYYY-MM-DD) and its `source` (a vendor pricing page, or why it is free).
    """

    input: float  # USD per million input tokens
    output: float  # USD per million output tokens
    date: str  # when it was read, YYYY-MM-DD
    source: str  # where it was read


_OPENAI = "https://platform.openai.com/docs/pricing"
_SELF = "runs on your own machine or server: no per-token charge"

#: model id (or "provider:*" for every model of a provider) -> price
PRICES: dict[str, Price] = {
    "llamacpp:*": Price(0.0, 0.0, "2026-11-29", _SELF),
    "cog:*": Price(0.0, 0.0, "2026-11-29", _SELF),
    "openai:gpt-4o-mini": Price(0.15, 0.60, "2026-11-29", _OPENAI),
    "openai:gpt-4o": Price(2.50, 10.00, "2026-11-29", _OPENAI),
    "cerebras:gpt-oss-120b": Price(
        0.35, 0.75, "2026-11-29", "https://inference-docs.cerebras.ai/models/openai-oss"),
    "cerebras:qwen-3-32b": Price(
        0.40, 0.80, "2026-11-29", "https://inference-docs.cerebras.ai/models/qwen-3-32b"),
}


def price_of(model: str) -> Price | None:
    """The price of a model (`provider:model`), or None when unknown."""
    found = PRICES.get(model)
    if found is None and ":" in model:
        found = PRICES.get(model.split(":", 1)[0] + ":*")
    return found


def cost_of(model: str, usage: Usage) -> float | None:
    """USD for the tokens used (unknown counts as 0), or None when the price is unknown."""
    price = price_of(model)
    if price is None:
        return None
    return ((usage.input_tokens or 0) * price.input
            + (usage.output_tokens or 0) * price.output) / 1e6


@dataclass(frozen=True)
class Estimate:
    """A request's estimated size before it is sent: `input_tokens` (characters / 4, plus 4 per
    message and `IMAGE_TOKENS` per image), `output_tokens` (`max_tokens` or
    `DEFAULT_OUTPUT_TOKENS`), and `cost` in USD (None when the price is unknown).
    """

    input_tokens: int
    output_tokens: int
    cost: float | None  # USD; None when the price is unknown


def estimate(model: str, request: Request) -> Estimate:
    """An upper-bound style estimate of a request's cost, before it is sent (see the module)."""
    chars = sum(len(m.text) for m in request.messages)
    images = sum(len(m.images) for m in request.messages)
    tokens_in = math.ceil(chars / 4) + 4 * len(request.messages) + IMAGE_TOKENS * images
    tokens_out = request.options.max_tokens or DEFAULT_OUTPUT_TOKENS
    return Estimate(tokens_in, tokens_out, cost_of(model, Usage(tokens_in, tokens_out)))


_unpriced_warned: set[str] = set()


def check_budget(model: str, request: Request, max_cost: float | None, spent: float = 0.0
                 ) -> None:
    """Raise CostLimit when `spent` plus the request's estimate would exceed `max_cost`."""
    if max_cost is None:
        return
    est = estimate(model, request)
    if est.cost is None:
        if model not in _unpriced_warned:
            _unpriced_warned.add(model)
            warnings.warn(f"nbchat: the price of {model} is unknown, so max_cost cannot limit "
                          "it; the request is sent", stacklevel=3)
        return
    if spent + est.cost <= max_cost:
        return
    price = price_of(model)
    assert price is not None
    thread = f" plus ${spent:.4f} this thread already spent" if spent else ""
    assumed = "" if request.options.max_tokens else " (max_tokens not set)"
    raise CostLimit(
        f"the estimated cost of this request, ${est.cost:.4f}{thread}, exceeds "
        f"max_cost=${max_cost:g}: about {est.input_tokens} input and up to {est.output_tokens}"
        f" output tokens{assumed} on {model} at ${price.input:g} / ${price.output:g} per "
        "million. Lower max_tokens, shorten the prompt or raise max_cost."
    )


def spent(replies: list[Reply]) -> float:
    """What a thread's live replies cost (replayed ones cost nothing; unknown prices count 0)."""
    return sum(cost_of(r.model, r.usage) or 0.0 for r in replies if not r.replayed)


# ---- the ledger of this process -----------------------------------------------------------------


@dataclass
class ModelUsage:
    """One model's row of the ledger: `requests` sent to the provider, `replayed` answers from
    the log, and the `input_tokens` / `output_tokens` of the sent ones (unknown counts as 0).
    """

    requests: int = 0  # sent to the provider
    replayed: int = 0  # answered from the log
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class Ledger:
    """Per model: requests, replays and tokens of this kernel session (thread-safe)."""

    models: dict[str, ModelUsage] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, reply: Reply) -> None:
        """Count a finished reply under its model: a replayed one as a replay only, a live one as a
        request with its tokens.
        """
        with self._lock:
            row = self.models.setdefault(reply.model, ModelUsage())
            if reply.replayed:
                row.replayed += 1
                return
            row.requests += 1
            row.input_tokens += reply.usage.input_tokens or 0
            row.output_tokens += reply.usage.output_tokens or 0

    def rows(self) -> list[tuple[str, ModelUsage]]:
        """(model id, a copy of its `ModelUsage`) per model, sorted by model id."""
        with self._lock:
            return sorted(((m, ModelUsage(**vars(u))) for m, u in self.models.items()),
                          key=lambda row: row[0])

    def clear(self) -> None:
        """Forget every row."""
        with self._lock:
            self.models.clear()


#: this process's ledger; every finished turn is added (nbchat.core.turn)
ledger = Ledger()
