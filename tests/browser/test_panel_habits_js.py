"""The panel's habits on the bare page (the shipped bundle, a stand-in model; fast): keys stay
in the panel, the log follows only a reader at its bottom and scrolls fully past a late image,
attachments come back after an error, the picker searches by part of an id."""

from __future__ import annotations

import base64
import io

import pytest
from widget_page import PANEL_STATE, mount, open_bare, reply

pytestmark = pytest.mark.browser

FILLER = [e for i in range(6) for e in ({"role": "user", "text": f"Question {i}?", "images": []},
                                         reply(f"Answer {i}. " + "Words " * 80))]

CATALOG = [
    {"id": "m", "provider": "m", "ready": True, "key": "ready", "hint": "no key needed",
     "vision": None, "tools": None, "description": ""},
    {"id": "cerebras:llama3.1-8b", "provider": "cerebras", "ready": False, "key": "missing",
     "hint": "set CEREBRAS_API_KEY", "vision": False, "tools": True, "description": ""},
    {"id": "nvidia:meta/llama-3.2-11b-vision-instruct", "provider": "nvidia", "ready": False,
     "key": "missing", "hint": "set NVIDIA_API_KEY", "vision": True, "tools": False,
     "description": ""},
]


@pytest.fixture
def bare(page):
    open_bare(page)
    return page


def panel(page, transcript=(), **state) -> int:
    return mount(page, "panel", {**PANEL_STATE, "catalog": CATALOG,
                                 "transcript": list(transcript), **state})


