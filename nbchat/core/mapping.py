"""`nbchat.map`: one prompt template over every row of a table, many requests at a time.

    out = nbchat.map("Classify this review: {review}", df, model="cerebras:llama3.1-8b",
                     concurrency=16, column="label")

Rows are a pandas or polars DataFrame, or any iterable (list, tuple, generator, iterator,
range) of dicts, strings or numbers, read once. `{name}` (or `{name:spec}`) in the template is
filled from the row's column `name`: any column name, spaces included (`{first name}`), an int
one as `{0}`; strings or numbers fill `{text}`, or, if the template has no field, each follows
the template after a blank line. Other braces (JSON or code in the template) stay as typed; a
braced name that names no column raises `BadOption` (with the closest column) before anything
is sent, and so does a dict row without a key the template uses (naming the row). `{{name}}`
(a doubled opening brace) is sent as typed. A missing value (None, NaN, NaT, pandas' NA) is
sent as empty text, with one warning naming the columns that had one.

What comes back is aligned with the rows:
- with `column=` and a DataFrame: a new DataFrame (the input is not changed) with the replies'
  text in `column` (or the parsed objects with `schema=`: with a dataclass or pydantic class,
  a polars Object column of them, as pandas keeps them), None where a row failed, and, when
  some failed, their errors in `<column>_error`; a frame that already has `column` (a map run
  again on its own result) gets it replaced in the result, with a warning, and an earlier
  `<column>_error` goes when no row failed this time; the frame passed in is never changed;
- otherwise a `MapResult`, a list with one entry per row: the `Reply` (its `.error` set when the
  row failed; None for a row an interrupt left unanswered), or with `schema=` the parsed
  object (None when the row failed).
A `MapResult` also has `errors` ({row index: exception}), `replies`, `reused` and
`interrupted`.

Progress: a tqdm bar (tqdm.auto: the notebook's widget bar in Jupyter, text elsewhere) with
done, failed, reused and the ETA, and "rate limited, retrying in N s" while the batch waits out
a 429 (the limiter's pause, or a request's own retry in the HTTP layer); `progress=False` turns
it off.

Failures: a failing row keeps its error and the others go on. A 429 (`RateLimited`, after the
HTTP layer's own retries) does not fail the row: the whole batch slows down, through one
limiter shared by all rows (`AdaptiveLimiter`: every request waits out the server's
Retry-After, or a backoff doubling from 1 s, and the concurrency halves, then grows back by one
after each run of successes), and the row is sent again, up to `RATE_LIMIT_TRIES` times.
`timeout=` (its total) bounds each row's whole time, from when a worker takes it, 429 waits and
tries included (each request gets what is left as its own total): a row still rate limited
when it runs out fails with `RateLimited` (or `TimedOut` mid-request) and the others go on.
Without `timeout=`, the configured total (600 s by default) counts from the row's first send.
Interrupting (Ctrl-C, the notebook's Stop) cancels the requests in flight and returns what
finished (`interrupted=True`; the rows not done carry `Interrupted`).

Resuming: each reply goes into the local reply log (nbchat.core.log, `NBCHAT_LOG`). Run the
same call again and a row whose request (model, endpoint, messages, options: the replay
hash of nbchat.core.replay) already has a finished reply in the log is answered from it, not
sent: after an interrupt or a few failed rows, the rerun sends only what is missing. Rows
answered so count as `reused`. `resume=False` sends every row; with `NBCHAT_LOG=off` nothing
is logged, so nothing can be reused.

A serving cluster: the same call drives any OpenAI-compatible server through `base_url`, e.g.
`model="openai:meta-llama/Llama-3.1-8B-Instruct", base_url="http://vllm-head:8000/v1"`. Set
`concurrency` to what the cluster runs at once, so its batches stay full without queueing
too long: vLLM, the engine's `--max-num-seqs` (256 by default) times its replicas behind the
router; NVIDIA NIM (vLLM or TensorRT-LLM inside), the same per replica; Ray Serve, the
deployment's `max_ongoing_requests` times its replicas. Beyond that, requests only wait in
the server's queue; a 429 from its gateway slows the batch as above.

Slots and workers: `concurrency` bounds the requests on the wire. A row takes one of the
`AdaptiveLimiter`'s slots when its request is sent and gives it back when its streamed answer
has been read (`nbchat.core.http.gated`; a provider whose requests do not all go through
`nbchat.core.http`, e.g. the local model, holds it for the whole turn), and `concurrency // 4`
workers more than slots build the next rows' requests and handle finished replies meanwhile,
so the slots stay busy. A freed slot goes to whichever worker asks first; one that has waited
`STARVE` seconds goes before the others.

Connections: each worker sends its rows through a connection pool of its own
(`nbchat.core.http.own_pool`), so its connection stays open from one row to the next and a map
holds `concurrency + concurrency // 4` connections; they are closed when the map ends.
"""

