"""How a `Reply` shows: its one-line footer, and its display bundle.

The bundle is `text/html` (the reply rendered by `nbchat.core.markdown`: markdown-it-py, then
nh3) with the reply's Markdown source as `text/plain`. No `text/markdown`: a front end would
parse model text with its own Markdown parser, and two parsers reading the same text
differently is how escapers fail. Error text, tool calls and the footer come from the model or
a provider too; they are escaped as text and go through the same sanitizer.
"""

from __future__ import annotations

import base64
import html
from typing import TYPE_CHECKING, Any

from .markdown import clean, render_html, text_html

if TYPE_CHECKING:  # pragma: no cover
    from .types import Reply, ToolCall, ToolStep


def _fmt_tokens(n: int | None) -> str:
    return "?" if n is None else str(n)


def footer(reply: Reply) -> str:
    """The one-line summary of a reply, parts joined by ` · `: model id (with `at host:port`
    when the reply came from an endpoint other than the provider's default), `N in / M out
    tokens` (`?` for an unknown count), `first token X.XX s`, `X.X tok/s`, `interrupted` or
    `cut at the token limit (max_tokens)`, `replayed`; each part only when known or true.
    """
    bits = [f"{reply.model} at {reply.host}" if reply.host else reply.model]
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
    elif reply.finish_reason == "length" and (reply.text or reply.tool_calls):
        bits.append("cut at the token limit (max_tokens)")
    if reply.replayed:
        bits.append("replayed")
    bits += reply.notes
    return " · ".join(bits)


def footer_html(text: str) -> str:
    """A footer line (model id, token counts, speed) as small print."""
    return clean(f'<p class="nbchat-footer"><sub>{html.escape(text)}</sub></p>')


#: at most this many characters of a tool call's arguments, and of its result, are displayed
#: (cell, panel, compare); `reply.steps` and the messages sent to the model keep them whole
DISPLAY_CHARS = 2000


def clip(text: str, limit: int = DISPLAY_CHARS) -> str:
    """`text` cut to `limit` characters for display, saying how many were left out
    (`... (N more characters)`): a tool's 3 MB argument would otherwise go into the notebook."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def call_text(call: ToolCall) -> str:
    """A tool call as displayed: `name(arguments as JSON)`, the arguments clipped (`clip`)."""
    return f"{call.name}({clip(call.arguments_json)})"


def tool_calls_html(reply: Reply) -> str:
    """The reply's tool calls as a list (`call_text`); names and arguments come from the
    model: untrusted."""
    items = "".join(
        f"<li><code>{html.escape(call_text(t))}</code></li>" for t in reply.tool_calls
    )
    return clean(f'<div class="nbchat-tool-calls"><p><strong>Tool calls</strong></p>'
                 f"<ul>{items}</ul></div>")


def tool_step_text(step: ToolStep) -> tuple[str, str]:
    """(summary, result) of a tool call that ran, as displayed: `name(arguments)` with
    `denied`/`error` marked, and the text sent back to the model; the arguments and the result
    each clipped to `DISPLAY_CHARS` (`clip`; the step itself keeps them whole)."""
    head = call_text(step.call)
    if step.denied:
        head += " · denied"
    elif step.error is not None:
        head += " · error"
    return head, clip(step.result)


def tool_step_html(step: ToolStep) -> str:
    """A tool call that ran and its result, collapsed under the call; the name and arguments
    come from the model and the result from the tool: escaped as text, then sanitized."""
    return tool_block_html(*tool_step_text(step))


def tool_block_html(head: str, result: str) -> str:
    """`tool_step_html` from its two texts (`tool_step_text`), as a panel's transcript keeps
    them: both escaped, then sanitized."""
    return clean(f'<details class="nbchat-tool-step"><summary><code>{html.escape(head)}</code>'
                 f"</summary><pre><code>{html.escape(result)}</code></pre></details>")


def refusal_html(refusal: str) -> str:
    """The model's refusal (OpenAI's `refusal`) as escaped text, in the class `nbchat-refusal`."""
    return text_html(f"Refused: {refusal}", "nbchat-refusal")


def reasoning_html(reasoning: str) -> str:
    """A reasoning model's thinking, collapsed under a "Reasoning" label (rendered and
    sanitized like the reply itself: it comes from the model)."""
    return clean('<details class="nbchat-reasoning"><summary>Reasoning</summary>'
                 f"{render_html(reasoning.strip())}</details>")


def error_html(error: BaseException) -> str:
    """An error's message as escaped, sanitized text (`Error: ...`) in the class `nbchat-error`."""
    return text_html(f"Error: {error}")


def reply_html(reply: Reply, *, with_footer: bool = True) -> str:
    """The reply as one sanitized HTML fragment: text, images, tool calls, error, footer."""
    from .images import png_bytes

    parts = [reasoning_html(reply.reasoning)] if reply.reasoning else []
    parts += [tool_step_html(step) for step in reply.steps]
    if reply.text:
        parts.append(render_html(reply.text))
    if reply.refusal:
        parts.append(refusal_html(reply.refusal))
    if reply.empty_reason:
        parts.append(text_html(reply.empty_reason, "nbchat-note"))
    for part in reply.image_parts:
        b64 = base64.b64encode(png_bytes(part)).decode("ascii")
        parts.append(f'<p><img class="nbchat-image" alt="image" src="data:image/png;base64,{b64}">'
                     "</p>")
    if reply.tool_calls:
        parts.append(tool_calls_html(reply))
    if reply.error is not None:
        parts.append(error_html(reply.error))
    if with_footer:
        parts.append(footer_html(footer(reply)))
    return clean(f'<div class="nbchat-reply">{"".join(parts)}</div>')


def reply_mimebundle(reply: Reply) -> tuple[dict[str, Any], dict[str, Any]]:
    """(data, metadata): the reply as sanitized HTML and text; its provenance under metadata
    "nbchat" (IPython's `_repr_mimebundle_` protocol), so it is saved with the notebook."""
    data = {"text/html": reply_html(reply), "text/plain": reply.text or repr(reply)}
    return data, {"nbchat": reply.provenance}