def png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (20, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


GAP = "l => l.scrollHeight - l.scrollTop - l.clientHeight"


def test_keys_in_the_panel_never_reach_document_listeners(bare):
    i = panel(bare)
    bare.evaluate("""() => {
      window.__seen = [];
      document.addEventListener('keydown', (e) => __seen.push('capture ' + e.key), true);
      document.addEventListener('keydown', (e) => __seen.push('bubble ' + e.key));
    }""")
    box = bare.locator(".widget-0").get_by_label("Message", exact=True)
    box.click()
    box.type("ab")
    box.press("Shift+Enter")
    box.type("c")
    for key in ("ArrowUp", "ArrowDown", "End", "Escape", "m", "d"):
        box.press(key)
    assert box.input_value() == "ab\ncmd"
    assert bare.evaluate("() => __seen") == []  # neither Lab's nor Notebook 7's listener
    box.press("Control+s")  # saving the notebook still works from the panel
    assert bare.evaluate("() => __seen") == ["capture s", "bubble s"]
    box.press("Enter")
    sent = bare.evaluate(f"() => nb.widgets[{i}].sent")
    assert sent == [{"type": "send", "text": "ab\ncmd"}]


def test_escape_stops_a_streaming_reply(bare):
    i = panel(bare, busy=True)
    box = bare.locator(".widget-0").get_by_label("Message", exact=True)
    box.press("Escape")
    assert bare.evaluate(f"() => nb.widgets[{i}].sent") == [{"type": "stop"}]


def test_a_scrolled_up_reader_stays_put_and_can_jump_back(bare):
    i = panel(bare, FILLER)
    log = bare.locator(".widget-0 .nbchat-log")
    assert log.evaluate(GAP) < 4  # opens at the bottom
    bare.evaluate(f"() => nb.widgets[{i}].emit({{type: 'start', model: 'm'}})")
    bare.evaluate(f"() => nb.widgets[{i}].emit({{type: 'delta', text: 'Hello '}})")
    bare.evaluate("() => nb.settle()")
    assert log.evaluate(GAP) < 4  # followed while at the bottom
    log.hover()
    bare.mouse.wheel(0, -500)
    bare.wait_for_timeout(200)
    top = log.evaluate("l => l.scrollTop")
    for _ in range(10):
        bare.evaluate(f"() => nb.widgets[{i}].emit({{type: 'delta', text: 'more words here. '}})")
        bare.evaluate("() => nb.tick()")
    bare.evaluate("() => nb.settle()")
    assert log.evaluate("l => l.scrollTop") == top
    jump = bare.get_by_role("button", name="↓ Jump to latest")
    assert jump.is_visible()
    jump.click()
    assert log.evaluate(GAP) < 4 and jump.is_hidden()


def test_an_image_reply_scrolls_fully_once_it_loads(bare):
    i = panel(bare, FILLER)
    log = bare.locator(".widget-0 .nbchat-log")
    b64 = base64.b64encode(png(60, 700)).decode()
    bare.evaluate(f"() => nb.widgets[{i}].emit({{type: 'start', model: 'm'}})")
    bare.evaluate(
        """([i, b64]) => {
          const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
          nb.widgets[i].emit({type: 'image', mime: 'image/png'}, [new DataView(bytes.buffer)]);
        }""", [i, b64])
    bare.wait_for_function("() => [...document.querySelectorAll('.nbchat-image')]"
                           ".some(im => im.complete && im.naturalHeight === 700)")
    bare.evaluate("() => nb.frame()")
    assert log.evaluate(GAP) < 4


def test_attachments_come_back_with_the_prompt_after_an_error(bare):
    i = panel(bare)
    root = bare.locator(".widget-0")
    root.locator("input.nbchat-file").set_input_files(
        files=[{"name": "red.png", "mimeType": "image/png", "buffer": png(8, 8)}])
    root.locator(".nbchat-thumbs img").wait_for()
    box = root.get_by_label("Message", exact=True)
    box.fill("What is this?")
    root.get_by_role("button", name="Send", exact=True).click()
    bare.wait_for_function(f"() => nb.widgets[{i}].sent.length === 1")
    assert root.locator(".nbchat-thumbs img").count() == 0
    bare.evaluate(f"() => nb.widgets[{i}].emit({{type: 'error', prompt: 'What is this?'}})")
    assert box.input_value() == "What is this?"
    assert root.locator(".nbchat-thumbs img").get_attribute("alt") == "red.png"


def test_the_picker_finds_a_model_by_part_of_its_id_and_says_what_to_set(bare):
    i = panel(bare)
    root = bare.locator(".widget-0")
    assert "no key needed" in root.get_by_role("button", name="Model", exact=True).get_attribute(
        "title")
    root.get_by_role("button", name="Model", exact=True).click()
    groups = root.locator(".nbchat-picker-group")
    assert [g.locator(".nbchat-picker-provider").inner_text() for g in groups.all()] == [
        "m", "cerebras", "nvidia"]
    assert root.get_by_role("option").first.inner_text().split("\n")[1:] == ["vision ?",
                                                                            "tools ?"]
    search = root.get_by_label("Search models", exact=True)
    search.type("11b-vis")
    options = root.get_by_role("option")
    assert options.count() == 1
    assert options.first.get_attribute("data-id") == "nvidia:meta/llama-3.2-11b-vision-instruct"
    assert "set NVIDIA_API_KEY" in root.locator(".nbchat-picker-hint").inner_text()
    search.press("Enter")
    assert bare.evaluate(f"() => nb.widgets[{i}].model.get('model')") == \
        "nvidia:meta/llama-3.2-11b-vision-instruct"
    assert bare.evaluate(f"() => nb.widgets[{i}].sent") == [{"type": "catalog"}]
    bare.evaluate(f"() => nb.widgets[{i}].change('model', "
                  "'nvidia:meta/llama-3.2-11b-vision-instruct')")
    assert "set NVIDIA_API_KEY" in root.locator(".nbchat-key-hint").inner_text()


def test_copy_puts_the_reply_text_on_the_clipboard(bare):
    bare.context.grant_permissions(["clipboard-read", "clipboard-write"])
    panel(bare, [{"role": "user", "text": "hi", "images": []}, reply("**Hello** there")])
    bare.get_by_role("button", name="Copy reply").click()
    bare.get_by_role("button", name="Copy reply").filter(has_text="Copied").wait_for()
    assert bare.evaluate("() => navigator.clipboard.readText()") == "**Hello** there"
