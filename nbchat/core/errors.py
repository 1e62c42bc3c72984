"""Errors, each with a message that says what to do next.

    NbchatError
    ├── UsageError             bad input from the user
    │   ├── UnknownModel       an id no provider knows (with close matches)
    │   ├── UnknownOption      a keyword nbchat does not take
    │   ├── BadOption          a keyword with a bad value
    │   ├── UnsupportedInput   e.g. images sent to a model that cannot see
    │   └── CostLimit          the estimated cost would exceed `max_cost`
    ├── MissingKey             the provider's key is not set (argument, %config or variable)
    ├── ProviderUnavailable    a plugin provider that cannot be loaded (the reason inside)
    ├── ProviderError          the provider answered with an error (status, message)
    │   ├── AuthenticationError  401/403
    │   ├── RateLimited          429 (retry_after)
    │   ├── ContextTooLong       the prompt does not fit
    │   └── ServiceGone          an endpoint that no longer exists (Anyscale's shared URL)
    ├── ConnectionFailed       could not reach the host, the connection dropped, or it stalled
    │   └── TimedOut             a limit of `Timeouts` ran out (which one: `.limit`, `.seconds`)
    ├── ProtocolError          the peer sent something we cannot parse (malformed SSE, HTML)
    ├── ReplayMiss             strict replay: no logged reply for this request
    ├── ReplyNotJSON           reply.json on a reply that is not JSON (also a ValueError)
    ├── SchemaMismatch         a reply that does not fit `schema=`, retries spent (`.raw`)
    └── ToolStepLimit          the model still called tools after `max_tool_steps` steps

A stopped stream is not an error: its `Reply` is kept with `interrupted=True`.

Every error raised by a turn carries what arrived before it: `partial_text` (the text so far,
"" if none) and `reply` (the `Reply` as it stood). A provider's message longer than
`MESSAGE_LIMIT` characters is shown as its head; the whole text stays on `full_message`
(and a provider's body on `ProviderError.body`).

A message never contains an API key: `redact()` is applied to every provider-supplied text,
before it is cut.
"""

from __future__ import annotations

import difflib
import re
import traceback
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .types import Reply

#: characters of a message shown; the rest is kept on the exception
MESSAGE_LIMIT = 600