from __future__ import annotations

import asyncio
import collections
import math
import re
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from numbers import Number
from typing import Any

from . import log as _log
from . import waits
from .conversation import Conversation
from .credentials import hide_key
from .errors import BadOption, NbchatError, RateLimited, UnknownOption, close_matches
from .http import gated, own_pool
from .loop import TurnLoop
from .options import OPTION_NAMES, OPTIONS, Settings, parse_settings, schema_of
from .types import Reply
from .waits import Timeouts

#: times one row is sent when its answers are 429s (the limiter waits between the tries)
RATE_LIMIT_TRIES = 8
#: seconds a row may wait for a slot while others take the freed ones before it goes first
STARVE = 1.0
#: the first backoff (seconds) after a 429 without Retry-After; it doubles up to MAX_BACKOFF
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 60.0

# a braced group not opened by a doubled brace: `{{name}}` stays as typed, `{"k": {name}}` is
# filled (the outer braces hold braces, so they are no group)
_BRACED = re.compile(r"(?<!\{)\{([^{}]*)\}")
# what a field name looks like (a group that does not, e.g. JSON or code, is sent as typed)
_NAMELIKE = re.compile(r"\w[\w .\-]*")


class Interrupted(NbchatError):
    """The map was interrupted before this row was answered."""


class AdaptiveLimiter:
    """At most `limit` requests at once (between 1 and `maximum`), shared by the rows of one map.

    `throttled(retry_after)` after a 429 halves the limit and makes every new request wait
    until the pause is over (Retry-After seconds, else a doubling backoff); `succeeded()` grows
    the limit back by one after `limit` successes in a row.

    A free slot goes to whoever asks first, not to the longest waiting caller: handing it to a
    caller that is asleep keeps it idle until the event loop gets round to that caller, which
    cost a map a fifth of its speed (more workers than slots, see `_spare`). So that no caller
    waits for ever, one that has waited `STARVE` seconds is served before anyone else."""

    def __init__(self, maximum: int) -> None:
        self.maximum = self.limit = maximum
        self.active = 0
        self.resume_at = 0.0  # time.monotonic() before which no request starts
        self.throttles = 0
        self._streak = 0
        self._backoff = FIRST_BACKOFF
        self._changed = asyncio.Condition()
        self._waiting: collections.deque[_Waiter] = collections.deque()  # oldest first

    async def acquire(self, deadline: float | None = None) -> bool:
        """Wait for a free slot and for any pause to end: True, with the slot taken. False
        (no slot) when that cannot happen before `deadline` (time.monotonic(); None: wait as
        long as it takes)."""
        async with self._changed:
            me = _Waiter(time.monotonic())
            self._waiting.append(me)
            try:
                while True:
                    now = time.monotonic()
                    pause = self.resume_at - now
                    oldest = self._waiting[0]
                    turn = oldest is me or now - oldest.since < STARVE  # nobody starving first
                    if pause <= 0 and self.active < self.limit and turn:
                        self.active += 1
                        return True
                    if deadline is not None and (now >= deadline or self.resume_at >= deadline):
                        return False  # the pause outlasts the caller's time: no use waiting
                    wake = pause if pause > 0 else None
                    if deadline is not None:
                        wake = deadline - now if wake is None else min(wake, deadline - now)
                    if oldest is me and now - me.since < STARVE:  # look again once starving
                        left = STARVE - (now - me.since)
                        wake = left if wake is None else min(wake, left)
                    try:
                        await asyncio.wait_for(self._changed.wait(), wake)
                    except asyncio.TimeoutError:
                        pass
            finally:
                self._waiting.remove(me)
                if self._waiting and oldest is me:
                    self._changed.notify_all()  # the next oldest may be starving already

    async def wait_pause(self, deadline: float | None = None) -> bool:
        """Wait for any pause to end, taking no slot: True; False when it outlasts `deadline`
        (time.monotonic(); None: wait as long as it takes)."""
        while True:
            pause = self.resume_at - time.monotonic()
            if pause <= 0:
                return True
            if deadline is not None and self.resume_at >= deadline:
                return False
            await asyncio.sleep(pause)

    async def release(self) -> None:
        """Give the slot back (the request ended, whatever its outcome)."""
        async with self._changed:
            self.active -= 1
            self._changed.notify_all()

    async def succeeded(self) -> None:
        """A request was answered: after `limit` of them in a row, allow one more at once."""
        async with self._changed:
            self._streak += 1
            self._backoff = FIRST_BACKOFF
            if self._streak >= self.limit and self.limit < self.maximum:
                self.limit += 1
                self._streak = 0
                self._changed.notify_all()

    async def throttled(self, retry_after: float | None) -> None:
        """A 429: halve the limit and pause every new request for `retry_after` seconds (the
        server's Retry-After; None: the backoff, doubling from `FIRST_BACKOFF`)."""
        async with self._changed:
            self.throttles += 1
            self._streak = 0
            self.limit = max(1, self.limit // 2)
            wait = retry_after if retry_after is not None else self._backoff
            self._backoff = min(self._backoff * 2, MAX_BACKOFF)
            self.resume_at = max(self.resume_at, time.monotonic() + wait)
            self._changed.notify_all()


class _Waiter:
    """A caller waiting for a slot (compared by identity)."""

    __slots__ = ("since",)

    def __init__(self, since: float) -> None:
        self.since = since


class MapResult(list):
    """One entry per row, in row order (see the module docstring), and how the map went:
    `replies` (a `Reply` or None per row), `errors` ({row index: exception}), `reused` (rows
    answered from the log), `interrupted` and `throttles` (429s that slowed the batch)."""

    replies: list[Reply | None]
    errors: dict[int, BaseException]
    reused: int
    interrupted: bool
    throttles: int

    def __repr__(self) -> str:
        unsent = sum(isinstance(e, Interrupted) for e in self.errors.values())
        failed = len(self.errors) - unsent
        done = len(self) - len(self.errors)
        extra = f", {unsent} not sent (interrupted)" if self.interrupted else ""
        return (f"MapResult({done} done, {failed} failed, {self.reused} reused{extra})"
                f"\n{list.__repr__(self)}")


@dataclass
class _State:
    """What has finished so far (kept by the sync twin when the run is interrupted)."""

    n: int
    replies: list[Reply | None]
    errors: dict[int, BaseException]
    parsed: dict[int, Any] = field(default_factory=dict)  # with schema=: row -> object
    reused: int = 0
    throttles: int = 0


def rows_of(rows: Any) -> tuple[list[Mapping[Any, Any] | str | Number], str]:
    """The rows, read once, as dicts (or strings / numbers, which fill `{text}`) and the kind
    of table: "pandas", "polars" or "list" (any other iterable: a list, tuple, generator,
    iterator or range). Raises BadOption for anything else."""
    module = type(rows).__module__.split(".")[0]
    if module == "pandas" and type(rows).__name__ == "DataFrame":
        return list(rows.to_dict("records")), "pandas"
    if module == "polars" and type(rows).__name__ == "DataFrame":
        return list(rows.to_dicts()), "polars"
    if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Iterable):
        raise BadOption("rows", "expected a DataFrame (pandas or polars), a list of dicts or a "
                        f"list of strings, got {type(rows).__name__}")
    items = list(rows)  # the one read: a generator or iterator is used up here
    for i, r in enumerate(items):
        if not isinstance(r, (str, Mapping, Number)):
            raise BadOption("rows", f"row {i} is a {type(r).__name__}; expected dicts, strings "
                            "or numbers as rows")
    return items, "list"


