"""The XSS corpus through every Python surface, and through nbconvert's HTML export.

Surfaces: `%%chat` streaming (one character per chunk, in a real IPython shell), a displayed
`Reply` (with the payload as its error too), `CompareResult` (joined pairs side by side),
`ChatPanel.to_markdown()` read back by two Markdown parsers (markdown-it, and mistune as
nbconvert uses it), and a whole notebook executed by nbclient and exported by nbconvert, then
opened in Chromium: no dialog, no request to the corpus' remote host, no `javascript:` link.
Real JupyterLab and Notebook 7: tests/browser/test_xss_browser.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fakes import FakeProvider
from htmlcheck import document_problems, problems, visible_text
from IPython.core.interactiveshell import InteractiveShell
from xss_corpus import CORPUS, JOINED, REMOTE_HOST

from nbchat.core import registry
from nbchat.core.markdown import render_html
from nbchat.core.types import Reply
from nbchat.notebook.compare import CompareResult
from nbchat.notebook.magics import ChatMagics

IDS = [m for m, _ in CORPUS]


@pytest.fixture(scope="module")
def shell():
    """A real IPython shell with the magics, recording every display message."""
    provider = FakeProvider("xss")
    registry.register(provider)
    ip = InteractiveShell.instance()
    magics = ChatMagics(shell=ip)
    magics.update_interval = 0.0
    ip.register_magics(magics)
    sent: list[dict] = []
    publish, clear = ip.display_pub.publish, ip.display_pub.clear_output
    ip.display_pub.publish = lambda data, *a, **k: sent.append(data)
    ip.display_pub.clear_output = lambda wait=False: sent.append({"clear": True})
    yield ip, provider, sent
    ip.display_pub.publish, ip.display_pub.clear_output = publish, clear
    if magics in ip.configurables:
        ip.configurables.remove(magics)
    registry.unregister("xss")


@pytest.mark.parametrize("marker, payload", CORPUS, ids=IDS)
def test_chat_streamed_one_character_per_chunk(shell, marker, payload):
    ip, provider, sent = shell
    sent.clear()
    provider.enqueue(*payload)
    result = ip.run_cell("%%chat -m xss:echo --new\nGo")
    assert result.error_in_exec is None, result.error_in_exec
    html = [m["text/html"] for m in sent if "text/html" in m]
    assert len(html) >= 2  # the reply (live or frozen, then final) and its footer
    for h in html:
        assert problems(h) == [], h
    assert render_html(payload) in html  # the finished reply, rendered once


@pytest.mark.parametrize("marker, payload", CORPUS, ids=IDS)
def test_displayed_reply(marker, payload):
    reply = Reply(payload, "m", error=ValueError(payload))
    bundle, _ = reply._repr_mimebundle_()
    assert set(bundle) == {"text/html", "text/plain"}
    assert problems(bundle["text/html"]) == []
    assert bundle["text/plain"] == payload


@pytest.mark.parametrize("marker, payload", CORPUS, ids=IDS)
def test_tool_steps_and_refusal_in_the_cell_and_the_displayed_reply(shell, marker, payload):
    """A tool call's name and arguments come from the model, its result may echo them, and a
    refusal is model text too: each is shown escaped, in the cell and in a displayed Reply."""
    from nbchat.core.types import ToolCall

    ip, provider, sent = shell
    sent.clear()
    calls = []

    def lookup(q: str) -> str:
        """Look something up."""
        calls.append(q)
        return payload

    ip.user_ns["lookup"] = lookup
    provider.enqueue(tool_calls=[ToolCall("lookup", {"q": payload}, "c1")],
                     finish_reason="tool_calls")
    provider.enqueue(*payload)
    result = ip.run_cell("%%chat -m xss:echo --new --tools lookup --as r\nGo")
    assert result.error_in_exec is None, result.error_in_exec
    assert calls == [payload]
    html = [m["text/html"] for m in sent if "text/html" in m]
    assert any("nbchat-tool-step" in h for h in html)
    for h in html:
        assert problems(h) == [], h
    reply = ip.user_ns["r"]
    reply.refusal = payload
    bundle, _ = reply._repr_mimebundle_()
    assert problems(bundle["text/html"]) == []
    assert "nbchat-refusal" in bundle["text/html"]


def test_compare_result_with_every_payload_and_joined_pairs():
    for i in range(0, len(CORPUS), 4):
        chunk = CORPUS[i:i + 4]
        result = CompareResult({m: Reply(p, "m", error=ValueError(p)) for m, p in chunk},
                               prompt=chunk[0][1])
        bundle = result._repr_mimebundle_()
        assert set(bundle) == {"text/html", "text/plain"}
        assert problems(bundle["text/html"]) == []
    for _, (a, b) in JOINED:
        page = CompareResult({"a": Reply(a, "m"), "b": Reply(b, "m")})._repr_html_()
        assert problems(page) == []
        cells = re.findall(r"<td[^>]*>(.*?)</td>", page, re.S)
        assert cells[1] == render_html(b)  # the second reply reads as if alone


def panel_markdown() -> str:
    from nbchat.notebook.panel import ChatPanel

    panel = ChatPanel("xss:echo") if "xss" in registry.provider_names() else None
    if panel is None:
        registry.register(FakeProvider("xss"))
        panel = ChatPanel("xss:echo")
    entries: list[dict] = []
    for _, p in CORPUS:
        entries += [{"role": "user", "text": p, "images": []},
                    {"role": "assistant", "model": p, "text": p, "badge": p, "images": []},
                    {"role": "error", "text": p}]
    for _, pair in JOINED:
        entries += [{"role": "assistant", "text": t, "images": []} for t in pair]
    panel.transcript = entries
    return panel.to_markdown()


@pytest.fixture(scope="module")
def exported_markdown():
    return panel_markdown()


def test_panel_markdown_read_by_markdown_it(exported_markdown):
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark", {"html": True}).render(exported_markdown)
    assert problems(html) == []
    for marker, _ in CORPUS:
        assert marker in visible_text(html)


def test_panel_markdown_read_by_nbconverts_markdown(exported_markdown):
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    html = markdown2html_mistune(exported_markdown)
    assert problems(html) == []


def test_panel_markdown_keeps_each_message_in_its_own_block(exported_markdown):
    blocks = [b for b in exported_markdown.rstrip("\n").split("\n\n") if b.startswith("<div")]
    assert len(blocks) == 3 * len(CORPUS) + 2 * len(JOINED)
    assert all("\n" not in b for b in blocks)


# ---- nbconvert ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported_html(tmp_path_factory):
    import nbclient
    import nbformat
    from nbconvert import HTMLExporter
    from xss_notebook import write

    folder = tmp_path_factory.mktemp("xss_nb")
    nb = nbformat.read(write(folder / "xss.ipynb"), as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors[0]
    body, _ = HTMLExporter().from_notebook_node(nb)
    path = folder / "xss.html"
    path.write_text(body)
    return nb, body, path


def test_executed_notebook_has_one_output_per_chat_and_every_output_is_inert(exported_html):
    nb, _, _ = exported_html
    chats = [c for c in nb.cells if c.source.startswith("%%chat")]
    assert len(chats) == len(CORPUS) + 1
    for cell in chats:
        assert len(cell.outputs) == 2, cell.source  # the reply, and its footer
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            html = o.get("data", {}).get("text/html")
            if html is not None:
                assert problems(html) == [], (cell.source, html)


def test_nbconvert_html_holds_no_live_payload(exported_html):
    """Read as a whole page: nbconvert's own scripts are there, but none runs a payload, every
    widget-state script is still JSON (no `</script>` broke out), no element has an event
    handler, no link is javascript:/vbscript:/data:, the remote host is only a link target."""
    _, body, _ = exported_html
    assert document_problems(body) == []
    assert 'type="application/vnd.jupyter.widget-state+json"' in body  # the panel's state


def open_in_chromium(path: Path) -> dict:
    """Load a page in Debian's Chromium: the dialogs it opened, the requests it made to the
    corpus' remote host, its javascript:/vbscript:/data: links, and its text."""
    from playwright.sync_api import sync_playwright

    seen: dict = {"dialogs": [], "remote": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                     args=["--headless", "--no-sandbox", "--disable-gpu",
                                           "--disable-quic", "--no-first-run",
                                           "--disable-background-networking"])
        try:
            page = browser.new_page()
            page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
            page.on("request", lambda r: seen["remote"].append(r.url)
                    if REMOTE_HOST in r.url else None)
            page.goto(path.as_uri(), wait_until="load", timeout=60_000)
            page.wait_for_timeout(1500)
            seen["links"] = page.evaluate(
                "() => [...document.querySelectorAll('a[href]')].map(a => a.href)"
                ".filter(h => /^\\s*(javascript|vbscript|data):/i.test(h))")
            seen["text"] = page.evaluate("() => document.body.innerText")
        finally:
            browser.close()
    return seen