_KEY_PATTERNS = [
    re.compile(r"nvapi-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"r8_[A-Za-z0-9]{6,}"),
    re.compile(r"csk-[A-Za-z0-9]{6,}"),
    re.compile(r"esecret_[A-Za-z0-9]{6,}"),
    re.compile(r"sk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-\.]{6,}"),
]
_known_secrets: set[str] = set()


def remember_secret(secret: str | None) -> None:
    """Register a key so that it is scrubbed from every message, whatever its shape."""
    if secret and len(secret) >= 4:
        _known_secrets.add(secret)


def redact(text: str) -> str:
    """`text` with every remembered key (`remember_secret`) and every key-shaped token
    (`nvapi-`, `r8_`, `csk-`, `esecret_`, `sk-`, `Bearer ...`) replaced by `***`.
    """
    text = scrub_known(text)
    for pat in _KEY_PATTERNS:
        text = pat.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    return text


def scrub_known(text: str) -> str:
    """`text` with every remembered key (`remember_secret`) replaced by `***`; unlike `redact`,
    key-shaped text that is not a key nbchat was given stays (it may be the user's data)."""
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class KeyScrubber:
    """Feed a stream's text chunks in order; every remembered key (`remember_secret`) in them
    comes out as `***`, even when a key is split across chunks.

    A chunk's end that could be the start of a key (at least `HOLD` of its characters) is held
    back until the next chunk (or `flush`) says whether it is one; a shorter start is let
    through and, when the next chunk goes on with the rest of the key, that rest comes out as
    `***` (at most `HOLD - 1` characters of a key's head are shown: never enough to use). So
    ordinary text is never held back, and a stream that breaks loses nothing it showed.

    A server that echoes request headers, or a model that repeats its prompt, can send the key
    back inside the reply's text; this keeps it out of the output, the history and the log.
    """

    HOLD = 4
    __slots__ = ("held", "shown")

    def __init__(self) -> None:
        self.held = ""  # the end of what came, not let through: it may be a key's start
        self.shown = ""  # the start of that possible key already let through (< HOLD chars)

    def feed(self, text: str) -> str:
        """The next chunk with keys scrubbed (the same object when nothing changed)."""
        secrets = _known_secrets
        if not secrets:
            if self.held:
                text, self.held, self.shown = self.held + text, "", ""
            return text
        shown = self.shown
        work = shown + self.held + text if shown or self.held else text
        pos = len(shown)  # work[:pos] has been let through
        lo = 0
        out: list[str] = []
        while True:  # whole keys, in order, including one whose start was let through
            best: tuple[int, str] | None = None
            for secret in secrets:
                j = work.find(secret, lo)
                if j != -1 and (best is None or j < best[0]):
                    best = (j, secret)
            if best is None:
                break
            j, secret = best
            if j > pos:
                out.append(work[pos:j])
            out.append("***")
            pos = lo = j + len(secret)
        n, start = len(work), None
        for secret in secrets:  # the longest end of work that begins a key
            i = work.find(secret[0], max(lo, n - len(secret) + 1))
            while i != -1:
                if secret.startswith(work[i:]):
                    start = i if start is None else min(start, i)
                    break
                i = work.find(secret[0], i + 1)
        if start is None:
            out.append(work[pos:])
            self.held = self.shown = ""
        else:
            # a start long enough to hold is held whole; a shorter one goes out as it comes
            cut = max(pos, start if n - start >= self.HOLD else n)
            out.append(work[pos:cut])
            self.shown, self.held = work[start:cut], work[cut:]
        result = "".join(out)
        return text if result == text else result

    def flush(self) -> str:
        """At the end of the stream: what was held back (it did not turn out to be a key)."""
        held, self.held, self.shown = self.held, "", ""
        return held


def shorten(text: str, limit: int = MESSAGE_LIMIT, where: str = "full_message") -> str:
    """`text` cut to about `limit` characters, saying how much was left out and where it is."""
    if len(text) <= limit:
        return text
    rest = len(text) - limit
    return f"{text[:limit].rstrip()} … [{rest:,} more characters in the error's .{where}]"


class NbchatError(Exception):
    """Base of every nbchat error.

    `partial_text` and `reply` are set by the turn that raised it (see the module docstring).
    """

    partial_text: str = ""
    reply: Reply | None = None

    def __init__(self, message: str = "") -> None:
        text = redact(message)
        self.full_message = text
        super().__init__(shorten(text))

    @property
    def message(self) -> str:
        """The message as shown: redacted, cut to about `MESSAGE_LIMIT` (600) characters; the
        whole text is `full_message`.
        """
        return str(self.args[0]) if self.args else ""

    def append(self, note: str) -> None:
        """Add `note` (e.g. how many times nbchat tried) at the end of the message."""
        self.full_message = f"{self.full_message} {note}"
        self.args = (f"{self.message} {note}", *self.args[1:])


class UsageError(NbchatError, ValueError):
    """Bad input from the user, found before any I/O (also a ValueError)."""


class UnknownModel(UsageError):
    """A model id or provider prefix that no provider knows.

    `model` is the id as given; `matches` holds up to three close known ids, named in the message.
    """

    def __init__(self, model: str, candidates: Iterable[str] = ()) -> None:
        self.model = model
        self.matches = close_matches(model, candidates)
        hint = f" Did you mean: {', '.join(self.matches)}?" if self.matches else ""
        super().__init__(
            f"unknown model {model!r}.{hint} Run %models or nbchat.models() to list them."
        )


class UnknownOption(UsageError):
    """A keyword nbchat does not take; `name` is it, and the message suggests the closest."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        matches = close_matches(name, known)
        hint = f" Did you mean {matches[0]!r}?" if matches else ""
        super().__init__(f"unknown option {name!r}.{hint} Options: {', '.join(sorted(known))}.")


class BadOption(UsageError):
    """An option keyword with a bad value; `name` is the option, the message says what is wrong."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        super().__init__(f"bad value for option {name!r}: {problem}")


class UnsupportedInput(UsageError):
    """Input the chosen model or provider cannot take, e.g. images to a text-only model, too
    many or too large images, a tool choice the local model cannot honour.
    """


class CostLimit(UsageError):
    """The estimated cost of a request (with what its thread spent) exceeds `max_cost`."""


class MissingKey(NbchatError):
    """The provider needs a key and none was given (argument, `%config` or variable); `env`
    names the variable to set.
    """

    def __init__(self, provider: str, env: str) -> None:
        self.provider = provider
        self.env = env
        super().__init__(
            f"no API key for {provider}: set the environment variable {env} "
            f"(or pass api_key=...)."
        )


class ProviderUnavailable(NbchatError):
    """A provider plugin that cannot be imported, is not a `Provider`, or fails to start."""


class ProviderError(NbchatError):
    """The provider said no. `body` is its whole answer (redacted) when the message is a head."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        provider: str = "",
        partial_text: str = "",
        body: str | None = None,
    ) -> None:
        self.status = status
        self.provider = provider
        self.partial_text = partial_text
        self.body = redact(body) if body is not None else None
        where = f"{provider} " if provider else ""
        code = f"HTTP {status}: " if status else ""
        super().__init__(f"{where}error: {code}{message}")


class AuthenticationError(ProviderError):
    """HTTP 401 or 403: the key is missing, wrong or lacks access."""


class RateLimited(ProviderError):
    """HTTP 429 (or a mid-stream rate-limit record) after the retries; `retry_after` is the
    wait the provider asked for, in seconds (None when it gave none).
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)