@dataclass(frozen=True)
class _Field:
    """A `{name}` / `{name:spec}` of the template: `key` is the column it names, `raw` as typed."""

    key: Any
    spec: str
    raw: str


class Template:
    """A template read against the rows' columns (see the module docstring).

    A braced group `{...}` (not opened by a doubled brace) is a field when it names a column,
    whole or before a `:spec` (names with spaces, and int column names as `{0}`, included);
    when it does not, it is an error if it reads like a name (letters, digits, `_`, spaces,
    `.`, `-`; a spec without spaces), else text sent as typed (JSON, code). Raises BadOption
    for a field that names no column."""

    def __init__(self, template: str, columns: Iterable[Any]) -> None:
        self.template = template
        by_name: dict[str, Any] = {}
        for c in columns:
            by_name.setdefault(str(c), c)
            if isinstance(c, str):
                by_name[c] = c  # an exact str name wins over an int that prints the same
        self.columns = by_name
        self.parts: list[str | _Field] = []
        at = 0
        for m in _BRACED.finditer(template):
            f = self._field(m.group(1), m.group(0))
            if f is None:
                continue
            self.parts.append(template[at:m.start()])
            self.parts.append(f)
            at = m.end()
        self.parts.append(template[at:])
        self.fields = [p for p in self.parts if isinstance(p, _Field)]

    def _field(self, inner: str, raw: str) -> _Field | None:
        cols = self.columns
        for name, spec in ((inner, ""), *([inner.split(":", 1)] if ":" in inner else [])):
            for n in (name, name.strip()):
                if n in cols:
                    return _Field(cols[n], spec, raw)
        name, _, spec = inner.partition(":")
        if not _NAMELIKE.fullmatch(name.strip()) or re.search(r"\s", spec):
            return None  # JSON, code, prose in braces: sent as typed
        near = close_matches(name.strip(), list(cols))
        hint = f"; did you mean {{{near[0]}}}?" if near else ""
        shown = ", ".join(cols) or "none"
        raise BadOption("template", f"{raw} names no column (columns: {shown}){hint} Double the "
                        f"braces ({{{raw}}}) to send it as typed")

    def fill(self, row: Mapping[Any, Any], index: int, missing: set[str]) -> str:
        """The prompt for one row; a value that is None, NaN or NaT is sent as empty text (its
        column's name goes into `missing`). Raises BadOption naming the row and the key when
        the row lacks a column the template names."""
        out: list[str] = []
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
                continue
            try:
                value = row[p.key]
            except KeyError:
                raise BadOption("rows", f"row {index} has no {p.key!r}, which the template's "
                                f"{p.raw} needs (other rows have it); give every row that "
                                "key") from None
            if _missing(value):
                missing.add(str(p.key))
                continue
            try:
                out.append(format(value, p.spec))
            except (ValueError, TypeError) as exc:
                raise BadOption("template", f"{p.raw}, row {index}: {exc}") from None
        return "".join(out)


