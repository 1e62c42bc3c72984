"""Model Markdown as sanitized HTML: the one rendering pipeline of the Python surfaces.

Model output is untrusted. A reply is parsed by markdown-it-py (CommonMark, GFM tables,
strikethrough and task lists; math from mdit-py-plugins), rendered to HTML with raw HTML
off, and that HTML is sanitized by nh3 (ammonia) with an allow-list. What the browser parses
is what was checked: no second Markdown parser reads model text.

Rules (the widgets' renderer follows the same ones):
- `$x^2$`, `$$...$$`, `\\(...\\)` and `\\[...\\]` are math; a dollar amount stays text
  (`$100 and $50`: an opening `$` followed by a digit, or a `$` next to a space, opens nothing).
  Math is written out as `\\(...\\)` / `\\[...\\]` in an element the front end's MathJax may
  typeset (class `mathjax_process`); everything else sits in a `mathjax_ignore` container, so
  the page's typesetter never reads dollars in prose. Math using a macro that makes links,
  styles or loads things (`\\href`, `\\style`, `\\bbox`, ...) is shown as code instead.
- Links keep only http(s), mailto and in-page (`#...`) targets; other links lose their target.
- Images from the model never load on their own: a remote image becomes a link to it
  (class `nbchat-image-link`); only inline raster `data:` images are shown.
- Code blocks keep their language as `class="language-..."`.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

#: the container class of rendered Markdown; MathJax 3 (Lab, Notebook 7) and 2 (nbconvert)
#: ignore its text except inside MATH_CLASS elements
CONTAINER_CLASS = "nbchat-md mathjax_ignore tex2jax_ignore"
MATH_CLASS = "mathjax_process tex2jax_process"

#: TeX macros that make links, set styles/classes/ids, load extensions or fetch resources,
#: in MathJax or KaTeX: math using one is shown as code, never typeset
_RISKY_TEX = re.compile(
    r"\\(?:href|url|style|class|cssId|attr|data|bbox|unicode|require|html[A-Za-z]*|"
    r"includegraphics|mmlToken|mathtip|texttip|toggle|csname)(?![A-Za-z])"
)

_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "ul", "ol", "li",
    "pre", "code", "em", "strong", "s", "del", "a", "table", "thead", "tbody", "tr", "th",
    "td", "input", "span", "div", "sub", "img", "details", "summary",
}
_ATTRIBUTES = {
    "a": {"href", "title", "class"},
    "ol": {"start"},
    "th": {"style"},
    "td": {"style"},
    "input": {"checked", "class"},
    "code": {"class"},
    "span": {"class"},
    "div": {"class"},
    "ul": {"class"},
    "li": {"class"},
    "img": {"src", "alt", "class"},
    "pre": {"class"},
    "p": {"class"},
    "table": {"class", "style"},
    "details": {"class"},
}
_CLASSES = {
    "nbchat-md", "nbchat-reply", "nbchat-image-link", "nbchat-error", "nbchat-tool-calls",
    "nbchat-footer", "nbchat-compare-result", "nbchat-compare-table", "nbchat-image",
    "nbchat-math-source",
    "math", "math-display", "mathjax_ignore", "tex2jax_ignore", "mathjax_process",
    "tex2jax_process", "contains-task-list", "task-list-item", "task-list-item-checkbox",
    "nbchat-reasoning", "nbchat-note", "nbchat-status", "nbchat-tool-step", "nbchat-refusal",
}
_LANGUAGE = re.compile(r"language-[A-Za-z0-9_+#.-]{1,40}")
_SAFE_SCHEME = re.compile(r"(?:https?|mailto):", re.I)
_RASTER_DATA = re.compile(r"data:image/(?:png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]*", re.I)


def _attribute_filter(tag: str, attr: str, value: str) -> str | None:
    if attr == "class":
        kept = [c for c in value.split() if c in _CLASSES or (tag == "code" and
                                                                 _LANGUAGE.fullmatch(c))]
        return " ".join(kept) or None
    if attr == "href":
        return value if _SAFE_SCHEME.match(value) or value.startswith("#") else None
    if attr == "src":  # only inline raster images: nothing is fetched
        return value if _RASTER_DATA.fullmatch(value) else None
    if attr == "start":
        return value if value.isdigit() and len(value) <= 9 else None
    return value


def clean(fragment: str) -> str:
    """The allow-list sanitizer: an HTML fragment with only the tags, attributes, classes and
    URLs listed here (links: http(s), mailto and `#...`; images: inline raster `data:` only).
    Script and style elements go with their content. The result is balanced HTML.
    """
    import nh3

    return nh3.clean(
        fragment,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        attribute_filter=_attribute_filter,
        url_schemes={"http", "https", "mailto", "data"},
        url_relative=lambda url: url if url.startswith("#") else None,
        # column widths of the compare table (nbchat.notebook.compare), nothing that fetches
        filter_style_properties={"text-align", "vertical-align", "width", "table-layout"},
        tag_attribute_values={"input": {"type": {"checkbox"}}},
        set_tag_attribute_values={"input": {"disabled": "disabled"}},
        link_rel="noopener noreferrer nofollow",
    )


# ---- markdown-it-py ----------------------------------------------------------------------


_CLOSERS = {"\\(": "\\)", "\\[": "\\]"}


def _math(tokens: Sequence[Token], idx: int, display: bool) -> str:
    tex = tokens[idx].content
    if _RISKY_TEX.search(tex):  # shown as written, as code: no typesetter reads it
        markup = tokens[idx].markup or "$"
        source = markup + tex + _CLOSERS.get(markup, markup)
        return f'<code class="nbchat-math-source">{html.escape(source)}</code>'
    if display:
        if tokens[idx].block:
            return f'<div class="math math-display {MATH_CLASS}">\\[{html.escape(tex)}\\]</div>\n'
        return f'<span class="math math-display {MATH_CLASS}">\\[{html.escape(tex)}\\]</span>'
    return f'<span class="math {MATH_CLASS}">\\({html.escape(tex)}\\)</span>'


def _image(tokens: Sequence[Token], idx: int, options: Any, env: Any, renderer: Any) -> str:
    """A model's image: inline only if it is a raster `data:` URL; otherwise a link to it."""
    token = tokens[idx]
    src = str(token.attrGet("src") or "")
    alt = renderer.renderInlineAsText(token.children or [], options, env)
    if _RASTER_DATA.fullmatch(src):
        return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}">'
    label = html.escape(f"image: {alt}" if alt else "image")
    if not (_SAFE_SCHEME.match(src) and not src.lower().startswith("mailto:")):
        return f"[{label}]"
    return (f'<a class="nbchat-image-link" href="{html.escape(src)}" '
            f'title="Remote image, not loaded: click to open">[{label}]</a>')


