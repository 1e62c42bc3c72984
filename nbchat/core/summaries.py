"""Context: what a named Python object looks like to a model, within a budget of tokens.

`context=` (`%%chat --context df,arr,error,cell:-1`, `ChatPanel(context=...)`) names objects
whose summaries go with the prompt. Only what was named is summarized; nothing else from the
session is read. A summary is text (and, for a matplotlib figure or a PIL image, the image
itself, for models that can see):

- a pandas or polars DataFrame: shape, dtypes, head and tail, `describe()`;
- a pandas Series: length, dtype, head and tail, `describe()`;
- a numpy array: shape, dtype, min / max / mean / std and NaN count (numbers), and a sample;
- a string: its length and, when long, its head and tail with the number of characters left out;
- a list, tuple, set or dict: its length and as many items as fit, with the number left out;
- a matplotlib Figure (or Axes): size, axes and their titles and labels, and the figure as PNG;
- `Described(kind, text)`: text already written by someone else (the notebook layer's last
  error and cell sources);
- anything else: its type and `repr`, cut to fit.

The budget (`context_budget`, tokens, default `DEFAULT_BUDGET`) is shared equally by the named
objects; each summary takes its most detailed form that fits its share, then is cut. Tokens are
estimated here at `CHARS_PER_TOKEN` characters each (a summary is built before the model's
tokenizer is at hand); `nbchat.count` gives the model's own count of the whole request.

Names that are not objects (`"df"`, `"error"`, `"cell:-1"`) are resolved by `resolver`, which the
notebook layer sets (nbchat.notebook.context); outside a notebook, pass `{name: value}`.
"""

from __future__ import annotations

import io
import math
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import BadOption

#: tokens of context when `context_budget` is not given (the local model's window is 2,048)
DEFAULT_BUDGET = 1000
#: characters per token in the estimate (English text and tables with OpenAI-style tokenizers)
CHARS_PER_TOKEN = 4

#: set by the notebook layer: a name (`"df"`, `"error"`, `"cell:3"`, `"In[3]"`) -> its value;
#: raises BadOption for a name it cannot resolve
resolver: Callable[[str], Any] | None = None


@dataclass(frozen=True)
class Described:
    """A context value that is already text: `kind` says what it is ("last error", "cell 3"),
    `text` is sent as is (cut to the budget, keeping its head and its end)."""

    kind: str
    text: str


@dataclass(frozen=True)
class ContextItem:
    """One named object as sent: `name` as the user named it, `kind` (e.g. "pandas DataFrame"),
    `text` (the summary) and `images` (PNG bytes, e.g. a figure)."""

    name: str
    kind: str
    text: str
    images: tuple[bytes, ...] = ()

    def render(self) -> str:
        """The item as it appears in the prompt: a heading, then the summary in a code fence."""
        fence = "````" if "```" in self.text else "```"
        image = " (attached as an image)" if self.images else ""
        return f"### {self.name}: {self.kind}{image}\n{fence}\n{self.text}\n{fence}"


