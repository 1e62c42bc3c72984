"""The `%models` table: HTML built only from escaped strings, never a key, and sanitized.

A provider that fails to import or to list its models does not hide the others: its row
says briefly what went wrong.
"""

from __future__ import annotations

import asyncio
import html
from dataclasses import dataclass, field

from ..core.types import ModelInfo

_CAPS = (("stream", "stream"), ("tools", "tools"), ("json", "JSON"), ("vision", "vision"),
         ("image_generation", "image generation"))


@dataclass
class ModelTable:
    """The `%models` table: one row per model (id, provider, capabilities, key status), and
    `problems` (provider -> short reason) for providers that could not be listed. Shows as HTML
    in a notebook and as aligned text in a terminal; it never holds a key.
    """

    models: list[ModelInfo]
    problems: dict[str, str] = field(default_factory=dict)  # provider -> short reason

    @staticmethod
    def capabilities(m: ModelInfo) -> str:
        """The model's capabilities, comma-separated (`stream, tools, JSON, vision, ...`); one
        that is unknown (None: a listing that does not say) is shown as `tools?`, `vision?`."""
        return ", ".join(label if getattr(m, attr) else f"{label}?"
                         for attr, label in _CAPS if getattr(m, attr) is not False)

    @staticmethod
    def key_status(m: ModelInfo) -> str:
        """`✅` when the key variable is set, `❌ set <VAR>` when it is not, and `✅ no key needed`
        for a model without a key variable.
        """
        if m.key_set:
            return "✅"
        if m.key_env:
            return f"❌ set {m.key_env}"
        return "✅ no key needed"

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(id, provider, capabilities, key status) per model, in listing order."""
        return [(m.id, m.provider, self.capabilities(m), self.key_status(m)) for m in self.models]

    def _repr_html_(self) -> str:
        e = html.escape
        head = "".join(f"<th>{h}</th>" for h in ("model", "provider", "capabilities", "key"))
        body = "".join(
            "<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in self.rows()
        )
        notes = "".join(
            f"<li>{e(name)}: {e(reason)}</li>" for name, reason in self.problems.items()
        )
        out = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        if notes:
            out += f"<p>Not listed:</p><ul>{notes}</ul>"
        from ..core.markdown import clean

        return clean(out)  # ids and reasons come from servers: the one sanitizer checks them

    def __repr__(self) -> str:
        rows = [("model", "provider", "capabilities", "key"), *self.rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        lines += [f"not listed: {name}: {reason}" for name, reason in self.problems.items()]
        return "\n".join(lines)


def _reason(exc: BaseException) -> str:
    from ..core.errors import redact

    if isinstance(exc, ImportError):
        missing = getattr(exc, "name", None)
        return f"cannot be imported ({missing or exc})"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return redact(text)[:200]


async def _gather(names: list[str], strict: bool) -> ModelTable:
    from ..core import registry
    from ..core.api import amodels

    async def one(name: str) -> tuple[str, list[ModelInfo] | BaseException]:
        try:
            return name, await amodels(name)
        except Exception as exc:
            if strict:
                if isinstance(exc, ImportError):
                    from ..core.errors import NbchatError

                    raise NbchatError(f"provider {name!r} {_reason(exc)}") from None
                raise
            try:  # the live listing failed: the capability table still helps
                return name, registry.get_provider(name).known_models()
            except Exception:
                return name, exc

    table = ModelTable([])
    for name, result in await asyncio.gather(*(one(n) for n in names)):
        if isinstance(result, BaseException):
            table.problems[name] = _reason(result)
        else:
            table.models += result
    return table


def model_table(provider: str | None = None) -> ModelTable:
    """Models of one provider (its errors raised) or of all (failures noted per provider)."""
    from ..core import registry
    from ..core.bridge import run_sync

    names = [provider] if provider else registry.provider_names()
    return run_sync(_gather(names, strict=provider is not None))
