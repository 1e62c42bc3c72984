"""How long nbchat waits for a provider, and what it is waiting for.

Limits (`Timeouts`, in seconds; None means no limit):

    connect     opening the connection (TCP and TLS); a failure is retried like a refusal
    first_byte  from sending a request to the start of its answer (status line and headers);
                not retried: a server that took the request and went quiet is reported
    idle        the longest silence inside a reply once it streams: no text, reasoning, tool
                call or image for this long ends it (keep-alive comments do not count)
    total       the whole turn, retries and waits included

Each limit comes from the first of these that sets it: the call (`timeout=`: a number is the
total, or a dict / `Timeouts` of any of the four), the provider
(`nbchat.core.http.configure(provider="cerebras", idle=...)`), `configure()` for all providers,
the environment (`NBCHAT_CONNECT_TIMEOUT`, `NBCHAT_FIRST_BYTE_TIMEOUT`, `NBCHAT_IDLE_TIMEOUT`,
`NBCHAT_TOTAL_TIMEOUT`; `NBCHAT_READ_TIMEOUT` sets first_byte and idle), then `DEFAULTS`.
In a notebook, `%config ChatMagics.idle_timeout = 30` (and the other three) set them for `%%chat`.

A `Waits` tracker belongs to one turn: `Turn` puts it in a context variable while the provider
runs. The HTTP layer and the providers say what they wait for through the module functions
(`waiting`, `receiving`, `loading`, `polling`, `retry_wait`), which do nothing outside a turn;
the turn shows `status()` to the user ("waiting for cerebras, 12 s", "rate limited (HTTP 429),
retrying in 20 s") and ends a wait that `overdue()` says ran past the idle or total limit.
"""

from __future__ import annotations

import contextvars
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from .errors import BadOption, TimedOut

__all__ = [
    "DEFAULTS",
    "STATUS_AFTER",
    "Timeouts",
    "Waits",
    "configure",
    "configured",
    "current",
    "fmt",
    "limits",
    "loading",
    "parse_timeout",
    "polling",
    "receiving",
    "retrying",
    "waiting",
]

#: seconds of silence before a status line appears
STATUS_AFTER = 1.0

LIMITS = ("connect", "first_byte", "idle", "total")


