"""The tables of `%chat_log` (recent log entries) and `%chat_usage` (the usage ledger).

HTML built only from escaped strings: prompts and replies are untrusted text.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from ..core.costs import Price, cost_of, price_of
from ..core.log import LogEntry
from ..core.types import Usage


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _num(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def money(cost: float | None) -> str:
    """USD with enough digits for a cheap request; "?" when unknown."""
    if cost is None:
        return "?"
    return f"${cost:.4f}" if cost < 100 else f"${cost:,.2f}"


def _html_table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    e = html.escape
    th = "".join(f"<th style='text-align:left'>{e(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td style='text-align:left'>{e(c)}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _text_table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    all_rows = [head, *rows]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in all_rows
    )


@dataclass
class LogTable:
    """Log entries, newest first: when, model, prompt, reply, tokens, time, cost, id."""

    entries: list[LogEntry]
    path: str | None = None  # the log's file; None when logging is off

    HEAD = ("when", "model", "prompt", "reply", "tokens in/out", "seconds", "cost", "id")

    def rows(self) -> list[tuple[str, ...]]:
        """One row of text per entry, in `HEAD`'s order: local time, model, prompt (60 characters)
        and reply or error (80), `in / out` tokens, seconds, cost in USD ("?" when unknown), log id.
        """
        out: list[tuple[str, ...]] = []
        for e in self.entries:
            reply = f"error: {e.error}" if e.error else e.text
            seconds = "" if e.duration is None else f"{e.duration:.2f}"
            out.append((
                e.created.astimezone().strftime("%Y-%m-%d %H:%M:%S"), e.model,
                _short(e.prompt, 60), _short(reply, 80),
                f"{_num(e.input_tokens)} / {_num(e.output_tokens)}", seconds, money(e.cost),
                e.id,
            ))
        return out

    def _note(self) -> str:
        if self.path is None:
            return "The log is off (NBCHAT_LOG=off)."
        return "" if self.entries else f"No entries in {self.path}."

    def _repr_html_(self) -> str:
        note = self._note()
        if note:
            return f"<p>{html.escape(note)}</p>"
        return _html_table(self.HEAD, self.rows())

    def __repr__(self) -> str:
        return self._note() or _text_table(self.HEAD, self.rows())


@dataclass
class UsageRow:
    """One model's use: `requests`, `input_tokens`, `output_tokens` (unknown counts as 0) and,
    for this session only, `replayed` answers (free).
    """

    model: str
    requests: int
    input_tokens: int
    output_tokens: int
    replayed: int | None = None  # session only: answered from the log, free

    @property
    def cost(self) -> float | None:
        """Estimated USD for the row's tokens (`nbchat.core.costs`); None for an unknown price."""
        return cost_of(self.model, Usage(self.input_tokens, self.output_tokens))


def _total(rows: list[UsageRow]) -> str:
    known = [r.cost for r in rows if r.cost is not None]
    unknown = len(known) < len(rows)
    return money(sum(known)) + (" + ?" if unknown else "")


@dataclass
class UsageTable:
    """Per model: requests, tokens and estimated cost, this session and over the whole log."""

    session: list[UsageRow]
    whole: list[UsageRow] | None  # None: the log is off or unreadable
    path: str | None = None
    problem: str | None = None  # why the whole log is not shown
    prices: dict[str, Price | None] = field(default_factory=dict)

    SESSION_HEAD = ("model", "requests", "replayed", "input tokens", "output tokens", "cost")
    LOG_HEAD = ("model", "requests", "input tokens", "output tokens", "cost")
    PRICE_HEAD = ("model", "input $/M", "output $/M", "as of", "source")

    def __post_init__(self) -> None:
        models = {r.model for r in self.session} | {r.model for r in self.whole or []}
        self.prices = {m: price_of(m) for m in sorted(models)}

    def _session_rows(self) -> list[tuple[str, ...]]:
        return [(r.model, _num(r.requests), _num(r.replayed), _num(r.input_tokens),
                 _num(r.output_tokens), money(r.cost)) for r in self.session]

    def _log_rows(self) -> list[tuple[str, ...]]:
        return [(r.model, _num(r.requests), _num(r.input_tokens), _num(r.output_tokens),
                 money(r.cost)) for r in self.whole or []]

    def _price_rows(self) -> list[tuple[str, ...]]:
        return [(m, "?", "?", "", "not in nbchat's price table") if p is None else
                (m, f"{p.input:g}", f"{p.output:g}", p.date, p.source)
                for m, p in self.prices.items()]

    def _sections(self) -> list[tuple[str, tuple[str, ...] | None, list[tuple[str, ...]]]]:
        out: list[tuple[str, tuple[str, ...] | None, list[tuple[str, ...]]]] = []
        title = ("This kernel session: " + _total(self.session) if self.session
                 else "This kernel session: no requests yet")
        out.append((title, self.SESSION_HEAD if self.session else None, self._session_rows()))
        if self.whole is None:
            why = self.problem or "the log is off (NBCHAT_LOG=off)"
            out.append((f"Whole log: not available, {why}", None, []))
        else:
            title = f"Whole log ({self.path}): {_total(self.whole)}"
            out.append((title, self.LOG_HEAD if self.whole else None, self._log_rows()))
        if self.prices:
            out.append(("Prices (estimates; unknown is ?)", self.PRICE_HEAD, self._price_rows()))
        return out

    def _repr_html_(self) -> str:
        parts = []
        for title, head, rows in self._sections():
            parts.append(f"<p><b>{html.escape(title)}</b></p>")
            if head is not None:
                parts.append(_html_table(head, rows))
        return "".join(parts)

    def __repr__(self) -> str:
        return "\n\n".join(title if head is None else f"{title}\n{_text_table(head, rows)}"
                           for title, head, rows in self._sections())
