"""Side-by-side comparison: the same prompt to several models at once, one column each.

`compare()` streams into a live `CompareView` and, when all columns are done, replaces that
output with the static `CompareResult` table, so a saved notebook shows the answers without a
kernel. The result is not shown a second time when `compare(...)` is a cell's last expression.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Iterable, Mapping
from typing import Any

import anywidget
import traitlets

from ..core import registry
from ..core.api import amodels
from ..core.bridge import run_sync
from ..core.conversation import Conversation
from ..core.credentials import hide_key
from ..core.errors import BadOption
from ..core.markdown import clean, render_html, text_html
from ..core.options import parse_settings
from ..core.render import refusal_html, tool_calls_html, tool_step_html, tool_step_text
from ..core.types import ModelInfo, Reply, Status, TextDelta
from . import last_result
from .widgets import STATIC, Batcher, image_data_url, short_error


def stats_of(reply: Reply) -> dict[str, Any]:
    """A reply's numbers for a compare column: `ttft` and `duration` (seconds), `tps` (output
    tokens per second), `input_tokens`, `output_tokens` (None when unknown), `interrupted`,
    `replayed`.
    """
    return {
        "ttft": reply.time_to_first_token,
        "tps": reply.tokens_per_second,
        "input_tokens": reply.usage.input_tokens,
        "output_tokens": reply.usage.output_tokens,
        "duration": reply.duration,
        "interrupted": reply.interrupted,
        "replayed": reply.replayed,
        "failed": reply.error is not None,
    }


def stats_text(reply: Reply) -> str:
    """A reply's numbers as one line: `first token X.XX s · X.X tok/s · N in / M out tokens ·
    X.XX s total`, each part only when known, plus `interrupted` and `replayed` when true.
    A failed reply says `failed after X.XX s` instead of a total.
    """
    bits = []
    if reply.time_to_first_token is not None:
        bits.append(f"first token {reply.time_to_first_token:.2f} s")
    if reply.tokens_per_second is not None:
        bits.append(f"{reply.tokens_per_second:.1f} tok/s")
    u = reply.usage
    if u.input_tokens is not None or u.output_tokens is not None:
        bits.append(f"{u.input_tokens if u.input_tokens is not None else '?'} in / "
                    f"{u.output_tokens if u.output_tokens is not None else '?'} out tokens")
    if reply.error is not None:
        bits.append(f"failed after {reply.duration or 0.0:.2f} s")
    elif reply.duration is not None:
        bits.append(f"{reply.duration:.2f} s total")
    if reply.interrupted:
        bits.append("interrupted")
    if reply.replayed:
        bits.append("replayed")
    return " · ".join(bits)


class CompareResult(dict[str, Reply]):
    """Model id -> Reply, shown as a static table (sanitized HTML) that saves with the notebook."""

    def __init__(self, replies: Mapping[str, Reply] = (), prompt: str = "") -> None:  # type: ignore[assignment]
        super().__init__(replies)
        self.prompt = prompt
        self._shown_in: int | None = None  # the execution count of the cell that showed it

    def __missing__(self, key: str) -> Reply:
        try:
            provider, local = registry.resolve(key)
        except Exception:
            raise KeyError(key) from None
        full = registry.full_id(provider, local)
        if full in self and full != key:
            return self[full]
        raise KeyError(key)

    @property
    def errors(self) -> dict[str, BaseException]:
        """Model id -> the error of each model that failed (empty when all succeeded)."""
        return {k: r.error for k, r in self.items() if r.error is not None}

    def _repr_html_(self) -> str:
        """One column per model; each reply is rendered and sanitized on its own (so one
        cannot change how the next is read), then the whole table is sanitized again."""
        width = f"width:{100 / max(1, len(self)):.3f}%"
        head = "".join(f"<th style='text-align:left;{width}'>{html.escape(k)}</th>" for k in self)
        cells, stats = [], []
        for r in self.values():
            body = "".join(tool_step_html(step) for step in r.steps)  # what ran, collapsed
            body += render_html(r.text) if r.text else ""
            if r.tool_calls:  # calls left for the caller (schema-only tools)
                body += tool_calls_html(r)
            if r.refusal:
                body += refusal_html(r.refusal)
            if r.error is not None:
                body += text_html(f"Error: {short_error(r.error)}")
            for part in r.image_parts:
                src = html.escape(image_data_url(part), quote=True)
                body += f"<p><img class='nbchat-image' alt='image' src='{src}'></p>"
            top = f"text-align:left;vertical-align:top;{width}"
            cells.append(f"<td style='{top}'>{clean(body)}</td>")
            small = html.escape(stats_text(r))
            stats.append(f"<td style='text-align:left'><sub>{small}</sub></td>")
        prompt = (f"<p><strong>Prompt:</strong> {html.escape(self.prompt)}</p>"
                  if self.prompt else "")
        return clean(
            f"<div class='nbchat-compare-result'>{prompt}"
            "<table class='nbchat-compare-table' style='table-layout:fixed;width:100%'>"
            f"<thead><tr>{head}</tr></thead>"
            f"<tbody><tr>{''.join(cells)}</tr><tr>{''.join(stats)}</tr></tbody></table></div>"
        )

    def _text(self) -> str:
        out = [f"Prompt: {self.prompt}"] if self.prompt else []
        for k, r in self.items():
            steps = "".join("[tool] {} -> {}\n".format(*tool_step_text(s)) for s in r.steps)
            body = steps + r.text
            if r.refusal:
                body += f"\nRefused: {r.refusal}"
            if r.error is not None:
                body += f"\nError: {short_error(r.error)}"
            out.append(f"== {k} ==\n{body.strip()}\n({stats_text(r)})")
        return "\n\n".join(out)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """Sanitized `text/html` and plain text; no `text/markdown` (model text would meet a
        second Markdown parser)."""
        return {"text/html": self._repr_html_(), "text/plain": self._text()}

    def metadata(self) -> dict[str, Any]:
        """Output metadata: each reply's provenance under "nbchat", by model id."""
        return {"nbchat": {k: r.provenance for k, r in self.items()}}

    def _ipython_display_(self) -> None:
        ip = _shell()
        if ip is not None and self._shown_in is not None and self._shown_in == ip.execution_count:
            self._shown_in = None  # compare() already put this table in the cell's output
            return
        from IPython.display import display

        display(self._repr_mimebundle_(), raw=True, metadata=self.metadata())

    def __repr__(self) -> str:
        return f"CompareResult({', '.join(self)})"


def _shell() -> Any:
    from IPython import get_ipython

    return get_ipython()


def _in_kernel() -> bool:
    ip = _shell()
    return ip is not None and getattr(ip, "kernel", None) is not None


def _split(models: Any) -> list[Any]:
    if isinstance(models, (str, ModelInfo)):
        return [m.strip() for m in str(models).split(",") if m.strip()]
    return list(models)


def _resolve_ids(models: list[Any]) -> list[str]:
    ids: list[str] = []
    for m in models:
        if isinstance(m, ModelInfo):
            ids.append(m.id)
        elif isinstance(m, str):
            provider, local = registry.resolve(m)  # unknown ids fail here, before any request
            ids.append(registry.full_id(provider, local))
        else:
            raise BadOption("models", f"expected model ids, got {type(m).__name__}")
    ids = list(dict.fromkeys(ids))
    if not ids:
        raise BadOption("models", "no models to compare: give ids like ['local', 'cerebras:...']")
    return ids


async def expand_models(models: Any, *, base_url: str | None = None,
                        api_key: Any = None) -> list[str]:
    """Ids from a list of ids / ModelInfo, a comma-separated string, or "provider:*" (every
    model the provider lists; at `base_url` with `api_key` when given)."""
    items: list[Any] = []
    for m in _split(models):
        if isinstance(m, str) and m.endswith(":*"):
            items += await amodels(m[:-2], base_url=base_url, api_key=api_key)
        else:
            items.append(m)
    return _resolve_ids(items)


class CompareView(anywidget.AnyWidget):
    """One column per model; `await view.arun(prompt)` streams all of them concurrently."""

    _esm = STATIC / "compare.js"
    _css = STATIC / "nbchat.css"

    prompt = traitlets.Unicode("").tag(sync=True)
    #: per column: model, state (waiting/streaming/done/error), text, stats, error, images
    columns = traitlets.List(traitlets.Dict()).tag(sync=True)

    def __init__(self, models: Iterable[str | ModelInfo] | str = (), **options: Any) -> None:
        hide_key(options)
        # validated once, here: bad options fail before anything is shown, and every
        # column's Conversation starts from these settings without parsing them again
        self.settings = parse_settings(options)
        super().__init__()
        self.model_ids: list[str] = []
        items = _split(models)
        if any(isinstance(m, str) and m.endswith(":*") for m in items):
            items = run_sync(expand_models(  # needs the providers' live listings
                items, base_url=self.settings.base_url, api_key=self.settings.api_key))
        if items:
            self._set_models(_resolve_ids(items))

    def _set_models(self, ids: list[str]) -> None:
        self.model_ids = ids
        self.columns = [{"model": m, "state": "waiting", "text": ""} for m in ids]

    def _update(self, i: int, **fields: Any) -> None:
        cols = list(self.columns)
        cols[i] = {**cols[i], **fields}
        self.columns = cols

    async def arun(self, prompt: str, models: Any = None) -> CompareResult:
        """Send `prompt` to every column's model at once (or to `models`, which replace the columns)
        and return the `CompareResult` in column order, also kept as `nbchat.last`.

        A model that fails shows its error in its column and in its `Reply.error`; it does not stop
        the others. Raises BadOption when there are no models, UnknownModel for an unknown id.
        """
        if models is not None:
            self.model_ids = await expand_models(models, base_url=self.settings.base_url,
                                                 api_key=self.settings.api_key)
        if not self.model_ids:
            raise BadOption("models", "no models to compare: give ids like ['local', 'nvidia:...']")
        self.prompt = prompt if isinstance(prompt, str) else ""
        self._set_models(self.model_ids)
        batcher = Batcher(lambda b: self.send({"type": "delta", "cols": b}))
        replies = await asyncio.gather(
            *(self._one(i, m, prompt, batcher) for i, m in enumerate(self.model_ids))
        )
        batcher.flush()
        result = CompareResult(dict(zip(self.model_ids, replies, strict=True)), self.prompt)
        last_result.remember(result)
        return result

    def run(self, prompt: str) -> CompareResult:
        """`arun`, from synchronous code (through the sync bridge)."""
        return run_sync(self.arun(prompt))

    async def _one(self, i: int, model: str, prompt: Any, batcher: Batcher) -> Reply:
        turn = None
        try:
            turn = Conversation(model=model, settings=self.settings).turn(prompt)
            async for ev in turn.events(errors_as_events=True):
                if isinstance(ev, TextDelta):
                    if self.columns[i]["state"] == "waiting":
                        self._update(i, state="streaming")
                    batcher.add(str(i), ev.text)
                elif isinstance(ev, Status):
                    batcher.flush()  # the text before a pause, then what it waits for
                    self.send({"type": "status", "col": i, "text": ev.message})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one failing model must not stop the others
            reply = turn.reply if turn is not None else Reply(model=model)
            reply.error = exc
        else:
            reply = turn.reply
        batcher.flush()
        self._update(
            i,
            state="error" if reply.error is not None else "done",
            text=reply.text,
            stats=stats_of(reply),
            error=short_error(reply.error) if reply.error is not None else None,
            images=[image_data_url(p) for p in reply.image_parts],
        )
        return reply


def _show(view: CompareView) -> Any:
    if not _in_kernel():
        return None
    from IPython.display import display

    return display(view, display_id=True)


def _finish(view: CompareView, handle: Any, result: CompareResult | None) -> None:
    """Replace the live view with the static table (what arrived so far, if interrupted)."""
    if handle is None:
        return
    if result is None:
        partial = {c["model"]: Reply(model=c["model"], text=c.get("text", ""),
                                     interrupted=c.get("state") != "done")
                   for c in view.columns}
        handle.update(CompareResult(partial)._repr_mimebundle_(), raw=True)
    else:
        handle.update(result._repr_mimebundle_(), raw=True, metadata=result.metadata())
        ip = _shell()
        result._shown_in = ip.execution_count if ip is not None else None
    view.close()


async def acompare(models: Any, prompt: Any, **options: Any) -> CompareResult:
    """`compare`, for async code: send `prompt` to every model at once; in a notebook, stream
    them side by side. Same arguments, result and errors as `compare`."""
    hide_key(options)
    view = CompareView(await expand_models(models, base_url=options.get("base_url"),
                                           api_key=options.get("api_key")), **options)
    handle = _show(view)
    try:
        result = await view.arun(prompt)
    except BaseException:
        _finish(view, handle, None)
        raise
    _finish(view, handle, result)
    return result


def compare(models: Any, prompt: Any, **options: Any) -> CompareResult:
    """Send the same prompt to several models at once and show their replies side by side.

    - `models`: model ids as a list (`["local", "cerebras:llama3.1-8b"]`), a comma-separated
      string (`"local,nvidia:meta/llama-3.1-8b-instruct"`), `ModelInfo`s, or `"provider:*"` for
      every model a provider lists;
    - `prompt`: a string or a list of messages (what `nbchat.chat` takes);
    - `options`: any nbchat option for every model (`temperature=0`, `max_tokens=200`,
      `seed=1`, ...; see `nbchat.options()`), validated once before anything is sent.

    In a notebook the columns stream live (rendered Markdown, time to first token, tokens per
    second), then the output becomes a static table of the same rendering that saves with the
    notebook. Returns a `CompareResult`: a dict of model id -> `Reply` (also `nbchat.last`);
    `.errors` holds the models that failed, each shown in its own column without stopping the
    others. Raises `UnknownModel` for an unknown id and `BadOption` for bad options, before any
    request. `acompare` is the async twin; `%%chat -m A,B` does the same from a cell.

    Keys come from `api_key=...`, `%config ChatMagics.api_keys = {"cerebras": ...}` or the
    provider's environment variable (CEREBRAS_API_KEY, NVIDIA_API_KEY, REPLICATE_API_TOKEN,
    ANYSCALE_API_KEY, OPENAI_API_KEY); the local model needs none.

    Example::

        import nbchat
        result = nbchat.compare(["local", "cerebras:llama3.1-8b"], "Name three primes.",
                                temperature=0)
        result["local"].text
    """
    hide_key(options)
    if not _in_kernel():
        return run_sync(acompare(models, prompt, **options))
    view = CompareView(run_sync(expand_models(models, base_url=options.get("base_url"),
                                              api_key=options.get("api_key"))), **options)
    handle = _show(view)
    try:
        result = run_sync(view.arun(prompt))
    except BaseException:
        _finish(view, handle, None)
        raise
    _finish(view, handle, result)
    return result


