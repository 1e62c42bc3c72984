"""ChatPanel habits (issue 16) in real JupyterLab 4 and Notebook 7, in Debian's Chromium.

One server start per app runs a notebook with a panel on the local model, a panel on the slow
loopback model (conftest's `evil_server`) and a compare of both, then checks in turn: keys typed
in the panel never reach the notebook (Shift+Enter adds a line, the cell is not run again);
Escape stops a streaming reply; a reader scrolled up stays put while tokens arrive, with a
"Jump to latest" control; the model picker finds a model by part of its id and says what to set;
Regenerate (with another model), Edit and Delete change `panel.messages` as shown, New chat can
be undone; compare's finished table keeps the rendered Markdown in equal columns; light and dark
screenshots at full and narrow width. The live panel shows its transcript once and a turn does
not redraw it; the notebook saved with its widget state shows the transcript once reopened
without a kernel, exported by nbconvert (offline) with and without the widget state, and
reopened without the state.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from saved_notebook import saved_widget_state

pytestmark = pytest.mark.browser
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

#: earlier messages in the slow panel, so its log scrolls
FILLER = [
    entry
    for i in range(8)
    for entry in (
        {"role": "user", "text": f"Question {i}?", "images": []},
        {"role": "assistant", "model": "openai:evil", "text": f"Answer {i}. " + "Words " * 60,
         "images": [], "badge": "openai:evil", "interrupted": False},
    )
]

CELLS = [
    "import json\nimport nbchat\nfrom nbchat import ChatPanel",
    "panel = ChatPanel('local', temperature=0, max_tokens=8)\npanel",
    "print(json.dumps([[m.role, m.text] for m in panel.messages]))",
    f"slow = ChatPanel('openai:evil')\nslow.transcript = {FILLER!r}\nslow",
    "nbchat.compare(['local', 'openai:evil'], 'Say hello.', temperature=0, max_tokens=16)",
]


def write_notebook(path: Path) -> None:
    nb = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": uuid.uuid4().hex[:8],
                   "metadata": {}, "outputs": [], "source": src} for src in CELLS],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                    "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb))


def shot(page, app, name: str) -> None:
    if not page.is_closed():
        page.screenshot(path=str(ARTIFACTS / f"{app.kind}-habits-{name}.png"))


def menu(page, top: str, item_selector: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{top}$")).first.click()
    page.locator(item_selector).first.click()


def test_panel_habits(jupyter, page):
    write_notebook(jupyter.root / "habits.ipynb")
    try:
        check_habits(jupyter, page)
    except BaseException:
        shot(page, jupyter, "failure")
        raise


def cell(page, i: int):
    return page.locator(".jp-Notebook .jp-Cell").nth(i)


def prompt_of(page, i: int) -> str:
    return cell(page, i).locator(".jp-InputPrompt").first.inner_text().strip()


def messages(page) -> list[list[str]]:
    """Run the cell that prints `panel.messages` (Shift+Enter in its editor) and read it."""
    out = cell(page, 2).locator(".jp-OutputArea-output")
    before = out.first.inner_text() if out.count() else ""
    cell(page, 2).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(
        "([el, before]) => { const o = el.querySelector('.jp-OutputArea-output');"
        " return o && o.innerText.trim().startsWith('[') && o.innerText !== before; }",
        arg=[cell(page, 2).element_handle(), before],
    )
    return json.loads(out.first.inner_text())


def wait_idle(panel) -> None:
    panel.get_by_role("button", name="Stop", exact=True).wait_for()
    panel.page.wait_for_function(
        "el => el.querySelector('.nbchat-send') && !el.querySelector('.nbchat-send').disabled"
        " && !el.classList.contains('nbchat-busy')",
        arg=panel.element_handle(), timeout=90_000)


def check_habits(app, page):
    with page.expect_websocket(lambda ws: "/channels" in ws.url):
        page.goto(app.url("habits.ipynb"))
    page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').first.wait_for()
    menu(page, "Run", '.lm-Menu-item[data-command="runmenu:run-all"]')

    # ---- compare: the finished table keeps the rendered Markdown, in equal columns ----------
    table = page.locator(".nbchat-compare-result table")
    table.wait_for(timeout=90_000)
    evil_cell = table.locator("tbody tr").first.locator("td").nth(1)
    assert evil_cell.locator("strong", has_text="bold").count() == 1
    assert evil_cell.locator("code", has_text="<b>code</b>").count() == 1
    assert "**bold**" not in evil_cell.inner_text()
    widths = table.locator("thead th").evaluate_all("ths => ths.map(t => t.offsetWidth)")
    assert len(widths) == 2 and abs(widths[0] - widths[1]) <= 2, widths
    table.screenshot(path=str(ARTIFACTS / f"{app.kind}-habits-compare-finished.png"))

    panels = page.locator(".nbchat-panel")
    panels.nth(1).wait_for()
    local, slow = panels.nth(0), panels.nth(1)
    # live, each panel's static copy is in the page, an output of its own after the view, hidden
    page.wait_for_function("document.querySelectorAll('.nbchat-transcript').length === 2")
    assert page.locator(".nbchat-transcript:visible").count() == 0
    # a mark on the drawn view: a turn that redrew the output would lose it
    local.evaluate("el => { el.dataset.view = 'first'; }")
    count_before = prompt_of(page, 1)
    cells_before = page.locator(".jp-Notebook .jp-Cell").count()

    # ---- keys stay in the panel ---------------------------------------------------------------
    message = local.get_by_label("Message", exact=True)
    message.click()
    message.type("first")
    message.press("Shift+Enter")
    message.type("line")
    for key in ["Escape", "ArrowUp", "ArrowDown", "a", "b", "d", "d", "m", "x", "c", "v", "z"]:
        message.press(key)
    assert message.input_value() == "first\nlineabddmxcvz"
    for _ in range("abddmxcvz".__len__()):
        message.press("Backspace")
    assert message.input_value() == "first\nline"
    page.wait_for_timeout(500)  # a run the keys started would have begun
    assert prompt_of(page, 1) == count_before  # the panel's cell did not run again
    assert page.locator(".jp-Notebook .jp-Cell").count() == cells_before  # no cell added/cut
    assert local.locator(".nbchat-msg").count() == 0
    # the system prompt and the picker's search keep their keys too
    system = local.get_by_label("System prompt", exact=True)
    system.click()
    system.press("Shift+Enter")
    system.press("b")
    assert system.input_value() == "\nb"
    system.fill("")
    system.dispatch_event("change")
    assert prompt_of(page, 1) == count_before

    message.press("Enter")  # sends "first\nline"
    first_reply = local.locator("[role=article] .nbchat-badge", has_text="out tokens")
    first_reply.first.wait_for(timeout=90_000)
    wait_idle(local)
    assert local.locator(".nbchat-user .nbchat-body").first.inner_text() == "first\nline"
    message = local.get_by_label("Message", exact=True)
    message.fill("Second?")
    message.press("Enter")
    page.wait_for_function(
        "el => el.querySelectorAll('[role=article] .nbchat-badge').length === 2"
        " && [...el.querySelectorAll('[role=article] .nbchat-badge')].every("
        "b => /out tokens/.test(b.textContent))", arg=local.element_handle(), timeout=90_000)
    wait_idle(local)
    assert local.locator(".nbchat-user").count() == 2
    assert cell(page, 1).inner_text().count("Second?") == 1  # the copy stays hidden
    assert page.locator(".nbchat-transcript:visible").count() == 0
    assert page.locator(".nbchat-panel[data-view=first]").count() == 1  # never redrawn
    assert message.evaluate("el => el === document.activeElement")  # typing goes on
    got = messages(page)
    assert [m[0] for m in got] == ["user", "assistant", "user", "assistant"]
    assert got[0][1] == "first\nline" and got[2][1] == "Second?"

    # ---- the picker: search by part of an id, key status before anything is typed -------------
    local.get_by_role("button", name="Model", exact=True).click()
    search = local.get_by_label("Search models", exact=True)
    search.type("nemotron")
    option = local.get_by_role("option")
    assert option.count() == 1
    assert option.first.get_attribute("data-id") == "nvidia:nvidia/llama-3.1-nemotron-70b-instruct"
    hint = local.locator(".nbchat-picker-group .nbchat-picker-hint")
    assert "NVIDIA_API_KEY" in hint.first.inner_text()
    assert "tools" in option.first.inner_text()
    shot(page, app, "picker")
    search.fill("")
    search.type("smol")
    assert local.get_by_role("option").first.get_attribute("data-id") == "llamacpp:smollm2"
    search.press("Escape")
    assert local.locator(".nbchat-picker").is_hidden()
    assert prompt_of(page, 1) == count_before

    # ---- regenerate with another model: the last reply is replaced -----------------------------
    last = local.locator(".nbchat-assistant").last
    last.hover()
    last.get_by_role("button", name="Regenerate reply with another model").click()
    search = local.get_by_label("Search models", exact=True)
    search.type("openai:evil")  # not in any table: the picker offers the typed id
    assert local.get_by_role("option").first.inner_text() == "Use “openai:evil”"
    search.press("Enter")
    local.locator("[role=article] .nbchat-badge", has_text="openai:evil").wait_for(timeout=60_000)
    wait_idle(local)
    got = messages(page)
    assert [m[0] for m in got] == ["user", "assistant", "user", "assistant"]
    assert got[2][1] == "Second?" and got[3][1].startswith("Hello <img src=x")
    assert local.locator(".nbchat-assistant").count() == 2

    # ---- edit the first message and resend from there ------------------------------------------
    local.get_by_role("button", name="Edit message 1").click()
    message = local.get_by_label("Message", exact=True)
    assert message.input_value() == "first\nline"
    assert "Editing message 1" in local.locator(".nbchat-editing").inner_text()
    message.fill("Edited question")
    message.press("Enter")
    page.wait_for_function(
        "el => el.querySelectorAll('.nbchat-user').length === 1 &&"
        " el.querySelector('.nbchat-user .nbchat-body').innerText === 'Edited question' &&"
        " /out tokens/.test(el.querySelector('[role=article] .nbchat-badge')?.textContent || '')",
        arg=local.element_handle(), timeout=90_000)
    wait_idle(local)
    got = messages(page)
    assert [m[0] for m in got] == ["user", "assistant"] and got[0][1] == "Edited question"

    # ---- delete a turn; New chat, then undo it --------------------------------------------------
    message.fill("Third")
    message.press("Enter")
    page.wait_for_function("el => el.querySelectorAll('[role=article]').length === 2"
                           " && !el.classList.contains('nbchat-busy')",
                           arg=local.element_handle(), timeout=90_000)
    wait_idle(local)
    local.get_by_role("button", name="Delete message 1").click()
    page.wait_for_function("el => el.querySelectorAll('.nbchat-user').length === 1",
                           arg=local.element_handle())
    assert local.locator(".nbchat-user .nbchat-body").inner_text() == "Third"
    got = messages(page)
    assert [m[0] for m in got] == ["user", "assistant"] and got[0][1] == "Third"
    local.get_by_role("button", name="New chat", exact=True).click()
    page.wait_for_function("el => !el.querySelector('.nbchat-msg')", arg=local.element_handle())
    assert messages(page) == []
    local.get_by_role("button", name="Undo new chat", exact=True).click()
    local.locator(".nbchat-user").first.wait_for()
    assert local.get_by_role("button", name="Undo new chat", exact=True).is_hidden()
    got = messages(page)
    assert [m[0] for m in got] == ["user", "assistant"] and got[0][1] == "Third"

    # ---- a scrolled-up reader stays put while tokens arrive; Escape stops the reply -------------
    slow.scroll_into_view_if_needed()
    log = slow.locator(".nbchat-log")
    slow_msg = slow.get_by_label("Message", exact=True)
    slow_msg.fill("long")
    slow_msg.press("Enter")
    page.wait_for_function(
        "el => { const a = el.querySelectorAll('[role=article]');"
        " return a.length === 9 && a[8].querySelector('.nbchat-body').textContent.length > 5; }",
        arg=slow.element_handle(), timeout=30_000)
    assert log.evaluate("l => l.scrollHeight - l.scrollTop - l.clientHeight") < 4  # followed
    log.hover()
    page.mouse.wheel(0, -600)
    page.wait_for_timeout(300)
    top = log.evaluate("l => l.scrollTop")
    grown = log.evaluate("l => l.querySelector('[role=article]:last-of-type .nbchat-body')"
                         ".textContent.length")
    page.wait_for_timeout(1500)  # about a dozen words arrive meanwhile
    assert log.evaluate("l => l.scrollTop") == top
    now = log.evaluate("l => l.querySelector('[role=article]:last-of-type .nbchat-body')"
                       ".textContent.length")
    assert now > grown  # tokens did arrive
    jump = slow.get_by_role("button", name="↓ Jump to latest")
    assert jump.is_visible()
    shot(page, app, "scrolled-up")
    slow_msg.press("Escape")  # stops the reply
    slow.locator("[role=article].nbchat-interrupted").wait_for(timeout=30_000)
    wait_idle(slow)
    badge = slow.locator("[role=article]").last.locator(".nbchat-badge")
    assert "interrupted" in badge.inner_text()
    slow = page.locator(".nbchat-panel").nth(1)
    jump = slow.get_by_role("button", name="↓ Jump to latest")
    if jump.is_visible():
        jump.click()
    log = slow.locator(".nbchat-log")
    page.wait_for_function("l => l.scrollHeight - l.scrollTop - l.clientHeight < 4",
                           arg=log.element_handle())

    # ---- look: light and dark, full width and narrow --------------------------------------------
    local = page.locator(".nbchat-panel").nth(0)
    local.scroll_into_view_if_needed()
    shot(page, app, "light")
    # a window narrow enough that the panel is about 480 px wide
    narrow = 1280
    for _ in range(3):  # Notebook 7 centres a notebook of bounded width: measure again
        narrow -= int(local.evaluate("el => el.getBoundingClientRect().width")) - 480
        page.set_viewport_size({"width": narrow, "height": 1000})
        page.wait_for_timeout(300)
    local.scroll_into_view_if_needed()
    check_narrow(local)
    shot(page, app, "light-narrow")
    page.set_viewport_size({"width": 1280, "height": 1000})
    light = local.evaluate("el => getComputedStyle(el).backgroundColor")
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Settings$")).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Theme$")).first.hover()
    page.locator(".lm-Menu-item", has_text=re.compile("(JupyterLab )?Dark")).first.click()
    page.wait_for_function("([el, light]) => getComputedStyle(el).backgroundColor !== light",
                           arg=[local.element_handle(), light])
    page.wait_for_timeout(500)
    local.scroll_into_view_if_needed()
    shot(page, app, "dark")
    page.set_viewport_size({"width": narrow, "height": 1000})
    page.wait_for_timeout(500)
    local.scroll_into_view_if_needed()
    shot(page, app, "dark-narrow")
    page.set_viewport_size({"width": 1280, "height": 1000})

    check_saved(app, page)


def check_narrow(panel) -> None:
    """At a narrow width the controls wrap and the message box keeps most of the width."""
    sizes = panel.evaluate(
        """el => {
          const r = el.getBoundingClientRect();
          const box = el.querySelector('textarea[aria-label=Message]').getBoundingClientRect();
          const pick = el.querySelector('.nbchat-picker-button').getBoundingClientRect();
          return {panel: r.width, right: r.right, box: box.width, pickRight: pick.right};
        }"""
    )
    assert 400 <= sizes["panel"] <= 540, sizes
    assert sizes["box"] >= 0.85 * (sizes["panel"] - 20), sizes
    assert sizes["pickRight"] <= sizes["right"], sizes


def check_saved(app, page) -> None:
    """Saved (with widget state), the kernel gone: the transcript shows once when reopened,
    when exported by nbconvert with and without the widget state, and when reopened without it
    (Lab then cannot draw the widget: the copy shows)."""
    menu(page, "File", '.lm-Menu-item[data-command="docmanager:save"]')
    path = app.root / "habits.ipynb"
    deadline = time.monotonic() + 60
    while "Third" not in saved_widget_state(path):
        assert time.monotonic() < deadline, "the widget state was not saved"
        time.sleep(0.2)
    page.close()
    api = f"{app.base}/api/sessions"
    for session in httpx.get(api, params={"token": app.token}).json():
        httpx.delete(f"{api}/{session['id']}", params={"token": app.token}).raise_for_status()

    # two outputs: the widget view, then the static copy of the transcript
    nb = json.loads(path.read_text())
    view, copy = nb["cells"][1]["outputs"]
    assert set(view["data"]) == {WIDGET_VIEW, "text/plain"}
    html, text = ("".join(copy["data"][k]) for k in ("text/html", "text/plain"))
    assert "Third" in html and "Third" in text

    # reopened with the widget state: the panel is drawn from it, the copy hidden
    assert reopened_text(page, app, "habits.ipynb", ".nbchat-panel .nbchat-user",
                         "reopened").count("Third") == 1

    # nbconvert, offline: with the widget state its widget manager (from a CDN) cannot load and
    # the copy shows; without it (Lab's default) the copy shows as well
    assert exported_text(page, app, path, "nbconvert-state").count("Third") == 1
    plain = json.loads(json.dumps(nb))
    del plain["metadata"]["widgets"]
    for c in plain["cells"]:  # as Lab saves a notebook it trusts: the server signs it
        c["metadata"]["trusted"] = True
    httpx.put(f"{app.base}/api/contents/nostate.ipynb", params={"token": app.token},
              json={"type": "notebook", "format": "json", "content": plain}).raise_for_status()
    assert exported_text(page, app, app.root / "nostate.ipynb", "nbconvert").count("Third") == 1

    # reopened without the widget state (saved, so trusted): no model to draw, the copy shows
    assert reopened_text(page, app, "nostate.ipynb", ".nbchat-transcript strong",
                         "reopened-nostate").count("Third") == 1


def reopened_text(page, app, name: str, ready: str, label: str) -> str:
    """What cell 1 of notebook `name` shows, opened in a fresh browser context once `ready`
    is there (and a second more for anything still to draw)."""
    context = page.context.browser.new_context(viewport={"width": 1280, "height": 1000})
    fresh = context.new_page()
    fresh.set_default_timeout(60_000)
    try:
        fresh.goto(app.url(name))
        # Lab's workspace may open the other notebook too, in a hidden tab
        shown = fresh.locator(".jp-NotebookPanel:visible")
        shown.locator(ready).first.wait_for()
        fresh.wait_for_timeout(1000)
        fresh.screenshot(path=str(ARTIFACTS / f"{app.kind}-habits-{label}.png"))
        return shown.locator(".jp-Notebook .jp-Cell").nth(1).inner_text()
    except BaseException:
        fresh.screenshot(path=str(ARTIFACTS / f"{app.kind}-habits-failure-{label}.png"))
        raise
    finally:
        context.close()


def exported_text(page, app, src: Path, label: str) -> str:
    """What cell 1 of `jupyter nbconvert --to html src` shows in Chromium with every request
    but loopback ones refused (nbconvert's page asks a CDN for require.js and the widget
    manager: refused, as offline)."""
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", str(src)],
                   check=True, capture_output=True, timeout=120)
    exported = src.with_suffix(".html").read_text()
    state = "application/vnd.jupyter.widget-state+json" in exported
    assert state == (label == "nbconvert-state"), "the export should hold widget state iff saved"
    view = page.context.browser.new_context()
    viewer = view.new_page()
    refused: list[str] = []

    def route(r):
        if r.request.url.startswith("http") and not r.request.url.startswith("http://127.0.0.1"):
            refused.append(r.request.url)
            return r.abort()
        return r.continue_()

    try:
        viewer.route("**/*", route)
        viewer.set_content(exported, wait_until="load")
        viewer.wait_for_timeout(500)  # a script that was going to draw something has done so
        out = viewer.locator(".jp-Cell").nth(1)
        assert out.locator(".nbchat-transcript strong").count() >= 1
        viewer.screenshot(path=str(ARTIFACTS / f"{app.kind}-habits-{label}.png"))
        assert not state or refused, "nbconvert's page asked no CDN: update this test"
        return out.inner_text()
    finally:
        view.close()
