"""The front end's Markdown renderer, run in Chromium on a blank page (no Jupyter needed)."""

from __future__ import annotations

import pytest

from nbchat.notebook.panel import STATIC

pytestmark = pytest.mark.browser

EVIL = (
    "Hi <img src=x onerror=\"window.__xss=1\"> <script>window.__xss=2</script>\n\n"
    "[click **me**](javascript:window.__xss=3) [ok](https://example.org/a?b=1) "
    "![t](http://198.51.100.7/p.png) *it* __b__ `<i>x</i>` window.__xss and a__b__c\n\n"
    "# Title\n\n- one\n- two **bold**\n\n1. first\n\n```python\nprint('<b>')\n```\n"
)


@pytest.fixture
def blank(page):
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    # a click may fetch the remote image: answer it here, nothing leaves the machine
    page.route("http://198.51.100.7/**", lambda route: route.fulfill(status=404, body=""))
    page.set_content("<div id='out'></div>")
    page.add_script_tag(content=(STATIC / "markdown.js").read_text())
    page.requests = requests
    return page


def test_renderer_builds_elements_and_runs_nothing(blank):
    blank.evaluate("t => renderMarkdown(t, document.getElementById('out'))", EVIL)
    out = blank.locator("#out")
    assert blank.evaluate("() => window.__xss") is None
    assert out.locator("img, script, iframe").count() == 0
    assert "<img src=x" in out.inner_text() and "<script>" in out.inner_text()
    links = out.locator("a")
    assert links.count() == 1
    assert links.get_attribute("href") == "https://example.org/a?b=1"
    assert links.get_attribute("rel") == "noopener noreferrer nofollow"
    assert links.get_attribute("target") == "_blank"
    assert out.locator(".nbchat-unsafe-link strong", has_text="me").count() == 1
    assert out.locator("em", has_text="it").count() == 1
    assert out.locator("strong", has_text="b").count() == 2  # intraword __ is not bold
    assert "window.__xss and a__b__c" in out.inner_text()
    assert out.locator("p code").inner_text() == "<i>x</i>"
    assert out.locator("h3", has_text="Title").count() == 1
    assert out.locator("ul li").count() == 2 and out.locator("ol li").count() == 1
    assert out.locator(".nbchat-codeblock pre code").inner_text() == "print('<b>')"
    assert out.locator(".nbchat-codeblock button", has_text="Copy").count() == 1
    button = out.get_by_role("button", name="Load image: t")
    assert not blank.requests  # the remote image is not fetched...
    with blank.expect_request("http://198.51.100.7/p.png"):
        button.click()  # ...until the user asks for it
    assert out.locator("img.nbchat-md-img").get_attribute("referrerpolicy") == "no-referrer"


def test_kernel_images_only_as_data_urls(blank):
    ok = blank.evaluate("() => dataImage('data:image/png;base64,iVBORw0KGgo=', 'a').tagName")
    assert ok == "IMG"
    refused = ("http://198.51.100.7/x.png", "javascript:alert(1)",
               "data:image/svg+xml;base64,PHN2Zz4=")
    for src in refused:
        assert blank.evaluate("s => dataImage(s, 'a').tagName", src) == "SPAN"
    url = blank.evaluate(
        "() => bytesToDataUrl(new Uint8Array([137, 80, 78, 71]).buffer, 'image/png')")
    assert url == "data:image/png;base64,iVBORw=="
