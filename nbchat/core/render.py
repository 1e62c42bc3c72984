"""Model output made safe to show as Markdown, and the one-line footer under a reply.

Model output is untrusted. `safe_markdown` keeps code blocks and code spans as they are
(Markdown shows them literally) and, everywhere else:
- escapes `<` and `>`, so raw HTML (`<script>`, `<img onerror=...>`) shows as text;
- turns images into plain links (`![a](u)` -> `!​[a](u)`), so nothing is fetched until clicked;
- keeps only http(s), mailto and in-page link targets; `javascript:` and friends become `#`.

Where a Markdown renderer might read the text differently from us, we err towards escaping:
a code span whose content could do harm as prose (`<`, a link, a line break) is written as
`<code>` with its markup characters escaped; a fence counts only if it opens a valid code block,
and an indented fence ends at the first line indented less (a list item around it ended).
"""

from __future__ import annotations

import base64
import html
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .types import Reply

_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)")
# a backtick run closed by a run of the same length, within one paragraph
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)((?:(?!\n[ \t]*\n).)+?)(?<!`)\1(?!`)", re.S)
_RISKY_CODE = re.compile(r"[<>\n]|\]\(|!\[")
# what Markdown or HTML could read as markup inside `<code>`; intraword `_` cannot emphasise
_CODE_MARKUP = re.compile(r"[&<>\"'\[\]\\`*~]|(?<!\w)_|_(?!\w)")
_LINK_TARGET = re.compile(r"\]\(\s*(<[^>]*>|[^)]*)")
_REF_DEF = re.compile(r"^( {0,3}\[[^\]]+\]:\s*)(\S+)", re.M)
_SAFE_SCHEME = re.compile(r"^(https?:|mailto:|#)", re.I)
_CONTROL = re.compile(r"[\x00-\x20\x7f]+")


def _safe_target(target: str) -> str:
    raw = target[1:-1] if target.startswith("<") and target.endswith(">") else target
    plain = _CONTROL.sub("", html.unescape(raw.replace("\\", "")))
    if _SAFE_SCHEME.match(plain) or (plain and ":" not in plain.split("/")[0]):
        return target
    return "#"


def _escape_prose(text: str) -> str:
    text = text.replace("<", "&lt;").replace(">", "&gt;")
    text = text.replace("![", "!\u200b[")
    text = _LINK_TARGET.sub(lambda m: "](" + _safe_target(m.group(1)), text)
    text = _REF_DEF.sub(lambda m: m.group(1) + _safe_target(m.group(2)), text)
    return text


def _code_html(code: str) -> str:
    """A code span as HTML with its markup characters escaped: no renderer reads markup in it."""
    code = code.replace("\n", " ")
    if code.startswith(" ") and code.endswith(" ") and code.strip():
        code = code[1:-1]
    return "<code>" + _CODE_MARKUP.sub(lambda m: f"&#{ord(m.group())};", code) + "</code>"


def _escape_inline(text: str) -> str:
    out: list[str] = []
    pos = 0
    for m in _CODE_SPAN.finditer(text):
        out.append(_escape_prose(text[pos : m.start()]))
        code = m.group(2)
        out.append(_code_html(code) if _RISKY_CODE.search(code) else m.group(0))
        pos = m.end()
    out.append(_escape_prose(text[pos:]))
    return "".join(out)


def fence_opener(line: str) -> tuple[str, int] | None:
    """(fence, indent) when `line` opens a fenced code block."""
    m = _FENCE.match(line)
    if m is None or (m.group(2)[0] == "`" and "`" in m.group(3)):
        return None  # a backtick fence's info string cannot hold a backtick
    return m.group(2), len(m.group(1))


def closes_fence(line: str, fence: str) -> bool:
    """Whether `line` closes a code block opened by `fence`."""
    m = _FENCE.match(line)
    return (
        m is not None
        and m.group(2)[0] == fence[0]
        and len(m.group(2)) >= len(fence)
        and not m.group(3).strip()
    )


def safe_markdown(text: str) -> str:
    """Markdown that shows model output as written, with nothing in it able to run or fetch."""
    out: list[str] = []
    prose: list[str] = []
    fence: str | None = None
    indent = 0
    for line in text.splitlines(keepends=True):
        if fence is not None:
            if closes_fence(line, fence):
                out.append(line)
                fence = None
                continue
            if not (line.strip() and len(line) - len(line.lstrip(" ")) < indent):
                out.append(line)
                continue
            fence = None  # less indented than the fence: its list item, and the block, ended
        opened = fence_opener(line)
        if opened is None:
            prose.append(line)
            continue
        out.append(_escape_inline("".join(prose)))
        prose = []
        fence, indent = opened
        out.append(line)
    out.append(_escape_inline("".join(prose)))
    return "".join(out)


def _fmt_tokens(n: int | None) -> str:
    return "?" if n is None else str(n)


def footer(reply: Reply) -> str:
    bits = [reply.model]
    u = reply.usage
    if u.input_tokens is not None or u.output_tokens is not None:
        bits.append(f"{_fmt_tokens(u.input_tokens)} in / {_fmt_tokens(u.output_tokens)} out tokens")
    if reply.time_to_first_token is not None:
        bits.append(f"first token {reply.time_to_first_token:.2f} s")
    tps = reply.tokens_per_second
    if tps is not None:
        bits.append(f"{tps:.1f} tok/s")
    if reply.interrupted:
        bits.append("interrupted")
    return " · ".join(bits)


def tool_calls_markdown(reply: Reply) -> str:
    """The reply's tool calls as a list; names and arguments come from the model: untrusted."""
    calls = "\n".join(f"- `{t.name}({t.arguments_json})`" for t in reply.tool_calls)
    return safe_markdown(f"**Tool calls**\n\n{calls}\n")


def reply_markdown(reply: Reply, *, with_footer: bool = True) -> str:
    body = safe_markdown(reply.text)
    if reply.tool_calls:
        body += "\n\n" + tool_calls_markdown(reply).rstrip("\n")
    if reply.error is not None and not reply.text:
        body = f"**Error:** {safe_markdown(str(reply.error))}"
    if with_footer:
        body += f"\n\n<sub>{html.escape(footer(reply))}</sub>"
    return body


def reply_mimebundle(reply: Reply) -> dict[str, Any]:
    from .images import png_bytes

    md = reply_markdown(reply)
    for part in reply.image_parts:
        b64 = base64.b64encode(png_bytes(part)).decode("ascii")
        md += f"\n\n![image](data:image/png;base64,{b64})"
    return {"text/markdown": md, "text/plain": reply.text or repr(reply)}