@dataclass(frozen=True)
class Timeouts:
    """Limits in seconds; None is no limit (see the module docstring for what each one bounds)."""

    connect: float | None = None
    first_byte: float | None = None
    idle: float | None = None
    total: float | None = None

    def over(self, base: Timeouts) -> Timeouts:
        """These limits where set, `base`'s elsewhere."""
        return Timeouts(
            base.connect if self.connect is None else self.connect,
            base.first_byte if self.first_byte is None else self.first_byte,
            base.idle if self.idle is None else self.idle,
            base.total if self.total is None else self.total,
        )

    def set_fields(self) -> dict[str, float]:
        """Name -> seconds of each limit that is set (None ones left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}


DEFAULTS = Timeouts(connect=10.0, first_byte=60.0, idle=60.0, total=600.0)

_ENV = {"connect": ("NBCHAT_CONNECT_TIMEOUT",),
        "first_byte": ("NBCHAT_FIRST_BYTE_TIMEOUT", "NBCHAT_READ_TIMEOUT"),
        "idle": ("NBCHAT_IDLE_TIMEOUT", "NBCHAT_READ_TIMEOUT"),
        "total": ("NBCHAT_TOTAL_TIMEOUT",)}


def from_environment() -> Timeouts:
    """The limits the environment sets: `NBCHAT_CONNECT_TIMEOUT`, `NBCHAT_FIRST_BYTE_TIMEOUT`,
    `NBCHAT_IDLE_TIMEOUT`, `NBCHAT_TOTAL_TIMEOUT` (seconds; `NBCHAT_READ_TIMEOUT` for first_byte and
    idle when those are unset). A value that is not a positive number is ignored.
    """
    values: dict[str, float] = {}
    for name, variables in _ENV.items():
        for var in variables:
            raw = os.environ.get(var)
            if raw:
                try:
                    values[name] = _seconds(name, float(raw))
                    break
                except (ValueError, BadOption):
                    continue  # a bad variable is ignored, as before
    return Timeouts(**values)


_global = Timeouts()
_per_provider: dict[str, Timeouts] = {}


def configure(limits: Timeouts, provider: str | None = None) -> None:
    """Set limits for every provider, or for one (what `nbchat.core.http.configure` calls)."""
    global _global
    if provider is None:
        _global = limits.over(_global)
    else:
        _per_provider[provider] = limits.over(_per_provider.get(provider, Timeouts()))


def reset() -> None:
    """Forget every configured limit (back to the environment and DEFAULTS)."""
    global _global
    _global = Timeouts()
    _per_provider.clear()


def configured(provider: str | None = None) -> Timeouts:
    """The limits for `provider` (or all) before any per-call `timeout=`."""
    base = _global.over(from_environment().over(DEFAULTS))
    if provider is not None and provider in _per_provider:
        return _per_provider[provider].over(base)
    return base


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise BadOption("timeout", f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


def parse_timeout(value: Any) -> Timeouts:
    """The `timeout=` option: seconds for the whole turn, or a dict / Timeouts of limits."""
    if isinstance(value, Timeouts):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Timeouts(total=_seconds("timeout", value))
    if isinstance(value, Mapping):
        unknown = set(value) - set(LIMITS)
        if unknown:
            raise BadOption("timeout", f"unknown limit {sorted(unknown)[0]!r}; "
                                       f"use {', '.join(LIMITS)}")
        return Timeouts(**{k: None if v is None else _seconds(k, v) for k, v in value.items()})
    raise BadOption("timeout", "expected seconds (the whole turn) or a dict of "
                               "connect / first_byte / idle / total seconds")


def fmt(seconds: float) -> str:
    """Elapsed or remaining time, in whole seconds ("12 s", "2 min 5 s")."""
    s = max(0, int(seconds + 0.5))
    return f"{s} s" if s < 120 else f"{s // 60} min {s % 60} s"


def _limit(seconds: float) -> str:
    return f"{seconds:g} s"


# phases: what the provider is doing; "idle" deadlines apply in START and STREAM only
START, WAIT, RETRY, POLL, LOAD, STREAM = "start", "wait", "retry", "poll", "load", "stream"


class Waits:
    """What one turn waits for, since when, and until when it may (see the module docstring)."""

    def __init__(self, provider: str, limits: Timeouts,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.provider = provider
        self.limits = limits
        self.clock = clock
        self.started = clock()
        self.phase = START
        self.what = ""
        self.since = self.started  # when the phase began
        self.until: float | None = None  # a retry's end
        self.last_event: float | None = None
        self.events = 0
        self.reasoning = 0  # reasoning events before the first text
        #: called when the phase changes to one worth showing at once (a retry's countdown)
        self.on_change: Callable[[], None] | None = None

    # ---- reported by the HTTP layer and providers -----------------------------------------

    def set_phase(self, phase: str, what: str = "", until: float | None = None) -> None:
        """Say what the provider does now (`start`, `wait`, `retry`, `poll`, `load` or `stream`),
        what it waits for, and for a retry until when (clock time); a retry is shown at once.
        """
        self.phase, self.what, self.until = phase, what, until
        self.since = self.clock()
        if phase == RETRY and self.on_change is not None:
            self.on_change()

    def event(self, reasoning: bool = False) -> None:
        """A piece of the reply arrived (called by the turn)."""
        now = self.clock()
        if self.phase != STREAM:
            self.phase, self.what, self.until, self.since = STREAM, "", None, now
        self.last_event = now
        self.events += 1
        if reasoning:
            self.reasoning += 1

    # ---- read by the turn ---------------------------------------------------------------

    def remaining(self) -> float | None:
        """Seconds left of the total budget (None: no budget)."""
        if self.limits.total is None:
            return None
        return self.started + self.limits.total - self.clock()

    def deadline(self) -> float | None:
        """When the current wait runs out (idle or total), on the clock's scale."""
        out = None if self.limits.total is None else self.started + self.limits.total
        if self.phase in (START, STREAM) and self.limits.idle is not None:
            idle = max(self.since, self.last_event or self.since) + self.limits.idle
            out = idle if out is None else min(out, idle)
        return out

    def overdue(self) -> TimedOut | None:
        """The error for a wait that ran past its deadline, or None."""
        now = self.clock()
        total = self.limits.total
        if total is not None and now >= self.started + total:
            return TimedOut(
                f"{self.provider}: stopped after {_limit(total)}, the total time allowed for one "
                "reply (timeout=...); what arrived is kept. Allow longer with "
                f"timeout={{'total': {2 * total:g}}} or %config ChatMagics.total_timeout",
                limit="total", seconds=total)
        idle = self.limits.idle
        dl = self.deadline()
        if idle is not None and dl is not None and now >= dl:
            if self.events:
                got = " after part of the reply; what arrived is kept"
            elif self.phase == STREAM:
                got = " after it answered (keep-alive pings do not count)"
            else:
                got = ""
            return TimedOut(
                f"{self.provider}: nothing arrived for {_limit(idle)} (idle timeout){got}. "
                f"Try again, or allow longer silences with timeout={{'idle': {2 * idle:g}}} "
                "or %config ChatMagics.idle_timeout",
                limit="idle", seconds=idle)
        return None

    def status(self) -> str:
        """One line for the user: what is awaited and for how long."""
        now = self.clock()
        p = self.provider
        what = f" ({self.what})" if self.what else ""
        if self.phase == RETRY:
            left = (self.until or now) - now
            return f"{self.what or p + ' failed'}, retrying in {fmt(left)}"
        if self.phase == POLL:
            return f"waiting for {p}{what}, {fmt(now - self.started)}"
        if self.phase == LOAD:
            return f"{self.what or 'loading the model'}, {fmt(now - self.since)}"
        if self.phase == STREAM and self.events:
            if self.reasoning == self.events:
                return f"{p} is reasoning, {fmt(now - self.started)}"
            return f"waiting for more from {p}, {fmt(now - (self.last_event or now))}"
        if self.phase == STREAM:
            return f"waiting for the first token from {p}, {fmt(now - self.started)}"
        return f"waiting for {p}{what}, {fmt(now - self.started)}"

    def quiet_for(self) -> float:
        """Seconds since the user last saw progress (a piece of the reply, or the start)."""
        return self.clock() - (self.last_event or self.started)