def test_the_chromium_check_sees_a_live_payload(tmp_path):
    """The check below can fail: a page with live payloads trips all three."""
    page = tmp_path / "live.html"
    page.write_text(f"<img src=x onerror=\"alert('h01')\"><img src='http://{REMOTE_HOST}/m18.png'>"
                    "<a href=\"javascript:alert('m01')\">x</a>")
    seen = open_in_chromium(page)
    assert seen["dialogs"] == ["h01"] and seen["remote"] and seen["links"]


def test_nbconvert_html_in_chromium(exported_html):
    """Open the export as a reader would: no dialog, no request to the remote host, no
    javascript: link in the page, and every payload on it as text."""
    _, _, path = exported_html
    seen = open_in_chromium(path)
    assert seen["dialogs"] == [] and seen["remote"] == [] and seen["links"] == []
    for marker, _ in CORPUS:
        assert marker in seen["text"], marker


def test_rendering_rules_hold_in_nbconvert_html(exported_html):
    from xss_notebook import RULES

    nb, body, _ = exported_html
    cell = next(c for c in nb.cells if "rules" in c.metadata.get("tags", []))
    out = cell.outputs[0].data["text/html"]
    assert out == render_html(RULES) and out in body
    assert re.search(r"<h1>Heading one</h1>\s*<h2>Heading two</h2>", out)
    assert out.count('class="math mathjax_process') == 2  # $x^2$ and \(a+b\)
    assert out.count('class="math math-display mathjax_process') == 2  # $$y_1$$ and \[c = d\]
    assert "<p>If I put $100 in and add $50, I have $150.</p>" in out
    assert "<blockquote>\n<p>a quoted line</p>\n</blockquote>" in out
    assert '<td style="text-align:right">36</td>' in out
    assert re.search(r"<ol>\s*<li>\s*<p>first</p>\s*</li>\s*<li>\s*<p>second</p>\s*<ul>", out)
    assert out.count("<ol") == 1 and '<code class="language-python">' in out


@pytest.mark.parametrize("marker, payload", CORPUS[:40], ids=IDS[:40])
def test_models_table_with_ids_and_reasons_from_a_server(marker, payload):
    """Model ids and error reasons come from servers' listings: shown as text, inert."""
    from nbchat.core.types import ModelInfo
    from nbchat.notebook.table import ModelTable

    table = ModelTable([ModelInfo(id=f"openai:{payload}", provider="openai")],
                       problems={"plugin": payload})
    page = table._repr_html_()
    assert problems(page) == [] and marker in visible_text(page)
