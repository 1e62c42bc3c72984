"""The XSS corpus (tests/xss_corpus.py) through the widgets (ChatPanel, CompareView) in Chromium:
no dialog opens (each payload's script calls `alert('<marker>')`), nothing is fetched from the
remote host without a click, no `javascript:` link or event-handler attribute survives.

On the bare page (the shipped bundles, fast): every payload streamed a character per update into
its own ChatPanel, then finished; restored from a transcript; and streamed and finished in a
CompareView. In real JupyterLab and Notebook 7: a ChatPanel on a loopback model that answers
each payload, a CompareView streaming all of them joined, and the saved notebook reopened without
a kernel. (The Python surfaces, exports included, are test_xss_browser.py's.)
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from saved_notebook import saved_widget_state
from widget_page import mount, mount_panel, open_bare, reply
from xss_corpus import CORPUS, JOINED, REMOTE_HOST

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TESTS = Path(__file__).resolve().parents[1]

# what must not be in the outputs (widgets, rendered Markdown) after the corpus went through them
INERT = """(root) => {
  const bad = [];
  const scopes = root ? [root] : document.querySelectorAll(
    '.jp-OutputArea-output, .nbchat-panel, .nbchat-compare, [class^=widget-]');
  const active = ['SCRIPT', 'IFRAME', 'OBJECT', 'EMBED', 'STYLE', 'BASE', 'META', 'FORM', 'LINK',
                  'FRAME', 'VIDEO', 'AUDIO', 'SOURCE', 'PICTURE'];
  for (const scope of scopes) {
    for (const el of scope.querySelectorAll('*')) {
      if (active.includes(el.tagName)) bad.push(el.tagName);
      for (const a of el.attributes) {
        const v = a.value.replace(/[\\s\\u0000-\\u001f]/g, '').toLowerCase();
        const what = `${el.tagName} ${a.name}=${a.value}`;
        // a click-to-load image, and a link (a click away, like any http link) are allowed
        const button = (el.tagName === 'BUTTON' && a.name === 'data-src')
          || (el.tagName === 'A' && a.name === 'href' && /^https?:/.test(v));
        if (a.name.startsWith('on')) bad.push(what);
        if (/^(javascript|vbscript|data:text)/.test(v) && !button) bad.push(what);
        const urlish = /(src|href|action|srcset|background|poster|style|data)$/.test(a.name);
        if (urlish && /198\\.51\\.100\\.7/.test(a.value) && !button) bad.push(what);
      }
    }
  }
  return bad;
}"""


def assert_inert(page, dialogs: list[str], requests: list[str], root=None) -> None:
    page.wait_for_timeout(300)  # a handler or a load that was going to fire has fired
    assert dialogs == []
    assert page.evaluate(INERT, root) == []
    leaked = [u for u in requests if REMOTE_HOST in u]
    assert leaked == []


@pytest.fixture
def bare(page):
    open_bare(page)
    page.dialogs = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    return page


def test_corpus_is_inert_in_the_widgets(bare):
    payloads = [p for _, p in CORPUS]
    panels = [mount_panel(bare) for _ in payloads]
    longest = max(map(len, payloads))
    # every panel streams its payload a character an update interval: each prefix is rendered
    bare.evaluate(
        """async ([ids, texts, n]) => {
          ids.forEach((i) => nb.widgets[i].emit({ type: "start", model: "evil" }));
          for (let p = 0; p < n; p++) {
            ids.forEach((i, k) => {
              if (p < texts[k].length) nb.widgets[i].emit({ type: "delta", text: texts[k][p] });
            });
            await nb.tick();
          }
          await nb.settle();
        }""",
        [panels, payloads, longest],
    )
    assert_inert(bare, bare.dialogs, bare.remote)
    for i, text in zip(panels, payloads, strict=True):
        bare.evaluate("([i, t]) => nb.widgets[i].change('transcript', t)",
                      [i, [{"role": "user", "text": text, "images": []}, reply(text)]])
    restored = mount_panel(bare, [reply(p) for p in payloads])
    # replies harmless alone and hostile when joined: consecutive entries of one transcript
    mount_panel(bare, [reply(r) for _, pair in JOINED for r in pair])
    everything = "\n\n".join(payloads + [r for _, pair in JOINED for r in pair])
    cols = [{"model": "evil", "state": "streaming", "text": ""}]
    view = mount(bare, "compare", {"prompt": everything, "columns": cols})
    bare.evaluate(
        "async ([i, t]) => { for (let p = 0; p < t.length; p += 29) {"
        " nb.widgets[i].emit({type: 'delta', cols: {0: t.slice(p, p + 29)}}); await nb.frame(); }"
        " await nb.settle(); }",
        [view, everything])
    assert_inert(bare, bare.dialogs, bare.remote)
    bare.evaluate("([i, c]) => nb.widgets[i].change('columns', c)",
                  [view, [{"model": "evil", "state": "done", "text": everything, "stats": {}}]])
    assert_inert(bare, bare.dialogs, bare.remote)
    # what the reader sees: the payloads as text, images behind buttons
    shown = bare.locator(f".widget-{restored}").inner_text()
    assert "<script>alert('h02')</script>" in shown
    buttons = bare.locator(f".widget-{restored} .nbchat-load-image")
    assert buttons.count() >= 4  # the remote and reference images of the corpus
    # links that survived go only where they say, and open away from the notebook
    for a in bare.locator(".nbchat-md a[href]").all():
        assert re.match(r"^(https?:|mailto:|#)", a.get_attribute("href")), a.get_attribute("href")
    # clicking everything clickable runs nothing; only the asked-for image is fetched
    with bare.expect_request(re.compile(REMOTE_HOST)):
        buttons.first.click()
    for _ in range(100):  # the route handler records it a moment after the request event
        if any(REMOTE_HOST in u for u in bare.remote):
            break
        bare.wait_for_timeout(20)
    bare.remote.clear()
    bare.locator(f"img[src^='http://{REMOTE_HOST}/']").evaluate("el => el.remove()")  # asked for
    clicked = bare.evaluate(
        "() => { const els = document.querySelectorAll('.nbchat-md a:not([href]),"
        " .nbchat-md .katex *, .nbchat-md code, .nbchat-md td');"
        " els.forEach((el) => el.dispatchEvent(new MouseEvent('click', {bubbles: true})));"
        " return els.length; }")
    assert clicked > 50
    assert_inert(bare, bare.dialogs, bare.remote)


# ---- real JupyterLab and Notebook 7 ------------------------------------------------------------

XSS_CELLS = [
    f"import sys\nsys.path.insert(0, {str(TESTS)!r})\nfrom xss_corpus import CORPUS\n"
    "from nbchat import ChatPanel\nfrom nbchat.notebook.compare import CompareView",
    "panel = ChatPanel('openai:evil')\npanel",
    "for marker, _ in CORPUS:\n    await panel.submit(marker)",
    "view = CompareView(['openai:evil'])\nview",
    "result = await view.arun('corpus')",
    "print('corpus' + ' finished')",
]

def write_xss_notebook(path: Path, cells: list[str] = XSS_CELLS) -> None:
    nb = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": uuid.uuid4().hex[:8],
                   "metadata": {}, "outputs": [], "source": src} for src in cells],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                    "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb))


def test_corpus_is_inert_in_jupyter(jupyter, page):
    try:
        check_corpus_in_jupyter(jupyter, page)
    except BaseException:
        if not page.is_closed():
            page.screenshot(path=str(ARTIFACTS / f"{jupyter.kind}-corpus-failure.png"))
        raise


def run_all(app, page, name: str) -> tuple[list[str], list[str]]:
    """Open notebook `name`, run all its cells; (requests, dialogs) seen meanwhile."""
    requests: list[str] = []
    dialogs: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    with page.expect_websocket(lambda ws: "/channels" in ws.url):
        page.goto(app.url(name))
    page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').first.wait_for()
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).first.click()
    page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()
    page.get_by_text("corpus finished").wait_for(timeout=120_000)
    return requests, dialogs


def check_corpus_in_jupyter(app, page):
    write_xss_notebook(app.root / "xss.ipynb")
    requests, dialogs = run_all(app, page, "xss.ipynb")
    panel = page.locator(".nbchat-panel")
    assert panel.locator("[role=article]").count() == len(CORPUS)
    assert "<script>alert('h02')</script>" in panel.inner_text()
    assert page.locator(".nbchat-col[data-state=done]").count() == 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{app.kind}-corpus.png"))
    assert_inert(page, dialogs, requests)
    hosts = {urlparse(u).hostname for u in requests if u.startswith("http")}
    assert hosts == {"127.0.0.1"}, hosts

    # saved, the kernel gone, reopened: the restored widgets are just as inert
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^File$")).first.click()
    page.locator('.lm-Menu-item[data-command="docmanager:save"]').click()
    path = app.root / "xss.ipynb"
    deadline = time.monotonic() + 60
    while True:
        state = saved_widget_state(path)
        if f"alert('{CORPUS[-1][0]}')" in state and f"alert('{CORPUS[0][0]}')" in state:
            break
        assert time.monotonic() < deadline, "the saved notebook holds no widget state"
        time.sleep(0.2)
    page.close()
    api = f"{app.base}/api/sessions"
    for session in httpx.get(api, params={"token": app.token}).json():
        httpx.delete(f"{api}/{session['id']}", params={"token": app.token}).raise_for_status()
    context = page.context.browser.new_context(viewport={"width": 1280, "height": 1000})
    fresh = context.new_page()
    fresh.set_default_timeout(60_000)
    requests.clear()
    fresh.on("request", lambda r: requests.append(r.url))
    fresh.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        fresh.goto(app.url("xss.ipynb"))
        articles = fresh.locator(".nbchat-panel [role=article]")
        articles.nth(len(CORPUS) - 1).wait_for()
        fresh.locator(".nbchat-col[data-state=done]").wait_for()
        assert_inert(fresh, dialogs, requests)
        fresh.screenshot(path=str(ARTIFACTS / f"{app.kind}-corpus-reopened.png"))
    finally:
        context.close()
