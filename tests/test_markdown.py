"""The rendering pipeline (`nbchat.core.markdown`): markdown-it-py, then nh3.

Feature tests per rendering rule, the XSS corpus, and a property test over risky fragments.
Every check reads the HTML with the standard library's parser (tests/htmlcheck.py).
"""

from __future__ import annotations

import re

import pytest
from htmlcheck import hrefs, problems, visible_text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xss_corpus import CORPUS, JOINED, REMOTE_HOST

from nbchat.core.markdown import clean, markdown_embedding, parser, render_html


def tags(fragment: str) -> list[str]:
    return re.findall(r"<([a-z0-9]+)", fragment)


# ---- the corpus ------------------------------------------------------------------------


def test_corpus_is_well_formed():
    markers = [m for m, _ in CORPUS] + [m for m, _ in JOINED]
    assert len(CORPUS) >= 60 and len(markers) == len(set(markers))
    for marker, payload in CORPUS:
        assert marker in payload
    for marker, replies in JOINED:
        assert marker in "".join(replies)


@pytest.mark.parametrize("marker, payload", CORPUS, ids=[m for m, _ in CORPUS])
def test_corpus_renders_inert_and_readable(marker, payload):
    out = render_html(payload)
    assert problems(out) == [], out
    first = payload.split("\n", 1)[0]
    if not (first.startswith("```") and marker in first):  # a fence's info string is not shown
        assert marker in visible_text(out), out  # what the model wrote is shown, as text


@pytest.mark.parametrize("marker, replies", JOINED, ids=[m for m, _ in JOINED])
def test_joined_replies_cannot_reach_each_other(marker, replies):
    out = clean("".join(render_html(r) for r in replies))
    assert problems(out) == []
    # the second reply is a block of its own, rendered as if the first did not exist
    assert render_html(replies[1]) in out


# ---- rendering rules -----------------------------------------------------------------------


def test_dollar_amounts_stay_text():
    out = render_html("If I put $100 in and add $50, I have $150.")
    assert "mathjax_process" not in out and "<em>" not in out
    assert visible_text(out).strip() == "If I put $100 in and add $50, I have $150."


@pytest.mark.parametrize("source, tex, display", [
    ("Area: $x^2$ here", r"\(x^2\)", False),
    ("$$\\sum_i a_i$$", r"\[\sum_i a_i\]", True),
    ("inline $$a+b$$ too", r"\[a+b\]", True),
    ("Then \\(a < b\\) holds", r"\(a < b\)", False),
    ("The area is:\n\\[\nA = \\pi r^2\n\\]\ndone", "\\[\nA = \\pi r^2\n\\]", True),
    ("\\[E = mc^2\\]", r"\[E = mc^2\]", True),
])
def test_math_is_marked_for_the_typesetter(source, tex, display):
    out = render_html(source)
    spans = re.findall(r'<(?:span|div) class="math([^"]*)">(.*?)</(?:span|div)>', out, re.S)
    assert len(spans) == 1, out
    classes, body = spans[0]
    assert "mathjax_process" in classes and ("math-display" in classes) == display
    assert visible_text(body) == tex
    # everything else is out of the typesetter's reach
    assert out.startswith('<div class="nbchat-md mathjax_ignore tex2jax_ignore">')


@pytest.mark.parametrize("source", [
    "$\\href{https://example.com}{x}$", "$\\style{color:red}{x}$", "\\(\\bbox[red]{x}\\)",
    "$$\\class{a}{x}$$", "$\\unicode{x41}$", "$\\require{html}$",
])
def test_math_with_link_style_or_loading_macros_is_shown_as_code(source):
    out = render_html(source)
    assert "mathjax_process" not in out and '<code class="nbchat-math-source">' in out
    assert visible_text(out).strip() == source


def test_tables():
    out = render_html("| Name | Age |\n|:-----|----:|\n| Ada | 36 |\n| Alan | 41 |")
    assert tags(out).count("tr") == 3 and tags(out).count("th") == 2
    assert '<td style="text-align:right">36</td>' in out


def test_blockquote_is_a_quote():
    out = render_html("> quote\n> more")
    assert "<blockquote>" in out and "&gt;" not in out
    assert visible_text(out).split() == ["quote", "more"]


def test_numbered_list_keeps_its_numbers_across_blank_lines():
    out = render_html("1. first\n\n2. second\n\n   - nested a\n   - nested b\n\n3. third")
    assert tags(out).count("ol") == 1 and out.count("<li>") == 5
    assert re.search(r"<li>\s*<p>second</p>\s*<ul>\s*<li>nested a</li>", out)
    assert '<ol start="4">' in render_html("4. four\n\n5. five")