class ContextTooLong(ProviderError):
    """The prompt and history (plus max_tokens) do not fit the model's context window."""


class ServiceGone(ProviderError):
    """An endpoint that no longer exists: Anyscale's shared service, which ended on
    2024-08-01 and now answers with an HTML notice.
    """


class ConnectionFailed(NbchatError):
    """The host could not be reached, the connection dropped, or it stalled (`TimedOut`, a
    subclass, names the limit); the message names the host and what to check.
    """


class TimedOut(ConnectionFailed):
    """A wait ran past one of the limits of `nbchat.core.waits.Timeouts`.

    `limit` is its name ("connect", "first_byte", "idle" or "total"); `seconds` its value."""

    def __init__(self, message: str, *, limit: str, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        super().__init__(message)


class ProtocolError(NbchatError):
    """The peer sent something nbchat cannot parse: malformed SSE or JSON, an HTML page where
    JSON was expected, a response missing a required field.
    """


class ReplayMiss(NbchatError):
    """Strict replay (`NBCHAT_REPLAY=strict`) found no logged reply for a request."""


class ReplyNotJSON(NbchatError, ValueError):
    """`Reply.json` on a reply whose text is not JSON (also a ValueError)."""


class SchemaMismatch(NbchatError, ValueError):
    """The reply did not fit `schema=` after `schema_retries` retries (also a ValueError).

    `raw` is the last reply's text; `errors` the validation message of each attempt."""

    def __init__(self, message: str, raw: str = "", errors: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.raw = raw
        self.errors = errors


class ToolStepLimit(NbchatError):
    """The model asked for more tool calls after `max_tool_steps` rounds of them; the reply
    keeps what arrived (`reply.steps`, the unrun `reply.tool_calls`)."""


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Up to `n` candidates close to `word` (difflib ratio >= 0.5); for a `provider:model`
    word, by the model part alone; failing both, candidates containing `word` (any case).
    """
    cands = list(dict.fromkeys(candidates))
    found = difflib.get_close_matches(word, cands, n=n, cutoff=0.5)
    if not found and ":" in word:  # match on the model part alone
        tail = word.split(":", 1)[1]
        by_tail = {c.split(":", 1)[-1]: c for c in cands}
        near = difflib.get_close_matches(tail, list(by_tail), n=n, cutoff=0.5)
        found = [by_tail[m] for m in near]
    if not found:
        found = [c for c in cands if word.lower() in c.lower()][:n]
    return found


def forget_locals(exc: BaseException) -> None:
    """Clear the locals of the finished frames in `exc`'s traceback and in those of the
    exceptions it was raised from or during (`__cause__`, `__context__`: an httpx error kept
    under a `raise ... from None` still holds httpcore's frames, whose `request` carries the
    Authorization header). Frames still running keep theirs."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)
        todo += [e.__cause__, e.__context__]