_current: contextvars.ContextVar[Waits | None] = contextvars.ContextVar(
    "nbchat_waits", default=None)


def current() -> Waits | None:
    """The running turn's tracker, or None outside a turn (model listing, tests)."""
    return _current.get()


def activate(waits: Waits) -> contextvars.Token[Waits | None]:
    """Make `waits` the current turn's tracker in this context (the provider's task); the module
    functions report to it. Returns the `contextvars` token.
    """
    return _current.set(waits)


def deactivate(token: contextvars.Token[Waits | None]) -> None:
    """Undo `activate` (its token) in the context that made it."""
    try:
        _current.reset(token)
    except ValueError:  # another context (a generator closed elsewhere): just let go of it
        _current.set(None)


def waiting(what: str = "") -> None:
    """A request was sent; its answer has not begun."""
    w = _current.get()
    if w is not None:
        w.set_phase(WAIT, what)


def receiving() -> None:
    """The answer began (headers are in): from now on silences count as idle."""
    w = _current.get()
    if w is not None and w.phase != STREAM:
        w.set_phase(STREAM)


def loading(what: str = "loading the model") -> None:
    """The provider is loading something (a local model): no idle limit applies meanwhile, the
    total one still does.
    """
    w = _current.get()
    if w is not None:
        w.set_phase(LOAD, what)


def polling(what: str) -> None:
    """Waiting on a job the provider runs (a queued request, a prediction that starts)."""
    w = _current.get()
    if w is not None:
        w.set_phase(POLL, what)


def retrying(reason: str, delay: float) -> None:
    """The HTTP layer waits `delay` seconds before a retry, for `reason` ("rate limited (HTTP
    429)"); the status line counts down to it.
    """
    w = _current.get()
    if w is not None:
        w.set_phase(RETRY, reason, until=w.clock() + delay)


def limits(provider: str | None = None) -> Timeouts:
    """The limits in force: the running turn's, else the configured ones for `provider`."""
    w = _current.get()
    if w is not None:
        return w.limits
    return configured(provider)
