"""The widgets' Markdown renderer (js/markdown.js, as bundled in nbchat/static) in Chromium, one
test per rendering rule; each reply is shown both as the kernel streams it and as the saved
transcript restores it, and both must give the same page.
"""

from __future__ import annotations

import re

import pytest
from widget_page import ORIGIN, body, finish, mount, mount_panel, open_bare, reply, stream

pytestmark = pytest.mark.browser


@pytest.fixture
def bare(page):
    open_bare(page)
    return page


# the page as a reader sees it: elements and text, without the stream's wrapper elements
CANONICAL = """el => {
  const walk = (n) => {
    if (n.nodeType === 3) return n.data;
    if (n.nodeType !== 1) return "";
    const inner = [...n.childNodes].map(walk).join("");
    if (n.matches(".nbchat-md-done, .nbchat-md-tail, .nbchat-md-chunk")) return inner;
    const attrs = [...n.attributes].map((a) => `${a.name}=${a.value}`).sort().join(" ");
    return `<${n.tagName.toLowerCase()} ${attrs}>${inner}</>`;
  };
  return [...el.childNodes].map(walk).join("");
}"""


def show(page, text: str, how: str):
    """Show `text` as a reply (`how`: streamed then finished, or restored); return its body."""
    if how == "restored":
        i = mount_panel(page, [reply(text)])
    else:
        i = mount_panel(page)
        stream(page, i, text, size=5)
        finish(page, i, [reply(text)])
    return body(page, i)


def canonical(locator) -> str:
    return locator.evaluate(CANONICAL)


HOW = pytest.mark.parametrize("how", ["streamed", "restored"])


@HOW
def test_inline_and_display_math(bare, how):
    text = "Area $\\pi r^2$ and \\(a+b\\).\n\n$$\n\\int_0^1 x\\,dx\n$$\n\n\\[E=mc^2\\]\n"
    out = show(bare, text, how)
    assert out.locator(".katex").count() == 4
    assert out.locator(".katex-display").count() == 2
    tex = out.locator("annotation").all_text_contents()
    assert any("\\pi r^2" in t for t in tex), tex
    assert "$" not in out.inner_text() and "\\(" not in out.inner_text()
    # the fonts ship inside nbchat.css as data: URLs, so math renders in KaTeX's own font
    bare.evaluate("() => document.fonts.ready")
    assert bare.evaluate("() => document.fonts.check('16px KaTeX_Main')")
    assert bare.evaluate(
        "() => [...document.fonts].some(f => f.family.includes('KaTeX_Main')"
        " && f.status === 'loaded')")
    assert bare.remote == []


@HOW
def test_dollar_amounts_stay_text(bare, how):
    text = "If I put $100 in and add $50, I have $150."
    out = show(bare, text, how)
    assert out.locator(".katex").count() == 0 and out.locator("em").count() == 0
    assert out.inner_text().strip() == text


@HOW
def test_table(bare, how):
    out = show(bare, "| name | n |\n|:--|--:|\n| a | 1 |\n| b | 2 |\n", how)
    assert out.locator("table thead th").all_inner_texts() == ["name", "n"]
    assert out.locator("table tbody tr").count() == 2
    assert out.locator("table tbody td").all_inner_texts() == ["a", "1", "b", "2"]


@HOW
def test_blockquote(bare, how):
    out = show(bare, "> quoted **line**\n> two\n\nafter", how)
    assert out.locator("blockquote strong", has_text="line").count() == 1
    assert "&gt;" not in out.inner_text() and ">" not in out.locator("blockquote").inner_text()
    assert out.locator("p", has_text="after").count() == 1


@HOW
def test_nested_lists(bare, how):
    out = show(bare, "- fruit\n  - apple\n  - pear\n- veg\n  1. leek\n  2. kale\n", how)
    assert out.locator("ul").first.locator(":scope > li").count() == 2
    assert out.locator("ul > li > ul > li").all_inner_texts() == ["apple", "pear"]
    assert out.locator("ul > li > ol > li").all_inner_texts() == ["leek", "kale"]


