"""The ChatPanel's tool-call blocks, refusal line and Run/Deny prompt (js/tool_steps.js), in
Chromium on a blank page against a stand-in for the widget model that records what it sends."""

from __future__ import annotations

import pytest

from nbchat.core.options import control_spec
from nbchat.notebook.widgets import STATIC

pytestmark = pytest.mark.browser

MOUNT = """
([source, state]) => {
  const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
  return import(url).then((mod) => {
    const handlers = {};
    const model = {
      sent: [],
      get: (k) => state[k],
      set: (k, v) => { state[k] = v; },
      save_changes: () => {},
      on: (ev, f) => { (handlers[ev] = handlers[ev] || []).push(f); },
      off: (ev, f) => { handlers[ev] = (handlers[ev] || []).filter((g) => g !== f); },
      send: (msg) => model.sent.push(msg),
      emit: (msg) => { for (const f of handlers["msg:custom"] || []) f(msg, []); },
      change: (k, v) => { state[k] = v; for (const f of handlers["change:" + k] || []) f(); },
    };
    const el = document.createElement("div");
    document.body.append(el);
    window.panelModel = model;
    mod.default.render({ model, el });
  });
}
"""

PAYLOAD = '<img src=x onerror="window.pwned=1">'


@pytest.fixture
def panel_page(page):
    state = {"model": "fake:echo", "models": ["fake:echo"], "system": "", "busy": False,
             "transcript": [], "controls": [control_spec("temperature")], "temperature": None,
             "status": ""}
    page.set_content("<body></body>")
    page.evaluate(MOUNT, [(STATIC / "panel.js").read_text(), state])
    return page


def test_approval_prompt_sends_the_answer_once(panel_page):
    call = f'get_weather({{"city": "{PAYLOAD}"}})'
    panel_page.evaluate("(call) => window.panelModel.emit({type: 'approve', id: 'k1', call})",
                        call)
    prompt = panel_page.get_by_role("group", name="Approve a tool call")
    assert prompt.locator("pre").inner_text() == call  # shown as text, not parsed
    prompt.get_by_role("button", name="Deny").click()
    assert panel_page.evaluate("() => window.panelModel.sent") == [
        {"type": "approval", "id": "k1", "ok": False}]
    assert prompt.get_by_role("button", name="Run").is_disabled()
    panel_page.evaluate("() => window.panelModel.emit({type: 'approve', id: 'k2', call: 'f()'})")
    panel_page.get_by_role("group", name="Approve a tool call").nth(1).get_by_role(
        "button", name="Run").click()
    assert panel_page.evaluate("() => window.panelModel.sent.at(-1)") == {
        "type": "approval", "id": "k2", "ok": True}
    assert panel_page.locator("img").count() == 0
    assert panel_page.evaluate("() => window.pwned") is None


def test_steps_stream_in_and_stay_with_the_reply_and_the_refusal_shows(panel_page):
    panel_page.evaluate("""(payload) => {
        const m = window.panelModel;
        m.emit({type: "start", model: "fake:echo"});
        m.emit({type: "tool", call: "lookup({})", result: payload});
    }""", PAYLOAD)
    step = panel_page.locator("details.nbchat-tool-step")
    assert step.count() == 1 and step.locator("summary").inner_text() == "lookup({})"
    entry = {"role": "assistant", "model": "fake:echo", "text": "", "badge": "b",
             "images": [], "steps": [{"call": "lookup({})", "result": PAYLOAD}],
             "refusal": PAYLOAD}
    panel_page.evaluate("(t) => window.panelModel.change('transcript', t)",
                        [{"role": "user", "text": "q", "images": []}, entry])
    assert step.count() == 1  # the finished reply's block replaces the streamed one
    step.locator("summary").click()
    assert step.locator("pre").inner_text() == PAYLOAD
    assert panel_page.locator(".nbchat-refusal").inner_text() == f"Refused: {PAYLOAD}"
    assert panel_page.locator("img").count() == 0
    assert panel_page.evaluate("() => window.pwned") is None