def test_headings():
    out = render_html("# One\n\n## Two\n\n### Three\n\nTitle\n=====")
    assert tags(out) == ["div", "h1", "h2", "h3", "h1"]


def test_code_keeps_its_language_and_text():
    out = render_html("```python\nif a < b:\n    print('<b>')\n```")
    assert '<pre><code class="language-python">' in out
    assert visible_text(out).strip("\n") == "if a < b:\n    print('<b>')"
    assert "`x < y`" not in render_html("Use `x < y` here") and "<code>x &lt; y</code>" in \
        render_html("Use `x < y` here")


def test_strikethrough_and_task_lists():
    out = render_html("~~gone~~\n\n- [x] done\n- [ ] todo")
    assert "<s>gone</s>" in out
    boxes = re.findall(r"<input[^>]*>", out)
    assert len(boxes) == 2 and all('disabled="disabled"' in b and 'type="checkbox"' in b
                                   for b in boxes)
    assert "checked" in boxes[0] and "checked" not in boxes[1]


def test_links_keep_only_safe_targets():
    out = render_html("[a](https://example.com/x?y=1&z=2) [b](mailto:me@example.com) "
                      "[c](#part) [d](relative/page.html) [e](ftp://example.com)")
    assert hrefs(out) == ["https://example.com/x?y=1&z=2", "mailto:me@example.com", "#part"]
    assert visible_text(out).split() == ["a", "b", "c", "d", "e"]


def test_remote_image_is_a_link_and_nothing_loads():
    out = render_html(f"![chart](https://{REMOTE_HOST}/c.png)")
    assert "<img" not in out
    assert hrefs(out) == [f"https://{REMOTE_HOST}/c.png"]
    assert 'class="nbchat-image-link"' in out and "image: chart" in visible_text(out)


def test_raw_html_is_shown_as_text():
    out = render_html("Hi <b>there</b>\n\n<div>block</div>")
    assert "<b>" not in out and visible_text(out).split() == ["Hi", "<b>there</b>",
                                                              "<div>block</div>"]


def test_same_text_same_html():
    """One parser, one configuration: rendering is a pure function of the text."""
    md = parser()
    assert md is parser()
    text = "# T\n\n*a* $b$ `c`"
    assert render_html(text) == render_html(text)


def test_markdown_embedding_is_one_raw_html_block_for_any_reader():
    """A reply with blank lines, dollars and backslashes stays one HTML block when the
    document is read as Markdown again (here by markdown-it with HTML on, a browser's view)."""
    from markdown_it import MarkdownIt

    block = markdown_embedding(render_html("```\nx\n\n<img src=x onerror=alert(1)>\n```\n\n"
                                           "$100 and $50 \\(a\\)"))
    assert "\n" not in block and "$" not in block and "\\" not in block
    doc = f"**Title**\n\n{block}\n\n---\n"
    tokens = MarkdownIt("commonmark").parse(doc)
    assert [t.type for t in tokens if t.level == 0][2] == "html_block"
    html = MarkdownIt("commonmark").render(doc)
    assert problems(html) == [] and block in html


# ---- the property test ----------------------------------------------------------------------

FRAGMENTS = [
    "\n", "\n\n", " ", "    ", "\t", "> ", "- ", "1. ", "* ", "```", "~~~", "`", "``", "```js",
    "[", "]", "(", ")", "](", "![", "<", ">", "</", "/>", '"', "'", "=", "&", "&#106;", "&#x6A;",
    "&colon;", "&#9;", "\\", "\\\\", "$", "$$", "\\(", "\\)", "\\[", "\\]", "|", "|---|", ":",
    "javascript:", "JaVaScRiPt:", "vbscript:", "data:text/html,", "data:image/svg+xml,",
    "alert(1)", "onerror", "onload", "img src=x", "script", "svg", "iframe", "style",
    "a href=", f"http://{REMOTE_HOST}/p.png", "//" + REMOTE_HOST, "url(", "srcset=",
    "\\href{", "\\style{", "}{x}", "[x]: ", "[x]", "<http://", "<javascript:", "word",
    "**", "_", "~~", "#", "---", "\u200b", "\x00", "&lt;", "-->", "<!--",
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=40))
def test_no_fragment_mix_makes_live_html(parts):
    text = "".join(parts)
    out = render_html(text)
    assert problems(out) == [], (text, out)
    assert problems(markdown_embedding(out)) == []


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=20),
       st.lists(st.sampled_from(FRAGMENTS), max_size=20))
def test_no_two_replies_joined_make_live_html(a, b):
    first, second = "".join(a), "".join(b)
    joined = clean(render_html(first) + render_html(second))
    assert problems(joined) == []
    assert render_html(second) in joined