def prompts_of(template: str, items: list[Mapping[Any, Any] | str | Number],
               frame_columns: Iterable[Any] | None = None) -> list[str]:
    """One prompt per row (see the module docstring); warns once when missing values (None,
    NaN, NaT) were sent as empty text. Raises BadOption before anything is sent."""
    if not items and frame_columns is None:
        return []  # no rows, no columns to check the template against: nothing to send
    if frame_columns is not None:
        columns: list[Any] = list(frame_columns)
    else:
        seen: dict[Any, None] = {}
        for r in items:
            for k in (r if isinstance(r, Mapping) else ("text",)):
                seen.setdefault(k)
        columns = list(seen)
    tpl = Template(template, columns)
    if not tpl.fields and items and all(not isinstance(r, Mapping) for r in items):
        return [f"{template.rstrip()}\n\n{r}" for r in items]  # no field: the row follows
    missing: set[str] = set()
    prompts = [tpl.fill(r if isinstance(r, Mapping) else {"text": r}, i, missing)
               for i, r in enumerate(items)]
    if missing:
        warnings.warn(f"nbchat.map: missing values (None, NaN, NaT) in {', '.join(sorted(missing))}"
                      " were sent as empty text", stacklevel=4)
    return prompts


def fill(template: str, row: Mapping[Any, Any] | str) -> str:
    """The template filled from one row (a dict, or a string for `{text}`): `prompts_of` for a
    single row. Raises BadOption for a field that names no column."""
    return prompts_of(template, [row])[0]


