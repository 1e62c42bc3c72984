"""The local log: every request and its reply in a SQLite database (standard `sqlite3`).

Where: `NBCHAT_LOG` (a file path; `off` turns logging off), else `log.db` in the user data
folder that `platformdirs` gives for "nbchat" (e.g. `~/.local/share/nbchat/log.db`).

A reply is written once, when its turn finishes, by a writer thread: nothing is done per chunk
but keeping the event and its time, and the chat never waits for the disk. Replies that queue
up while it writes (many rows of `nbchat.map`) go into one transaction; reads have a
connection of their own, so a lookup does not wait for a write. A database that
cannot be used (corrupt, locked past the busy timeout, written by a newer nbchat, a folder that
cannot be created) warns once with `LogWarning` and the chat goes on unlogged.

What is stored per reply (table `replies`): provider, model, endpoint (never a key), the
messages and options sent, the reply (text, reasoning, tool calls, images as bytes in `blobs`,
usage, finish reason, error), time to first token, total time, notebook and cell when known, and the
event sequence with each event's time, so that `nbchat.core.replay` can answer the same
request again with the same events. Model listings go to `listings` (newest per endpoint).

The schema is versioned (`PRAGMA user_version`); `MIGRATIONS[i]` takes version i to i + 1.
"""

from __future__ import annotations

import array
import atexit
import collections
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import queue
import random
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import NbchatError, redact
from .types import (
    Done,
    Event,
    ImageEvent,
    ImagePart,
    Message,
    ModelInfo,
    ReasoningDelta,
    RefusalDelta,
    Request,
    TextPart,
    ToolCall,
    ToolCallEvent,
)

if TYPE_CHECKING:  # pragma: no cover
    import sqlite3

    from .types import Reply

#: at most this many queued replies are written in one transaction
BATCH = 256
#: seconds the writer waits for more replies when one is queued within this time of its last
#: write, so that replies finishing close together (`nbchat.map`'s rows) share a transaction
#: and an INSERT; a reply after a quiet spell is written at once
LINGER = 0.05
#: replies in one INSERT statement (27 columns each: well under SQLite's 32,766 variables)
ROWS_PER_INSERT = 64
#: `NBCHAT_LOG` values that turn the log off
OFF = ("off", "0", "false", "no", "none")
#: seconds a write waits for another process's lock before giving up (and warning)
BUSY_TIMEOUT = 5.0

MIGRATIONS: tuple[str, ...] = (
    # 1: replies, their images and other blobs, model listings
    """
    CREATE TABLE replies (
        id TEXT PRIMARY KEY,
        created TEXT NOT NULL,              -- UTC, ISO 8601
        session TEXT NOT NULL,              -- one Python process (kernel)
        provider TEXT NOT NULL,
        model TEXT NOT NULL,                -- provider:model
        endpoint TEXT,                      -- base URL without credentials; NULL in process
        request_hash TEXT NOT NULL,         -- sha256 of the canonical request (replay key)
        messages TEXT NOT NULL,             -- JSON; images as {"type": "image", "sha256"}
        options TEXT NOT NULL,              -- JSON; the options that change the answer
        text TEXT NOT NULL,
        tool_calls TEXT,                    -- JSON [{id, name, arguments}] or NULL
        finish_reason TEXT,
        input_tokens INTEGER,
        output_tokens INTEGER,
        time_to_first_token REAL,           -- seconds
        duration REAL,                      -- seconds
        interrupted INTEGER NOT NULL DEFAULT 0,
        error_type TEXT,                    -- class name in nbchat.core.errors
        error TEXT,                         -- its message (keys redacted)
        error_attrs TEXT,                   -- JSON: its plain attributes (status, provider...)
        events TEXT NOT NULL,               -- JSON: n (n text deltas) | [kind, ...]
        chunks BLOB,                        -- uint32 LE: length of each text delta
        stamps BLOB,                        -- float32 LE: seconds from the start, per event
        logprobs TEXT,                      -- JSON: per text delta, or NULL
        notebook TEXT,
        cell TEXT
    );
    CREATE INDEX replies_by_hash ON replies (request_hash);
    CREATE INDEX replies_by_created ON replies (created);
    CREATE INDEX replies_by_session ON replies (session);
    CREATE TABLE blobs (
        sha256 TEXT PRIMARY KEY,
        mime TEXT NOT NULL,
        data BLOB NOT NULL
    );
    CREATE TABLE listings (
        provider TEXT NOT NULL,
        endpoint TEXT NOT NULL,             -- '' for none
        created TEXT NOT NULL,
        models TEXT NOT NULL,               -- JSON list of ModelInfo fields
        PRIMARY KEY (provider, endpoint)
    );
    """,
    # 2: a reasoning model's thinking, apart from the answer (its deltas are in `events`)
    """
    ALTER TABLE replies ADD COLUMN reasoning TEXT;
    """,
)