def estimate_tokens(text: str) -> int:
    """Estimated tokens in `text`: `ceil(len / CHARS_PER_TOKEN)`."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def named(value: Any) -> tuple[tuple[str, Any], ...]:
    """The `context=` option's value as (name, value) pairs, names resolved now (the values are
    the objects as they are at the call, not when the request is sent).

    Takes a dict `{name: value}`, a name (str, resolved by `resolver`), or a list or tuple of
    names and dicts. Raises BadOption for anything else, or a name with no resolver (outside a
    notebook) or that the resolver cannot find."""
    items = value if isinstance(value, (list, tuple)) else [value]
    out: list[tuple[str, Any]] = []
    for item in items:
        if isinstance(item, Mapping):
            out += [(str(k), v) for k, v in item.items()]
        elif isinstance(item, str):
            name = item.strip()
            if not name:
                continue
            if resolver is None:
                raise BadOption("context", f"{name!r} names a notebook variable, error or cell, "
                                "but this is not a notebook: pass {'name': value} instead")
            out.append((name, resolver(name)))
        else:
            raise BadOption("context", f"expected names or a {{name: value}} dict, got "
                            f"{type(item).__name__}: pass {{'name': value}}")
    return tuple(out)


def summarize(name: str, value: Any, budget: int) -> ContextItem:
    """The summary of one named object within `budget` tokens (estimated; see the module)."""
    limit = max(budget, 1) * CHARS_PER_TOKEN
    try:
        kind, forms, images = _forms(value)
    except Exception as exc:  # the object's own repr or summary raised: say so, go on
        kind = type(value).__name__
        forms, images = [f"a {kind} object whose summary failed ({type(exc).__name__}: "
                         f"{_short(str(exc), 120)}); nothing more is known about it"], ()
    for text in forms:  # most detailed first
        if len(text) <= limit:
            return ContextItem(name, kind, text, images)
    return ContextItem(name, kind, cut(forms[-1], limit), images)


def summarize_all(pairs: tuple[tuple[str, Any], ...], budget: int | None) -> list[ContextItem]:
    """Every named object, the budget (tokens; None: `DEFAULT_BUDGET`) shared equally."""
    if not pairs:
        return []
    share = (budget or DEFAULT_BUDGET) // len(pairs)
    return [summarize(n, v, share) for n, v in pairs]


def context_text(items: list[ContextItem]) -> str:
    """The context block that goes before the prompt."""
    body = "\n\n".join(i.render() for i in items)
    return f"Context (summaries of what I named):\n\n{body}\n\n"


def cut(text: str, limit: int) -> str:
    """`text` within `limit` characters: its head and its end, with how much was left out."""
    if len(text) <= limit:
        return text
    marker = "\n… [{} characters left out] …\n"
    room = max(limit - len(marker.format(len(text))), 0)
    head, tail = room * 2 // 3, room - room * 2 // 3
    left = len(text) - head - tail
    return text[:head] + marker.format(left) + (text[-tail:] if tail else "")


# ---- one kind of object each -----------------------------------------------------------------


def _forms(value: Any) -> tuple[str, list[str], tuple[bytes, ...]]:
    """(kind, summaries from most to least detailed, images) for a value."""
    if isinstance(value, Described):
        return value.kind, [value.text], ()
    module = type(value).__module__.split(".")[0]
    name = type(value).__name__
    if module == "pandas" and name == "DataFrame":
        return "pandas DataFrame", _pandas_frame(value), ()
    if module == "pandas" and name == "Series":
        return "pandas Series", _pandas_series(value), ()
    if module == "polars" and name == "DataFrame":
        return "polars DataFrame", _polars_frame(value), ()
    if module == "polars" and name == "Series":
        return "polars Series", _polars_series(value), ()
    if module == "numpy" and name == "ndarray":
        return "numpy array", _array(value), ()
    if module == "matplotlib" and hasattr(value, "savefig"):
        return "matplotlib figure", [_figure_text(value)], (_png(value),)
    if module == "matplotlib" and hasattr(value, "get_figure") and hasattr(value, "plot"):
        fig = value.get_figure()
        return "matplotlib axes (its figure)", [_figure_text(fig)], (_png(fig),)
    if module == "PIL" and hasattr(value, "save") and hasattr(value, "size"):
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return "image", [f"image {value.size[0]}x{value.size[1]} ({value.mode})"], \
            (buf.getvalue(),)
    if isinstance(value, str):
        return "string", [f"{len(value):,} characters:\n{value}"], ()
    if isinstance(value, (bytes, bytearray)):
        return type(value).__name__, [f"{len(value):,} bytes: {reprlib.repr(bytes(value))}"], ()
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        return type(value).__name__, _collection(value), ()
    return name, [repr(value)], ()


def _pandas_frame(df: Any) -> list[str]:
    import pandas as pd

    shape = f"shape: {df.shape[0]:,} rows x {df.shape[1]:,} columns"
    dtypes = "dtypes:\n" + df.dtypes.to_string()

    def table(frame: Any) -> str:
        return str(frame.to_string(max_cols=30, max_colwidth=40))

    def describe() -> str:
        try:
            with pd.option_context("display.width", 200):
                return "describe():\n" + table(df.describe(include="all"))
        except ValueError:  # no columns
            return ""

    forms = []
    for n, stats in ((5, True), (3, True), (3, False), (1, False)):
        parts = [shape, dtypes]
        if len(df) <= 2 * n:
            parts.append(f"all {len(df)} rows:\n" + table(df))
        else:
            parts += [f"head({n}):\n" + table(df.head(n)), f"tail({n}):\n" + table(df.tail(n))]
        if stats:
            parts.append(describe())
        forms.append("\n\n".join(p for p in parts if p))
    forms.append(f"{shape}\n\n{dtypes}")
    return forms


def _pandas_series(s: Any) -> list[str]:
    head = f"length: {len(s):,}, dtype: {s.dtype}, name: {s.name!r}"
    forms = []
    for n, stats in ((5, True), (3, False)):
        parts = [head]
        if len(s) <= 2 * n:
            parts.append("values:\n" + s.to_string())
        else:
            parts += [f"head({n}):\n" + s.head(n).to_string(),
                      f"tail({n}):\n" + s.tail(n).to_string()]
        if stats:
            parts.append("describe():\n" + s.describe().to_string())
        forms.append("\n\n".join(parts))
    forms.append(head)
    return forms


def _polars_frame(df: Any) -> list[str]:
    import polars as pl

    shape = f"shape: {df.height:,} rows x {df.width:,} columns"
    dtypes = "dtypes:\n" + "\n".join(f"{c}: {t}" for c, t in df.schema.items())
    forms = []
    with pl.Config(tbl_rows=-1, tbl_cols=30, fmt_str_lengths=40, tbl_width_chars=200):
        for n, stats in ((5, True), (3, True), (3, False), (1, False)):
            parts = [shape, dtypes]
            if df.height <= 2 * n:
                parts.append(f"all {df.height} rows:\n{df}")
            else:
                parts += [f"head({n}):\n{df.head(n)}", f"tail({n}):\n{df.tail(n)}"]
            if stats and df.width:
                parts.append(f"describe():\n{df.describe()}")
            forms.append("\n\n".join(parts))
    forms.append(f"{shape}\n\n{dtypes}")
    return forms


def _polars_series(s: Any) -> list[str]:
    head = f"length: {s.len():,}, dtype: {s.dtype}, name: {s.name!r}"
    return [f"{head}\n\nhead(5): {s.head(5).to_list()}\ntail(5): {s.tail(5).to_list()}",
            head]


def _array(a: Any) -> list[str]:
    import numpy as np

    head = f"shape: {a.shape}, dtype: {a.dtype}, size: {a.size:,}"
    stats = ""
    if a.size and (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        x = a.astype(float) if a.dtype == bool else a
        nans = int(np.isnan(x).sum()) if np.issubdtype(x.dtype, np.floating) else 0
        finite = x[np.isfinite(x)] if np.issubdtype(x.dtype, np.floating) else x
        if finite.size:
            stats = (f"min: {finite.min():.6g}, max: {finite.max():.6g}, "
                     f"mean: {finite.mean():.6g}, std: {finite.std():.6g}, NaN: {nans:,}")
            if a.ndim == 2 and a.shape[1] <= 20 and not np.iscomplexobj(a):
                cols = [f"  column {j}: min {np.nanmin(x[:, j]):.6g}, max "
                        f"{np.nanmax(x[:, j]):.6g}, mean {np.nanmean(x[:, j]):.6g}"
                        for j in range(a.shape[1])] if a.shape[0] else []
                stats += ("\nper column:\n" + "\n".join(cols)) if cols else ""
    forms = []
    for edge in (5, 3, 1):
        sample = np.array2string(a, threshold=4 * edge, edgeitems=edge, max_line_width=100)
        what = "values" if a.size <= 4 * edge else f"sample (first and last {edge} per axis)"
        forms.append("\n\n".join(p for p in (head, stats, f"{what}:\n{sample}") if p))
    forms.append("\n\n".join(p for p in (head, stats) if p))
    return forms


def _collection(c: Any) -> list[str]:
    n = len(c)
    items = list(c.items()) if isinstance(c, dict) else list(c)
    forms = []
    for shown in (50, 20, 10, 5, 0):
        parts = []
        for item in items[:shown]:
            text = (f"{item[0]!r}: {_short(item[1])}" if isinstance(c, dict) else _short(item))
            parts.append(text)
        sep = ", " if all(len(p) <= 40 for p in parts) else "\n"
        more = f"{sep}… and {n - shown:,} more" if n > shown else ""
        body = (sep.join(parts) + more) if parts else ""
        forms.append(f"{n:,} items" + (f":\n{body}" if body else ""))
    return forms


_ITEM = reprlib.Repr()  # an item's repr, bounded before it is built (a huge nested list)
_ITEM.maxstring = _ITEM.maxother = 200
_ITEM.maxlist = _ITEM.maxtuple = _ITEM.maxdict = _ITEM.maxset = 20


def _short(value: Any, width: int = 200) -> str:
    text = _ITEM.repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _figure_text(fig: Any) -> str:
    w, h = fig.get_size_inches()
    lines = [f"size: {w:g} x {h:g} in, {len(fig.axes)} axes"]
    title = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) else ""
    if title:
        lines.append(f"title: {title}")
    for i, ax in enumerate(fig.axes):
        bits = [f"axes {i}"]
        for what, text in (("title", ax.get_title()), ("x", ax.get_xlabel()),
                           ("y", ax.get_ylabel())):
            if text:
                bits.append(f"{what}: {text}")
        n_lines, n_coll = len(ax.get_lines()), len(ax.collections)
        bits.append(f"{n_lines} lines, {n_coll} collections")
        lines.append(", ".join(bits))
    return "\n".join(lines)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return buf.getvalue()