def _missing(value: Any) -> bool:
    """None, NaN, NaT or pandas' NA."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    try:
        return bool(value != value)  # NaN (float, numpy, Decimal), numpy's NaT
    except (TypeError, ValueError):  # an array, or something without ==
        return False


def parsed(reply: Reply, schema: Any) -> Any:
    """The reply's JSON, as an instance of `schema` when it is a dataclass or pydantic model
    class (else the parsed JSON). Raises ReplyNotJSON, or the class's validation error."""
    data = reply.json
    if isinstance(schema, type):
        if hasattr(schema, "model_validate"):
            return schema.model_validate(data)
        return schema(**data)
    return data


#: map's own parameters (an unknown keyword is checked against these and the request options)
MAP_PARAMETERS = ("concurrency", "schema", "column", "progress", "resume")
#: seconds between looks at the batch's throttling, for the bar's note
NOTE_EVERY = 0.25


@dataclass
class _Plan:
    """A map checked and ready to send: nothing has been sent yet."""

    table: Any  # the DataFrame given (None for other rows)
    kind: str
    prompts: list[str]
    settings: Settings
    budget: float | None  # timeout=: each row's total time (None: the configured total)
    model_id: str  # `provider:model`, aliases resolved


def _prepare(template: str, rows: Any, model: str | None, concurrency: int, schema: Any,
             column: str | None, options: dict[str, Any]) -> _Plan:
    """Check everything and read the rows (once); raises UsageError before anything is sent."""
    for name in options:
        if name not in OPTIONS:
            raise UnknownOption(name, (*MAP_PARAMETERS, *OPTION_NAMES))
    if not isinstance(concurrency, int) or concurrency < 1:
        raise BadOption("concurrency", "must be a whole number, at least 1")
    if column is not None and not isinstance(column, str):
        raise BadOption("column", "give the new column's name as a string")
    if schema is not None:
        schema_of(schema)  # a bad schema fails here
        options["schema"] = schema
    settings = parse_settings(options)
    model_id = Conversation(model=model, settings=settings).model_id  # the model, up front
    items, kind = rows_of(rows)
    table = rows if kind != "list" else None
    if column is not None:
        if table is None:
            raise BadOption("column", "column= needs a DataFrame (pandas or polars); with a list "
                            "the replies come back as a list")
        if column in list(table.columns):  # e.g. the cell `df = nbchat.map(..., df, column=c)`
            warnings.warn(  # run again: the earlier replies are replaced, the input kept as is
                f"nbchat.map: the frame already has a column {column!r}; in the result it holds "
                "this map's replies (the frame you passed is not changed). Give column= another "
                "name to keep both", UserWarning, stacklevel=3)
    prompts = prompts_of(template, items, table.columns if table is not None else None)
    budget = settings.timeout.total if settings.timeout is not None else None
    return _Plan(table, kind, prompts, settings, budget, model_id)