#: the columns a reply is written to (named: later migrations may add others)
_COLUMNS = (
    "id", "created", "session", "provider", "model", "endpoint", "request_hash", "messages",
    "options", "text", "tool_calls", "finish_reason", "input_tokens", "output_tokens",
    "time_to_first_token", "duration", "interrupted", "error_type", "error", "error_attrs",
    "events", "chunks", "stamps", "logprobs", "notebook", "cell", "reasoning",
)

#: one id per process: the "this kernel session" of the usage ledger
SESSION = uuid.uuid4().hex


class LogWarning(UserWarning):
    """The log cannot be used; chats go on without it."""


class LogUnusable(NbchatError):
    """The log database cannot be opened or read (corrupt, locked, too new)."""


def now_iso() -> str:
    """The current time in UTC as ISO 8601 with microseconds (how `created` is stored)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


_rng: tuple[int, random.Random] | None = None  # (pid, generator seeded from os.urandom)


def new_id() -> str:
    """A log id: 16 hex digits, random (64 bits from a generator seeded once per process from
    `os.urandom`, again in a forked child). Not `uuid4()`: its `os.urandom` call per id gives
    up the interpreter lock, and with the log's writer thread busy, taking it back cost about
    0.1 ms per reply in `nbchat.map` (measured with cProfile over 1,000 rows)."""
    global _rng
    pid = os.getpid()
    if _rng is None or _rng[0] != pid:
        _rng = (pid, random.Random(os.urandom(32)))
    return f"{_rng[1].getrandbits(64):016x}"


def sha256(data: bytes) -> str:
    """The SHA-256 of `data` as 64 hex digits (the key of an image in `blobs`)."""
    return hashlib.sha256(data).hexdigest()


def _le(arr: array.array[Any]) -> bytes:
    if sys.byteorder == "big":
        arr = array.array(arr.typecode, arr)
        arr.byteswap()
    return arr.tobytes()


def _from_le(typecode: str, data: bytes | None) -> list[Any]:
    arr = array.array(typecode)
    if data:
        arr.frombytes(data)
        if sys.byteorder == "big":
            arr.byteswap()
    return arr.tolist()


# ---- messages and events as JSON ----------------------------------------------------------


def message_json(m: Message, *, canonical: bool = False) -> dict[str, Any]:
    """A message as JSON. Images are named by sha256 (their bytes go to `blobs`); in the
    canonical form an image fetched from a URL is named by its URL instead, so that replay
    can find it without fetching it."""
    content: list[dict[str, Any]] = []
    for p in m.parts:
        if isinstance(p, TextPart):
            content.append({"type": "text", "text": p.text})
        elif canonical and p.url:
            content.append({"type": "image", "url": p.url})
        else:
            img: dict[str, Any] = {"type": "image", "sha256": sha256(p.data), "mime": p.mime}
            if p.url:
                img["url"] = p.url
            content.append(img)
    out: dict[str, Any] = {"role": m.role, "content": content}
    if m.tool_calls:
        out["tool_calls"] = [tool_call_json(t) for t in m.tool_calls]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.interrupted:
        out["interrupted"] = True
    return out


def tool_call_json(t: ToolCall) -> dict[str, Any]:
    """A tool call as stored: `{"id", "name", "arguments"}` (arguments parsed)."""
    return {"id": t.id, "name": t.name, "arguments": t.arguments}


def dumps(value: Any) -> str:
    """Compact JSON (no ASCII escaping) as the log stores it: bytes become `{"sha256": ...}`, sets
    and tuples lists, dataclasses dicts, anything else its repr.
    """
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"sha256": sha256(bytes(value))}
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return repr(value)


# ---- what a turn hands to the log ----------------------------------------------------------


@dataclass
class Record:
    """A finished turn, as the writer thread needs it (serialized there, not in the turn)."""

    id: str
    created: str
    provider: str
    model: str
    endpoint: str | None
    request_hash: str
    options: dict[str, Any]
    request: Request
    reply: Reply
    chunks: list[str]  # the text deltas, in order
    marks: list[tuple[int, Event]]  # other events, after how many text deltas they came
    delta_logprobs: list[tuple[int, tuple[dict[str, Any], ...]]]  # (delta index, logprobs)
    stamps: list[float]  # perf_counter() per event, in order
    started: float  # perf_counter() at the request's start
    notebook: str | None = None
    cell: str | None = None


@dataclass(frozen=True)
class Logged:
    """One logged reply, as replay reads it back."""

    id: str
    model: str
    text: str
    finish_reason: str | None
    input_tokens: int | None
    output_tokens: int | None
    time_to_first_token: float | None
    duration: float | None
    interrupted: bool
    error_type: str | None
    error: str | None
    error_attrs: dict[str, Any]
    events: list[Any]
    chunks: list[int]
    stamps: list[float]
    logprobs: list[list[dict[str, Any]]] | None
    messages: list[dict[str, Any]]


@dataclass(frozen=True)
class LogEntry:
    """One row of `nbchat.log()`: a request and its reply, newest first."""

    id: str
    created: _dt.datetime  # UTC
    model: str
    provider: str
    endpoint: str | None
    prompt: str  # the text of the last user message
    text: str  # the reply's text
    finish_reason: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost: float | None  # estimated, USD (nbchat.core.costs); None when the price is unknown
    time_to_first_token: float | None  # seconds
    duration: float | None  # seconds
    error: str | None
    notebook: str | None
    cell: str | None
    request_hash: str


# ---- the database ----------------------------------------------------------------------------


class Log:
    """One log database. Writes go through a queue to a writer thread; reads flush it first
    (`find` only when a reply to the same request is still queued)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problem: str | None = None  # why the log is unusable, once it is
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        # reads have a connection of their own: in WAL mode they need not wait for a write
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        self._queue: queue.Queue[Record | tuple[str, Any] | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._warned = False
        # request hashes of the queued replies: `find` waits for the writer only for these
        self._pending: collections.Counter[str] = collections.Counter()
        self._pending_lock = threading.Lock()

    # ---- opening -------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Whether the database can be used: opened now if it was not (a failure to open is warned
        about once, and the log stays unusable from then on).
        """
        return self.problem is None and self._connect() is not None

    def _connect(self) -> sqlite3.Connection | None:
        if self.problem is not None:
            return None
        if self._conn is not None:
            return self._conn
        with self._lock:
            if self._conn is None and self.problem is None:
                try:
                    self._conn = self._open()
                except Exception as exc:  # noqa: BLE001 - any failure: warn and go on unlogged
                    self._fail(exc)
            return self._conn

    def _open(self) -> sqlite3.Connection:
        import sqlite3

        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _fail(self, exc: BaseException) -> None:
        """The database cannot be used: warn once; nothing more is logged in this process."""
        self.problem = redact(_reason(exc))
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001
                pass
            self._conn = None
        self._close_reader()
        self.warn(f"the log at {self.path} cannot be used ({self.problem}); replies are not "
                  "logged. Move the file away, set NBCHAT_LOG to another path, or NBCHAT_LOG=off.")

    def warn(self, message: str) -> None:
        """Warn once per log (LogWarning): a broken log must not flood the notebook."""
        if self._warned:
            return
        self._warned = True
        warnings.warn(f"nbchat: {message}", LogWarning, stacklevel=3)

    # ---- writing ---------------------------------------------------------------------------

    def submit(self, record: Record) -> None:
        """Queue a finished turn for writing; returns at once (the first call opens the
        database here, so that a broken one warns in the cell that used it)."""
        if self._connect() is None:
            return
        self._ensure_writer()
        with self._pending_lock:
            self._pending[record.request_hash] += 1
        self._queue.put(record)

    def save_listing(self, provider: str, endpoint: str | None, models: list[ModelInfo]) -> None:
        """Queue a model listing for the writer thread: the newest listing per provider and endpoint
        (never a key) is kept in `listings`. Nothing is done once the log is unusable.
        """
        if self.problem is not None:
            return
        self._ensure_writer()
        self._queue.put(("listing", (provider, endpoint or "", models)))

    def _ensure_writer(self) -> None:
        if self._writer is None or not self._writer.is_alive():
            with self._lock:
                if self._writer is None or not self._writer.is_alive():
                    self._writer = threading.Thread(target=self._write_loop,
                                                    name="nbchat-log", daemon=True)
                    self._writer.start()

    def _write_loop(self) -> None:
        wrote = -LINGER  # when the last write ended (time.monotonic())
        while True:
            items = [self._queue.get()]
            if items[-1] is not None and time.monotonic() - wrote < LINGER:
                # replies are coming fast (`nbchat.map`): what else comes within LINGER goes
                # into the same transaction and INSERT. Each statement hands the interpreter
                # lock to this thread and back, and each wake-up too, so it sleeps rather than
                # waking per reply (one transaction per reply slowed a map by about a tenth).
                # A reply after a quiet spell is written at once.
                time.sleep(LINGER)
            while len(items) < BATCH and items[-1] is not None:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write([i for i in items if i is not None])
            finally:
                with self._pending_lock:
                    for item in items:
                        if isinstance(item, Record):
                            self._pending[item.request_hash] -= 1
                            if self._pending[item.request_hash] <= 0:
                                del self._pending[item.request_hash]
                for _ in items:
                    self._queue.task_done()
            wrote = time.monotonic()
            if items[-1] is None:
                return

    def _write(self, items: list[Record | tuple[str, Any]]) -> None:
        """Write queued entries in one transaction (a commit per reply would cost more than
        the reply's own insert when many replies come at once, as in `nbchat.map`)."""
        conn = self._connect()
        if conn is None or not items:
            return
        try:
            with self._lock:
                conn.execute("BEGIN")
                try:
                    records = [item for item in items if isinstance(item, Record)]
                    for at in range(0, len(records), ROWS_PER_INSERT):
                        self._insert(conn, records[at:at + ROWS_PER_INSERT])
                    for item in items:
                        if not isinstance(item, Record):
                            self._insert_listing(conn, *item[1])
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        except Exception as exc:  # noqa: BLE001 - a lost entry must not stop the chat
            if _is_busy(exc):  # another process holds the lock: lose these entries only
                self.warn(f"the log at {self.path} stayed locked for {BUSY_TIMEOUT:g} s "
                          "(another process is writing to it); a reply was not logged")
            else:
                self._fail(exc)

    def _insert(self, conn: sqlite3.Connection, records: list[Record]) -> None:
        """Insert replies with one statement (and their images, new ones only)."""
        blobs: dict[str, tuple[str, bytes]] = {}

        def keep(part: ImagePart) -> str:
            h = sha256(part.data)
            blobs.setdefault(h, (part.mime, part.data))
            return h

        values: list[Any] = []
        for r in records:
            values += self._row(r, keep)
        if blobs:
            conn.executemany("INSERT OR IGNORE INTO blobs (sha256, mime, data) VALUES (?, ?, ?)",
                             [(h, mime, data) for h, (mime, data) in blobs.items()])
        row = "(" + ", ".join("?" * len(_COLUMNS)) + ")"
        conn.execute(f"INSERT INTO replies ({', '.join(_COLUMNS)}) VALUES "
                     + ", ".join([row] * len(records)), values)

    @staticmethod
    def _row(r: Record, keep: Callable[[ImagePart], str]) -> tuple[Any, ...]:
        """One reply's values for `_COLUMNS` (its images handed to `keep`, which names them)."""
        messages = []
        for m in r.request.messages:
            for p in m.images:
                keep(p)
            messages.append(message_json(m))
        events = encode_events(len(r.chunks), r.marks, keep)
        chunks = array.array("I", map(len, r.chunks))
        stamps = array.array("f", (t - r.started for t in r.stamps))
        logprobs: list[Any] | None = None
        if r.delta_logprobs:
            logprobs = [[] for _ in r.chunks]
            for i, lp in r.delta_logprobs:
                logprobs[i] = list(lp)
        reply = r.reply
        err = reply.error
        return (
            r.id, r.created, SESSION, r.provider, r.model, r.endpoint, r.request_hash,
            dumps(messages), dumps(r.options), reply.text,
            dumps([tool_call_json(t) for t in reply.tool_calls])
            if reply.tool_calls else None,
            reply.finish_reason, reply.usage.input_tokens, reply.usage.output_tokens,
            reply.time_to_first_token, reply.duration, int(reply.interrupted),
            type(err).__name__ if err is not None else None,
            redact(str(err)) if err is not None else None,
            dumps(error_attrs(err)) if err is not None else None,
            dumps(events), _le(chunks), _le(stamps),
            dumps(logprobs) if logprobs is not None else None,
            r.notebook, r.cell, reply.reasoning or None,
        )

    def _insert_listing(self, conn: sqlite3.Connection, provider: str, endpoint: str,
                        models: list[ModelInfo]) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO listings (provider, endpoint, created, models)"
            " VALUES (?, ?, ?, ?)",
            (provider, endpoint, now_iso(), dumps([dataclasses.asdict(m) for m in models])),
        )

    def flush(self) -> None:
        """Wait until everything submitted so far is written (or failed)."""
        if self._writer is not None:
            self._queue.join()

    def close(self) -> None:
        """Write what is queued, stop the writer and close the database."""
        if self._writer is not None and self._writer.is_alive():
            self._queue.put(None)
            self._writer.join(30)
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        self._close_reader()

    def _close_reader(self) -> None:
        with self._reader_lock:
            if self._reader is not None:
                try:
                    self._reader.close()
                except Exception:  # noqa: BLE001
                    pass
                self._reader = None

    # ---- reading -----------------------------------------------------------------------------

    def _read(self, sql: str, params: Iterable[Any] = (), *, flush: bool = True
              ) -> list[tuple[Any, ...]]:
        """Rows of a query, after pending writes (unless `flush` is false); raises LogUnusable
        when the log cannot be read.
        """
        import sqlite3

        if flush:
            self.flush()
        if self._connect() is None:  # opened (and migrated) by the writer's connection
            raise LogUnusable(f"the log at {self.path} cannot be used ({self.problem})")
        try:
            with self._reader_lock:
                if self._reader is None:
                    self._reader = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT,
                                                   isolation_level=None,
                                                   check_same_thread=False)
                return self._reader.execute(sql, tuple(params)).fetchall()
        except Exception as exc:  # noqa: BLE001
            if not _is_busy(exc):
                self._fail(exc)
            raise LogUnusable(
                f"the log at {self.path} cannot be read ({redact(_reason(exc))})") from None

    def find(self, request_hash: str) -> list[Logged]:
        """Logged replies to a request (by canonical hash), newest first.

        Waits for the writer only when a reply to this request is still queued: `nbchat.map`
        looks up every row while earlier rows are being written."""
        with self._pending_lock:
            queued = request_hash in self._pending
        rows = self._read(
            "SELECT id, model, text, finish_reason, input_tokens, output_tokens,"
            " time_to_first_token, duration, interrupted, error_type, error, error_attrs,"
            " events, chunks, stamps, logprobs, messages"
            " FROM replies WHERE request_hash = ? ORDER BY rowid DESC",
            (request_hash,), flush=queued,
        )
        return [
            Logged(
                id=r[0], model=r[1], text=r[2], finish_reason=r[3], input_tokens=r[4],
                output_tokens=r[5], time_to_first_token=r[6], duration=r[7],
                interrupted=bool(r[8]), error_type=r[9], error=r[10],
                error_attrs=json.loads(r[11]) if r[11] else {}, events=json.loads(r[12]),
                chunks=_from_le("I", r[13]), stamps=_from_le("f", r[14]),
                logprobs=json.loads(r[15]) if r[15] else None, messages=json.loads(r[16]),
            )
            for r in rows
        ]

    def answered(self, model: str) -> set[str]:
        """The request hashes that have a finished reply (no error, not interrupted) from
        `model` (`provider:model`), after pending writes: `nbchat.map` reads them once and
        looks up only its rows whose hash is among them. Raises LogUnusable."""
        rows = self._read("SELECT DISTINCT request_hash FROM replies WHERE model = ?"
                          " AND error_type IS NULL AND interrupted = 0", (model,))
        return {r[0] for r in rows}

    def blob(self, digest: str) -> ImagePart:
        """The image stored under a SHA-256 `digest`; raises LogUnusable when the log lacks it."""
        rows = self._read("SELECT mime, data FROM blobs WHERE sha256 = ?", (digest,))
        if not rows:
            raise LogUnusable(f"the log at {self.path} lacks the image {digest[:12]}")
        return ImagePart(bytes(rows[0][1]), rows[0][0])

    def listing(self, provider: str, endpoint: str | None) -> list[ModelInfo] | None:
        """The last listing saved for a provider and endpoint as `ModelInfo`s, or None when there is
        none; raises LogUnusable when the log cannot be read.
        """
        rows = self._read("SELECT models FROM listings WHERE provider = ? AND endpoint = ?",
                          (provider, endpoint or ""))
        if not rows:
            return None
        return [ModelInfo(**m) for m in json.loads(rows[0][0])]

    def entries(self, n: int = 20, *, models: Iterable[str] = (), provider: str | None = None,
                text: str | None = None, since: str | None = None) -> list[LogEntry]:
        """The newest `n` logged replies as `LogEntry`s, newest first, filtered by model ids,
        provider, a substring of the messages or the reply (`text`, matched literally) and `since`
        (an ISO 8601 UTC time, see `since_iso`). Raises LogUnusable when the log cannot be read.
        """
        from .costs import cost_of
        from .types import Usage

        where, params = [], []
        models = list(models)
        if models:
            where.append(f"model IN ({', '.join('?' * len(models))})")
            params += models
        if provider:
            where.append("provider = ?")
            params.append(provider)
        if text:
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(messages LIKE ? ESCAPE '\\' OR text LIKE ? ESCAPE '\\')")
            params += [pattern, pattern]
        if since:
            where.append("created >= ?")
            params.append(since)
        sql = ("SELECT id, created, model, provider, endpoint, messages, text, finish_reason,"
               " input_tokens, output_tokens, time_to_first_token, duration, error, notebook,"
               " cell, request_hash FROM replies")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY rowid DESC LIMIT ?"
        rows = self._read(sql, [*params, n])
        out = []
        for r in rows:
            messages = json.loads(r[5])
            prompt = next((_text(m) for m in reversed(messages) if m["role"] == "user"), "")
            out.append(LogEntry(
                id=r[0], created=_dt.datetime.fromisoformat(r[1]), model=r[2], provider=r[3],
                endpoint=r[4], prompt=prompt, text=r[6], finish_reason=r[7],
                input_tokens=r[8], output_tokens=r[9], cost=cost_of(r[2], Usage(r[8], r[9])),
                time_to_first_token=r[10], duration=r[11], error=r[12], notebook=r[13],
                cell=r[14], request_hash=r[15],
            ))
        return out

    def usage(self, session: str | None = None) -> list[tuple[str, int, int, int]]:
        """(model, requests, input tokens, output tokens) per model, over the whole log or one
        session; failed and interrupted requests count, their unknown tokens as 0."""
        sql = ("SELECT model, COUNT(*), COALESCE(SUM(input_tokens), 0),"
               " COALESCE(SUM(output_tokens), 0) FROM replies")
        params: list[Any] = []
        if session is not None:
            sql += " WHERE session = ?"
            params.append(session)
        rows = self._read(sql + " GROUP BY model ORDER BY model", params)
        return [(str(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows]


def _reason(exc: BaseException) -> str:
    return exc.message if isinstance(exc, NbchatError) else f"{type(exc).__name__}: {exc}"


def _is_busy(exc: BaseException) -> bool:
    text = str(exc).lower()
    return type(exc).__name__ == "OperationalError" and ("locked" in text or "busy" in text)


def _text(message: dict[str, Any]) -> str:
    return "".join(p["text"] for p in message.get("content", ()) if p["type"] == "text")


def error_attrs(err: BaseException) -> dict[str, Any]:
    """An error's plain attributes (status, provider, retry_after...), to rebuild it on replay."""
    return {k: v for k, v in vars(err).items()
            if k != "partial_text" and not k.startswith("_")
            and (v is None or isinstance(v, (str, int, float, bool)))}


def encode_events(n_chunks: int, marks: list[tuple[int, Event]],
                  keep: Callable[[ImagePart], str]) -> list[Any]:
    """The event sequence as JSON: a count n for n consecutive text deltas (their text is the
    reply's, cut by the stored lengths), and `["reasoning", text]`, `["refusal", text]`,
    `["tool", name, arguments, id]`, `["image", sha256, mime, url]` or `["done", finish_reason,
    input_tokens, output_tokens]` for the others (`marks`: each with the number of text deltas
    before it)."""
    seq: list[Any] = []
    pos = 0
    for at, ev in marks:
        if at > pos:
            seq.append(at - pos)
            pos = at
        if isinstance(ev, ReasoningDelta):
            seq.append(["reasoning", ev.text])
        elif isinstance(ev, RefusalDelta):
            seq.append(["refusal", ev.text])
        elif isinstance(ev, ToolCallEvent):
            t = ev.tool_call
            seq.append(["tool", t.name, t.arguments, t.id])
        elif isinstance(ev, ImageEvent):
            seq.append(["image", keep(ev.image), ev.image.mime, ev.image.url])
        elif isinstance(ev, Done):
            seq.append(["done", ev.finish_reason, ev.usage.input_tokens, ev.usage.output_tokens])
    if n_chunks > pos:
        seq.append(n_chunks - pos)
    return seq


# ---- the current log -----------------------------------------------------------------------

_current: Log | None = None
_current_lock = threading.Lock()


def default_path() -> str:
    """`<user data dir>/log.db`, the user data dir of "nbchat" as platformdirs gives it."""
    import platformdirs

    return os.path.join(platformdirs.user_data_dir("nbchat", appauthor=False), "log.db")


def log_path() -> str | None:
    """The log's path from `NBCHAT_LOG` (None when it is `off`), else the default."""
    value = os.environ.get("NBCHAT_LOG", "").strip()
    if value.lower() in OFF:
        return None
    return os.path.expanduser(value) if value else default_path()


def current() -> Log | None:
    """The log for the current `NBCHAT_LOG`, or None when logging is off.

    Changing `NBCHAT_LOG` to another path switches logs: the previous one is flushed and
    closed (turning it off and on again keeps it open)."""
    global _current
    path = log_path()
    if path is None:
        return None
    log = _current
    if log is not None and log.path == path:
        return log
    with _current_lock:
        if _current is not None and _current.path != path:
            _current.close()
            _current = None
        if _current is None:
            _current = Log(path)
        return _current


@atexit.register
def _close_at_exit() -> None:
    if _current is not None:
        _current.close()


# ---- the notebook and cell of a request ------------------------------------------------------

#: set by the notebook layer (nbchat.notebook.context): () -> (notebook path, cell id)
where_hook: Callable[[], tuple[str | None, str | None]] | None = None


def where() -> tuple[str | None, str | None]:
    """(notebook, cell) of the code running now, when the notebook layer can tell."""
    hook = where_hook
    if hook is None:
        return None, None
    try:
        return hook()
    except Exception:  # noqa: BLE001 - provenance is best effort
        return None, None


# ---- nbchat.log() --------------------------------------------------------------------------


def log(
    n: int = 20,
    *,
    model: str | None = None,
    provider: str | None = None,
    text: str | None = None,
    since: Any = None,
) -> Any:
    """Recent entries of the local log, newest first.

    `model`: an id or alias (`"local"`, `"cerebras:llama3.1-8b"`); `provider`: a provider
    name; `text`: a case-insensitive substring of the prompt or the reply; `since`: a
    `datetime` (naive means local time), a `date`, a `timedelta` (that long ago) or an ISO
    8601 string. Returns a pandas DataFrame (one row per `LogEntry`, its fields as columns)
    when pandas is installed, else a list of `LogEntry`. An empty result when logging is off.
    Raises `LogUnusable` when the database cannot be read.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        from .errors import BadOption

        raise BadOption("n", "expected a positive number of entries")
    lg = current()
    rows = [] if lg is None else lg.entries(
        n, models=model_ids(model), provider=provider, text=text, since=since_iso(since))
    try:
        import pandas as pd
    except ImportError:
        return rows
    columns = [f.name for f in dataclasses.fields(LogEntry)]
    return pd.DataFrame([dataclasses.astuple(r) for r in rows], columns=columns)


def model_ids(model: str | None) -> list[str]:
    """The full ids a model filter means: itself, and what it resolves to as an alias."""
    if not model:
        return []
    ids = [model]
    try:
        from . import registry

        provider, local = registry.resolve(model)
        ids.append(registry.full_id(provider, local))
    except Exception:  # noqa: BLE001 - a model no provider knows any more may still be logged
        pass
    return list(dict.fromkeys(ids))


def since_iso(since: Any) -> str | None:
    """`since` as the UTC ISO 8601 text the log compares with: a datetime (naive means local
    time), a date (its midnight, local), a timedelta (that long ago) or an ISO 8601 string;
    None stays None. Raises BadOption("since") for anything else.
    """
    if since is None:
        return None
    if isinstance(since, _dt.timedelta):
        since = _dt.datetime.now(_dt.timezone.utc) - since
    elif isinstance(since, str):
        try:
            since = _dt.datetime.fromisoformat(since)
        except ValueError:
            from .errors import BadOption

            raise BadOption("since", f"{since!r} is not an ISO 8601 date or time") from None
    elif isinstance(since, _dt.date) and not isinstance(since, _dt.datetime):
        since = _dt.datetime.combine(since, _dt.time())
    if not isinstance(since, _dt.datetime):
        from .errors import BadOption

        raise BadOption("since", "expected a datetime, date, timedelta or ISO 8601 string")
    if since.tzinfo is None:
        since = since.astimezone()  # naive: local time
    return since.astimezone(_dt.timezone.utc).isoformat(timespec="microseconds")


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema to the newest version, one migration per transaction.

    Raises LogUnusable for a database written by a newer nbchat."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise LogUnusable(
            f"it was written by a newer nbchat (schema version {version}, this one knows "
            f"{len(MIGRATIONS)}); upgrade nbchat"
        )
    while version < len(MIGRATIONS):
        conn.execute("BEGIN IMMEDIATE")  # one process migrates; others wait, then re-read
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < len(MIGRATIONS):
                for statement in _statements(MIGRATIONS[version]):
                    conn.execute(statement)
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _statements(script: str) -> list[str]:
    import sqlite3

    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return [s for s in out if s.strip(" ;\n")]