def _inline_brackets(state: Any, silent: bool) -> bool:
    r"""`\(...\)` (inline) and `\[...\]` (display) inside a paragraph.

    The closing delimiter is found with `str.find`; when there is none after some position,
    that is remembered for the rest of the block, so unclosed openers stay linear.
    """
    src, pos = state.src, state.pos
    if not src.startswith(("\\(", "\\["), pos):
        return False
    close = "\\)" if src[pos + 1] == "(" else "\\]"
    misses: dict[tuple[str, int], int] = state.__dict__.setdefault("nbchat_no_close", {})
    key = (close, state.posMax)
    if misses.get(key, state.posMax) <= pos:
        return False
    end = src.find(close, pos + 2, state.posMax)
    if end < 0:
        misses[key] = pos
        return False
    if end == pos + 2:
        return False
    if not silent:
        token = state.push("math_inline" if close == "\\)" else "math_inline_double", "math", 0)
        token.content = src[pos + 2:end]
        token.markup = src[pos:pos + 2]
    state.pos = end + 2
    return True


@lru_cache(maxsize=1)
def parser() -> MarkdownIt:
    """The shared parser: CommonMark + GFM tables, strikethrough, task lists, math; raw HTML
    off (shown as text), no typographer, no linkify."""
    from markdown_it import MarkdownIt
    from mdit_py_plugins.dollarmath import dollarmath_plugin
    from mdit_py_plugins.tasklists import tasklists_plugin

    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.use(tasklists_plugin)
    # $...$ / $$...$$ with pandoc's rules: no space inside the dollars, no digit after the
    # opening one or before... so "$100 and $50" is money, not math
    md.use(dollarmath_plugin, allow_labels=False, allow_space=False, allow_digits=False,
           allow_blank_lines=False, double_inline=True)
    md.inline.ruler.before("escape", "nbchat_brackets", _inline_brackets)
    for name in ("math_inline",):
        md.add_render_rule(name, lambda self, t, i, o, e: _math(t, i, False))
    for name in ("math_inline_double", "math_block"):
        md.add_render_rule(name, lambda self, t, i, o, e: _math(t, i, True))
    md.add_render_rule("image", lambda self, t, i, o, e: _image(t, i, o, e, self))
    return md


def render_html(text: str) -> str:
    """Markdown -> sanitized HTML, in a `CONTAINER_CLASS` div. Never raises on any input."""
    body = parser().render(text)
    return clean(f'<div class="{CONTAINER_CLASS}">{body}</div>')


def text_html(text: str, css_class: str = "nbchat-error") -> str:
    """Plain text (an error message) shown as written, in a sanitized paragraph."""
    return clean(f'<p class="{css_class}">{html.escape(text)}</p>')


def markdown_embedding(fragment: str) -> str:
    """Sanitized HTML written into a Markdown document so that any Markdown reader passes it
    through as one raw HTML block: one line (newlines as `&#10;`), starting with `<div`, and
    with `$` and `\\` as character references so no Markdown-side math finder reads them.
    """
    out = clean(fragment).replace("\r", "").replace("\n", "&#10;")
    out = out.replace("$", "&#36;").replace("\\", "&#92;")
    return out if out.startswith("<div") else f"<div>{out}</div>"