async def amap(
    template: str,
    rows: Any,
    model: str | None = None,
    *,
    concurrency: int = 8,
    schema: Any = None,
    column: str | None = None,
    progress: bool = True,
    resume: bool = True,
    **options: Any,
) -> Any:
    """Fill `template` from each row and send it to `model`, `concurrency` requests at a time.

    `rows`: a pandas or polars DataFrame, or any iterable (list, tuple, generator, iterator) of
    dicts, strings or numbers, read once. `schema`: a JSON schema dict, dataclass or pydantic
    model the replies follow (sent to the provider as the `schema` option; the replies come
    back parsed). `column`: with a DataFrame, return a new DataFrame with the replies in this
    column (a name the frame already has is replaced in the result, with a warning).
    `options`: the option keywords of
    `nbchat.chat`; `timeout=` (its total) bounds each row's whole time, 429 waits and tries
    included. Returns what the module docstring says; raises `UsageError` (an unknown keyword,
    a bad option, model, template or rows) before anything is sent. See the module docstring
    for progress, failures, 429s, interrupts, resuming from the log and driving a cluster
    through `base_url`.
    """
    hide_key(options)
    plan = _prepare(template, rows, model, concurrency, schema, column, options)
    return await _run(plan, model, concurrency, schema, column, progress, resume,
                      _State(len(plan.prompts), [None] * len(plan.prompts), {}))


async def _run(plan: _Plan, model: str | None, concurrency: int, schema: Any,
               column: str | None, progress: bool, resume: bool, state: _State) -> Any:
    prompts, settings = plan.prompts, plan.settings
    n = len(prompts)
    limiter = AdaptiveLimiter(concurrency)
    bar = _bar(n) if progress else None
    inflight: dict[int, Any] = {}  # row -> its Turn (or TurnLoop) while it is sent
    answered = _answered(plan.model_id) if resume else None
    shown: tuple[int, int, str] | None = None  # what the bar's postfix says now

    def postfix(note: str = "", refresh: bool = False) -> None:
        nonlocal shown
        if bar is None:
            return
        now = (len(state.errors), state.reused, note)
        if now != shown:  # set_postfix formats: only on a change
            shown = now
            text = f"failed={now[0]}, reused={now[1]}" + (f", {note}" if note else "")
            bar.set_postfix_str(text, refresh=refresh)

    def tick() -> None:
        if bar is not None:
            postfix(shown[2] if shown is not None else "")
            bar.update(1)

    async def watch() -> None:  # a throttled batch says so (the bar would look frozen)
        while True:
            await asyncio.sleep(NOTE_EVERY)
            postfix(_throttle_note(limiter, inflight.values()), refresh=True)

    async def one(i: int) -> None:
        # this row's end: timeout= counts from when a worker takes the row (None: set at
        # its first send, from the configured total)
        deadline = None if plan.budget is None else time.monotonic() + plan.budget
        last: tuple[Reply, RateLimited] | None = None
        for attempt in range(RATE_LIMIT_TRIES):
            if not await limiter.wait_pause(deadline):
                reply = last[0] if last is not None else Reply(model=model or "")
                return _failed(i, reply, _gave_up(last[1] if last else None, plan.budget,
                                                  attempt))
            row_settings = settings
            if deadline is not None:
                left = max(deadline - time.monotonic(), 0.001)
                row_settings = replace(settings, timeout=Timeouts(total=left).over(
                    settings.timeout or Timeouts()))
            turn = Conversation(model=model, settings=row_settings).turn(prompts[i])
            turn.reuse_logged = resume
            first = turn.first if isinstance(turn, TurnLoop) else turn  # its first request
            first.logged_hashes = answered
            if deadline is None:
                deadline = _deadline(plan.budget, first.provider.name)
            gate = _RowGate(limiter, deadline)
            inflight[i] = turn
            try:
                if first.provider.wire_gated:
                    with gated(gate):  # the slot is taken on the wire (see http.gated)
                        reply = await turn.collect()
                else:  # a local model, a plugin's stream: the slot for the whole turn
                    await gate.enter()
                    reply = await turn.collect()
            except _NoSlot:
                return _failed(i, turn.reply, _gave_up(last[1] if last else None, plan.budget,
                                                       attempt))
            except RateLimited as exc:
                last = (turn.reply, exc)
                if attempt + 1 < RATE_LIMIT_TRIES:
                    await limiter.throttled(exc.retry_after)
                    state.throttles = limiter.throttles
                    continue
                return _failed(i, turn.reply, exc)
            except Exception as exc:  # the row's failure, whatever it is: the others go on
                return _failed(i, turn.reply, exc)
            finally:
                inflight.pop(i, None)
                await gate.leave()  # if the row's last exchange kept its slot
            await limiter.succeeded()
            if schema is not None:
                try:
                    state.parsed[i] = parsed(reply, schema)
                except Exception as exc:  # not JSON, or not what the schema says
                    return _failed(i, reply, exc)
            state.replies[i] = reply
            state.reused += reply.replayed
            if answered is not None and reply.request_hash is not None:
                answered.add(reply.request_hash)  # a later row asking the same: from the log
            tick()
            return None

    def _failed(i: int, reply: Reply, exc: BaseException) -> None:
        reply.error = exc
        state.replies[i] = reply
        state.errors[i] = exc
        tick()

    pending = iter(range(n))

    async def worker() -> None:  # `concurrency` workers take the rows in order
        async with own_pool():  # each keeps its connection (see nbchat.core.http.own_pool)
            for i in pending:
                await one(i)

    # more workers than slots: a row's request is built, and its reply handled, while other
    # rows' requests hold the slots (the slots, taken only on the wire, bound concurrency)
    workers = min(concurrency + _spare(concurrency), n)
    tasks = [asyncio.ensure_future(worker()) for _ in range(workers)]
    watcher = asyncio.ensure_future(watch()) if bar is not None else None
    postfix()
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        if watcher is not None:
            watcher.cancel()
        if bar is not None:
            postfix(refresh=True)
            bar.close()
    return result(state, plan.table, plan.kind, schema, column)


