"""`nbchat.map`: one prompt template over every row of a table, many requests at a time.

    out = nbchat.map("Classify this review: {review}", df, model="cerebras:llama3.1-8b",
                     concurrency=16, column="label")

Rows are a pandas or polars DataFrame, a list of dicts or a list of strings. `{name}` (or
`{name:spec}`) in the template is filled from the row's column `name`; a list of strings fills
`{text}`, or, if the template has no field, each string follows the template after a blank
line. Other braces (JSON in the template) stay as typed; a field that names
no column raises `BadOption` before anything is sent. `{{name}}` (a doubled opening brace) is
sent as typed.

What comes back is aligned with the rows:
- with `column=` and a DataFrame: a new DataFrame (the input is not changed) with the replies'
  text in `column` (or the parsed objects with `schema=`), None where a row failed, and, when
  some failed, their errors in `<column>_error`;
- otherwise a `MapResult`, a list with one entry per row: the `Reply` (its `.error` set when the
  row failed; None for a row an interrupt left unanswered), or with `schema=` the parsed
  object (None when the row failed).
A `MapResult` also has `errors` ({row index: exception}), `replies`, `reused` and
`interrupted`.

Progress: a tqdm bar (tqdm.auto: the notebook's widget bar in Jupyter, text elsewhere) with
done, failed, reused and the ETA; `progress=False` turns it off.

Failures: a failing row keeps its error and the others go on. A 429 (`RateLimited`, after the
HTTP layer's own retries) does not fail the row: the whole batch slows down, through one
limiter shared by all rows (`AdaptiveLimiter`: every request waits out the server's
Retry-After, or a backoff doubling from 1 s, and the concurrency halves, then grows back by one
after each run of successes), and the row is sent again, up to `RATE_LIMIT_TRIES` times.
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

Connections: each worker sends its rows through a connection pool of its own
(`nbchat.core.http.own_pool`), so its connection stays open from one row to the next and a map
holds `concurrency` connections; they are closed when the map ends.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .conversation import Conversation
from .credentials import hide_key
from .errors import BadOption, NbchatError, RateLimited
from .http import own_pool
from .options import parse_settings, schema_of
from .types import Reply

#: times one row is sent when its answers are 429s (the limiter waits between the tries)
RATE_LIMIT_TRIES = 8
#: the first backoff (seconds) after a 429 without Retry-After; it doubles up to MAX_BACKOFF
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 60.0

# a field not opened by a doubled brace: `{{name}}` stays as typed, `{"k": {name}}` is filled
_FIELD = re.compile(r"(?<!\{)\{(?P<name>[A-Za-z_]\w*)(?::(?P<spec>[^{}\s]*))?\}")


class Interrupted(NbchatError):
    """The map was interrupted before this row was answered."""


class AdaptiveLimiter:
    """At most `limit` requests at once (between 1 and `maximum`), shared by the rows of one map.

    `throttled(retry_after)` after a 429 halves the limit and makes every new request wait
    until the pause is over (Retry-After seconds, else a doubling backoff); `succeeded()` grows
    the limit back by one after `limit` successes in a row."""

    def __init__(self, maximum: int) -> None:
        self.maximum = self.limit = maximum
        self.active = 0
        self.resume_at = 0.0  # time.monotonic() before which no request starts
        self.throttles = 0
        self._streak = 0
        self._backoff = FIRST_BACKOFF
        self._changed = asyncio.Condition()

    async def acquire(self) -> None:
        """Wait for a free slot and for any pause to end."""
        async with self._changed:
            while True:
                pause = self.resume_at - time.monotonic()
                if pause <= 0 and self.active < self.limit:
                    self.active += 1
                    return
                try:
                    await asyncio.wait_for(self._changed.wait(), pause if pause > 0 else None)
                except asyncio.TimeoutError:
                    pass

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
        done = len(self) - len(self.errors)
        extra = ", interrupted" if self.interrupted else ""
        return (f"MapResult({done} done, {len(self.errors)} failed, {self.reused} reused{extra})"
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


def rows_of(rows: Any) -> tuple[list[Mapping[str, Any] | str], str]:
    """The rows as dicts (or strings) and the kind of table: "pandas", "polars" or "list"."""
    module = type(rows).__module__.split(".")[0]
    if module == "pandas" and type(rows).__name__ == "DataFrame":
        return list(rows.to_dict("records")), "pandas"
    if module == "polars" and type(rows).__name__ == "DataFrame":
        return list(rows.to_dicts()), "polars"
    if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Iterable):
        raise BadOption("rows", "expected a DataFrame (pandas or polars), a list of dicts or a "
                        f"list of strings, got {type(rows).__name__}")
    items = list(rows)
    if not all(isinstance(r, (str, Mapping)) for r in items):
        bad = next(r for r in items if not isinstance(r, (str, Mapping)))
        raise BadOption("rows", f"expected dicts or strings as rows, got {type(bad).__name__}")
    return items, "list"


def fill(template: str, row: Mapping[str, Any] | str) -> str:
    """The template with `{name}` / `{name:spec}` filled from `row` (see the module docstring).
    Raises BadOption for a field that names no column."""
    if isinstance(row, str):
        if not _FIELD.search(template):
            return f"{template.rstrip()}\n\n{row}"
        row = {"text": row}

    def one(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in row:
            cols = ", ".join(str(c) for c in row) or "none"
            raise BadOption("template", f"{{{name}}} names no column (columns: {cols}); "
                            f"double the braces ({{{{{name}}}}}) to send it as typed")
        try:
            return format(row[name], m.group("spec") or "")
        except (ValueError, TypeError) as exc:
            raise BadOption("template", f"{m.group(0)}: {exc}") from None

    return _FIELD.sub(one, template)


def parsed(reply: Reply, schema: Any) -> Any:
    """The reply's JSON, as an instance of `schema` when it is a dataclass or pydantic model
    class (else the parsed JSON). Raises ReplyNotJSON, or the class's validation error."""
    data = reply.json
    if isinstance(schema, type):
        if hasattr(schema, "model_validate"):
            return schema.model_validate(data)
        return schema(**data)
    return data


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
    _state: _State | None = None,
    **options: Any,
) -> Any:
    """Fill `template` from each row and send it to `model`, `concurrency` requests at a time.

    `rows`: a pandas or polars DataFrame, a list of dicts or a list of strings. `schema`: a JSON
    schema dict, dataclass or pydantic model the replies follow (sent to the provider as the
    `schema` option; the replies come back parsed). `column`: with a DataFrame, return a new
    DataFrame with the replies in this column. `options`: the option keywords of
    `nbchat.chat`. Returns what the module docstring says; raises `UsageError` (a bad option,
    model, template or rows) before anything is sent. See the module docstring for progress,
    failures, 429s, interrupts, resuming from the log and driving a cluster through `base_url`.
    """
    hide_key(options)
    if concurrency < 1:
        raise BadOption("concurrency", "must be at least 1")
    if column is not None and not isinstance(column, str):
        raise BadOption("column", "give the new column's name as a string")
    if schema is not None:
        schema_of(schema)  # a bad schema fails here
        options["schema"] = schema
    settings = parse_settings(options)
    Conversation(model=model, settings=settings)  # the model, up front
    items, kind = rows_of(rows)
    if column is not None and kind == "list":
        raise BadOption("column", "column= needs a DataFrame (pandas or polars); with a list "
                        "the replies come back as a list")
    prompts = [fill(template, r) for r in items]
    n = len(prompts)
    state = _state if _state is not None else _State(n, [None] * n, {})
    limiter = AdaptiveLimiter(concurrency)
    bar = _bar(n) if progress else None
    if bar is not None:
        bar.set_postfix(failed=0, reused=0, refresh=False)

    shown = (0, 0)  # (failed, reused) on the bar: set_postfix formats, so only on a change

    def tick() -> None:
        nonlocal shown
        if bar is not None:
            counts = (len(state.errors), state.reused)
            if counts != shown:
                shown = counts
                bar.set_postfix(failed=counts[0], reused=counts[1], refresh=False)
            bar.update(1)

    async def one(i: int) -> None:
        for attempt in range(RATE_LIMIT_TRIES):
            await limiter.acquire()
            turn = Conversation(model=model, settings=settings).turn(prompts[i])
            turn.reuse_logged = resume
            try:
                reply = await turn.collect()
            except RateLimited as exc:
                await limiter.release()
                if attempt + 1 < RATE_LIMIT_TRIES:
                    await limiter.throttled(exc.retry_after)
                    state.throttles = limiter.throttles
                    continue
                return _failed(i, turn.reply, exc)
            except Exception as exc:  # the row's failure, whatever it is: the others go on
                await limiter.release()
                return _failed(i, turn.reply, exc)
            except BaseException:
                await limiter.release()
                raise
            await limiter.release()
            await limiter.succeeded()
            if schema is not None:
                try:
                    state.parsed[i] = parsed(reply, schema)
                except Exception as exc:  # not JSON, or not what the schema says
                    return _failed(i, reply, exc)
            state.replies[i] = reply
            state.reused += reply.replayed
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

    tasks = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, n))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        if bar is not None:
            bar.set_postfix(failed=len(state.errors), reused=state.reused)
            bar.close()
    return result(state, rows, kind, schema, column)


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
            return out.assign(**{f"{column}_error": messages}) if errors else out
        import polars as pl

        out = rows.with_columns(pl.Series(column, texts, strict=False))
        if errors:
            out = out.with_columns(pl.Series(f"{column}_error", messages, dtype=pl.String))
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
    """`amap`, from synchronous code. Interrupted (Ctrl-C, the notebook's Stop), it cancels the
    requests in flight and returns what finished, with `interrupted=True` (a DataFrame: the
    rows not done have None and "interrupted ..." in `<column>_error`)."""
    from .bridge import run_sync

    hide_key(options)
    items, kind = rows_of(rows)
    state = _State(len(items), [None] * len(items), {})
    try:
        return run_sync(amap(template, rows, model, concurrency=concurrency, schema=schema,
                             column=column, progress=progress, resume=resume, _state=state,
                             **options))
    except KeyboardInterrupt:
        done = sum(r is not None for r in state.replies)
        print(f"nbchat.map interrupted: {done} of {state.n} rows finished and kept; run it "
              "again to send only the rest (finished rows come from the reply log)")
        return result(state, rows, kind, schema, column, interrupted=True)