@HOW
def test_numbered_list_keeps_numbers_across_blank_lines(bare, how):
    out = show(bare, "1. one\n\n2. two\n\n3. three\n\nThen:\n\n4. four\n5. five\n", how)
    lists = out.locator("ol")
    assert lists.count() == 2
    assert lists.nth(0).locator("li").count() == 3 and lists.nth(0).get_attribute("start") is None
    assert lists.nth(1).get_attribute("start") == "4"  # shown as 4. and 5., not 1. and 2.
    # what the reader sees: the list markers' numbers
    markers = out.evaluate(
        "el => [...el.querySelectorAll('li')].map(li => { const ol = li.parentElement;"
        " return (ol.start || 1) + [...ol.children].indexOf(li); })")
    assert markers == [1, 2, 3, 4, 5]


@HOW
def test_headings(bare, how):
    out = show(bare, "# One\n\n## Two\n\n### Three\n\ntext", how)
    assert [out.locator(f"h{n}").inner_text() for n in (1, 2, 3)] == ["One", "Two", "Three"]


@HOW
def test_code_is_highlighted_with_a_copy_button(bare, how):
    bare.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=ORIGIN)
    code = "def f(x):\n    return x + 1  # <b>no</b>"
    out = show(bare, f"Code:\n\n```python\n{code}\n```\n\nand `inline <i>`", how)
    block = out.locator(".nbchat-codeblock")
    assert block.locator("code").inner_text() == code + "\n"
    assert block.locator(".hljs-keyword", has_text="def").count() == 1
    assert block.locator(".hljs-comment").count() == 1
    assert out.locator("p code").inner_text() == "inline <i>"
    assert out.locator("b, i").count() == 0
    block.get_by_role("button", name="Copy code").click()
    bare.wait_for_function("() => navigator.clipboard.readText().then(Boolean)")
    assert bare.evaluate("() => navigator.clipboard.readText()") == code


@HOW
def test_emphasis_strikethrough_and_links(bare, how):
    out = show(bare, "*it* **bold** ~~gone~~ snake_case_name [site](https://example.org/a?b=1) "
                     "[mail](mailto:a@example.org) [here](#top) [bad](javascript:alert(1))", how)
    assert out.locator("em").inner_text() == "it" and out.locator("strong").inner_text() == "bold"
    assert out.locator("s").inner_text() == "gone"
    assert "snake_case_name" in out.inner_text()
    links = out.locator("a")
    assert [links.nth(i).get_attribute("href") for i in range(links.count())] == [
        "https://example.org/a?b=1", "mailto:a@example.org", "#top"]
    assert links.first.get_attribute("rel") == "noopener noreferrer nofollow"
    assert links.first.get_attribute("target") == "_blank"
    assert "[bad](javascript:alert(1))" in out.inner_text()  # left as the text it was


@HOW
def test_remote_image_loads_only_on_click(bare, how):
    out = show(bare, "See ![a chart](http://198.51.100.7/chart.png) and "
                     "![dot](data:image/png;base64,iVBORw0KGgo=)", how)
    button = out.get_by_role("button", name="Load image: a chart")
    assert out.locator("img").count() == 1  # the data: image shows; it fetches nothing
    bare.wait_for_timeout(200)
    assert bare.remote == []
    with bare.expect_request("http://198.51.100.7/chart.png"):
        button.click()
    img = out.locator("img[alt='a chart']")
    assert img.get_attribute("referrerpolicy") == "no-referrer"


def test_streamed_page_equals_the_restored_page(bare):
    text = ("# Title\n\nIntro with $x^2$ and a [link](https://example.org).\n\n"
            "1. one\n\n2. two\n   - nested\n\n3. three\n\n> quote\n\n| a | b |\n|---|---|\n"
            "| 1 | 2 |\n\n```js\nconst a = 1;\n```\n\n    indented code\n\n    more code\n\n"
            "[ref]: https://example.org/ref\n\nA [ref] link. $$\nx\n$$\n\nEnd.")
    for size in (1, 3, 17):
        i = mount_panel(bare)
        stream(bare, i, text, size=size)
        finish(bare, i, [reply(text)])
        j = mount_panel(bare, [reply(text)])
        assert canonical(body(bare, i)) == canonical(body(bare, j)), size