class _NoSlot(NbchatError):
    """A row's time ran out while it waited for a slot (the batch was rate limited)."""


class _RowGate:
    """One row's slot of the map's limiter (`nbchat.core.http.Gate`): taken when the row's
    request goes on the wire, given back when its streamed response is closed (or at the end
    of the row). Raises `_NoSlot` when the row's deadline passes first."""

    def __init__(self, limiter: AdaptiveLimiter, deadline: float | None) -> None:
        self.limiter, self.deadline, self.held = limiter, deadline, False

    async def enter(self) -> None:
        if self.held:
            return
        if not await self.limiter.acquire(self.deadline):
            raise _NoSlot("the batch was rate limited for the rest of this row's time")
        self.held = True

    async def leave(self) -> None:
        if self.held:
            self.held = False
            await self.limiter.release()


def _spare(concurrency: int) -> int:
    """Workers beyond `concurrency`, ready with their next request when a slot frees (none
    below 4: a small map sends its rows in order)."""
    return concurrency // 4


def _answered(model_id: str) -> set[str] | None:
    """The request hashes with a finished reply in the log from this map's model, read once
    (each row then looks in the log only when its hash is among them); None when there is no
    log or it cannot be read (each row looks, and the log warns)."""
    lg = _log.current()
    if lg is None:
        return None
    try:
        return lg.answered(model_id)
    except _log.LogUnusable:
        return None


def _deadline(budget: float | None, provider: str) -> float | None:
    """When a row first sent now must end: `timeout=`'s total, else the configured total for
    the row's provider (None: no limit)."""
    if budget is None:
        budget = waits.configured(provider).total
    return None if budget is None else time.monotonic() + budget


def _gave_up(last: RateLimited | None, budget: float | None, tries: int) -> RateLimited:
    """The row's error when its total time ran out while the batch was rate limited (`last`:
    the row's own last 429, None when the batch's pause kept it from being sent at all)."""
    allowed = f"timeout={budget:g}" if budget is not None else "the configured total timeout"
    longer = f"timeout={2 * budget:g}" if budget is not None else "a larger timeout="
    what = (f"still rate limited when this row's total time ran out ({allowed}) after {tries} "
            f"{'try' if tries == 1 else 'tries'}" if last is not None else
            f"the batch was rate limited for the whole of this row's total time ({allowed}), "
            "so it was not sent")
    return RateLimited(
        f"{what}; the other rows went on. Allow longer with {longer} or lower concurrency="
        + (f". Last answer: {last}" if last is not None else ""),
        retry_after=last.retry_after if last is not None else None, status=429,
        provider=last.provider if last is not None else "")


def _throttle_note(limiter: AdaptiveLimiter, turns: Iterable[Any]) -> str:
    """"rate limited, retrying in N s" while the batch waits out a 429 (the limiter's pause,
    or a request's own retry wait in the HTTP layer), else ""."""
    now = time.monotonic()
    left = limiter.resume_at - now
    for turn in turns:
        w = getattr(getattr(turn, "current", turn), "waits", None)
        if (w is not None and w.phase == waits.RETRY and "429" in (w.what or "")
                and w.until is not None):
            left = max(left, w.until - w.clock())
    if left <= 0:
        return ""
    return f"rate limited, retrying in {max(1, math.ceil(left))} s"


def result(state: _State, rows: Any, kind: str, schema: Any, column: str | None,
           interrupted: bool = False) -> Any:
    """The map's return value from what has finished (see the module docstring)."""
    errors = dict(state.errors)
    if interrupted:
        for i, r in enumerate(state.replies):
            if r is None:
                errors[i] = Interrupted("interrupted before this row was answered")
    values: list[Any] = []
    for i, r in enumerate(state.replies):
        if schema is not None:
            values.append(state.parsed.get(i))
        else:
            values.append(r)
    if column is not None:
        texts = values if schema is not None else [
            None if i in errors or r is None else r.text for i, r in enumerate(values)]
        messages = [str(errors[i]) if i in errors else None for i in range(state.n)]
        if kind == "pandas":
            out = rows.assign(**{column: texts})
            if errors:
                return out.assign(**{f"{column}_error": messages})
            # an earlier run's errors would read as this run's
            return out.drop(columns=[f"{column}_error"], errors="ignore")
        import polars as pl

        if schema is not None and isinstance(schema, type):  # the parsed objects, as pandas
            values_col = pl.Series(column, texts, dtype=pl.Object)  # keeps them (not structs)
        else:
            values_col = pl.Series(column, texts, strict=False)
        out = rows.with_columns(values_col)
        if errors:
            out = out.with_columns(pl.Series(f"{column}_error", messages, dtype=pl.String))
        elif f"{column}_error" in out.columns:  # an earlier run's errors
            out = out.drop(f"{column}_error")
        return out
    res = MapResult(values)
    res.replies, res.errors, res.reused = list(state.replies), errors, state.reused
    res.interrupted, res.throttles = interrupted, state.throttles
    return res


def _bar(n: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=n, desc="nbchat.map", unit="row", mininterval=0.1)


def map(template: str, rows: Any, model: str | None = None, *, concurrency: int = 8,
        schema: Any = None, column: str | None = None, progress: bool = True,
        resume: bool = True, **options: Any) -> Any:
    """`amap`, from synchronous code (same arguments, rows read once). Interrupted (Ctrl-C,
    the notebook's Stop), it cancels the requests in flight and returns what finished, with
    `interrupted=True` (a DataFrame: the rows not done have None and "interrupted ..." in
    `<column>_error`)."""
    from .bridge import run_sync

    hide_key(options)
    plan = _prepare(template, rows, model, concurrency, schema, column, options)
    n = len(plan.prompts)
    state = _State(n, [None] * n, {})
    try:
        return run_sync(_run(plan, model, concurrency, schema, column, progress, resume, state))
    except KeyboardInterrupt:
        done = sum(r is not None for r in state.replies)
        print(f"nbchat.map interrupted: {done} of {state.n} rows finished and kept; run it "
              "again to send only the rest (finished rows come from the reply log)")
        return result(state, plan.table, plan.kind, schema, column, interrupted=True)