def test_streaming_keeps_finished_blocks(bare):
    """Blocks that more text cannot change are rendered once: their nodes stay the same."""
    i = mount_panel(bare)
    bare.evaluate("i => nb.widgets[i].emit({type: 'start', model: 'm'})", i)
    first = "First paragraph with **bold**.\n\nSecond one.\n\n"
    bare.evaluate("([i, t]) => nb.widgets[i].emit({type: 'delta', text: t})", [i, first])
    bare.evaluate("() => nb.frame()")
    bare.evaluate("() => nb.frame()")
    bare.evaluate(
        "i => { window.__first = nb.widgets[i].el.querySelector('.nbchat-body p'); }", i)
    for k in range(30):
        bare.evaluate("([i, t]) => nb.widgets[i].emit({type: 'delta', text: t})",
                      [i, f"Paragraph {k} goes on. "])
        bare.evaluate("() => nb.frame()")
    bare.evaluate("() => nb.settle()")
    assert bare.evaluate("() => window.__first.isConnected")
    assert bare.evaluate("() => window.__first.textContent") == "First paragraph with bold."
    assert "Paragraph 29 goes on." in body(bare, i).inner_text()


def test_huge_unfinished_block_streams_in_full(bare):
    """A 128 KB paragraph of ` __x` (one block, never finished) still shows all its text."""
    text = " __x" * 32768
    i = mount_panel(bare)
    bare.evaluate("i => nb.widgets[i].emit({type: 'start', model: 'm'})", i)
    bare.evaluate(
        "async ([i, t]) => { for (let p = 0; p < t.length; p += 4096) {"
        " nb.widgets[i].emit({type: 'delta', text: t.slice(p, p + 4096)}); await nb.frame(); } }",
        [i, text])
    # a long reply is redrawn less often (up to every 500 ms): wait for the last redraw
    bare.wait_for_function("([el, n]) => el.textContent.replace(/ /g, '').trim().length === n",
                           arg=[body(bare, i).element_handle(), len(text.replace(" ", ""))])
    shown = body(bare, i).evaluate("el => el.textContent")
    assert shown.replace(" ", "").strip() == text.replace(" ", "")
    finish(bare, i, [reply(text)])
    final = body(bare, i)
    assert final.locator("strong, em").count() == 0
    assert final.evaluate("el => el.textContent").strip() == text.strip()


def test_compare_view_renders_markdown_while_streaming_and_after(bare):
    cols = [{"model": "a", "state": "streaming", "text": ""},
            {"model": "b", "state": "streaming", "text": ""}]
    i = mount(bare, "compare", {"prompt": "p", "columns": cols})
    texts = ["| x | y |\n|---|---|\n| 1 | 2 |\n\nand $x^2$", "```python\nimport os\n```\n> q"]
    bare.evaluate(
        "async ([i, a, b]) => { for (let p = 0; p < 60; p += 4) {"
        " nb.widgets[i].emit({type: 'delta', cols: {0: a.slice(p, p + 4), 1: b.slice(p, p + 4)}});"
        " await nb.tick(); } await nb.settle(); }",
        [i, *texts])
    col = bare.locator(f".widget-{i} .nbchat-col-body")
    assert col.nth(0).locator("table td").all_inner_texts() == ["1", "2"]
    assert col.nth(0).locator(".katex").count() == 1
    assert col.nth(1).locator(".hljs-keyword", has_text="import").count() == 1
    assert col.nth(1).locator("blockquote").count() == 1
    streamed = [canonical(col.nth(k)) for k in range(2)]
    done = [{"model": "a", "state": "done", "text": texts[0], "stats": {}},
            {"model": "b", "state": "done", "text": texts[1], "stats": {}}]
    bare.evaluate("([i, c]) => nb.widgets[i].change('columns', c)", [i, done])
    assert [canonical(col.nth(k)) for k in range(2)] == streamed
    j = mount(bare, "compare", {"prompt": "p", "columns": done})
    restored = bare.locator(f".widget-{j} .nbchat-col-body")
    assert [canonical(restored.nth(k)) for k in range(2)] == streamed


def test_kernel_images_only_as_data_urls(bare):
    png = "data:image/png;base64,iVBORw0KGgo="
    bad = ["http://198.51.100.7/x.png", "javascript:alert(1)", "data:image/svg+xml;base64,PHN2Zz4="]
    entry = {**reply("pictures"), "images": [png, *bad]}
    i = mount_panel(bare, [entry])
    imgs = bare.locator(f".widget-{i} .nbchat-images img")
    assert imgs.count() == 1 and imgs.get_attribute("src") == png
    assert bare.locator(f".widget-{i} .nbchat-images span", has_text="[image]").count() == 3
    assert bare.remote == []
    assert re.fullmatch(r"m", bare.locator(f".widget-{i} .nbchat-who").inner_text())
