"""The ChatPanel front end draws its option controls from the specs the kernel sends, run in
Chromium on a blank page against a stand-in for the widget model (no Jupyter needed)."""

from __future__ import annotations

import pytest

from nbchat.core.options import control_spec
from nbchat.notebook.widgets import STATIC

pytestmark = pytest.mark.browser

#: a widget model as anywidget hands it to render(): get/set/save_changes/on/off/send
FAKE_MODEL = """
([source, state]) => {
  const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
  return import(url).then((mod) => {
    const handlers = {};
    const model = {
      saved: [],
      get: (k) => state[k],
      set: (k, v) => { state[k] = v; },
      save_changes: () => model.saved.push(JSON.parse(JSON.stringify(state))),
      on: (ev, f) => { (handlers[ev] = handlers[ev] || []).push(f); },
      off: (ev, f) => { handlers[ev] = (handlers[ev] || []).filter((g) => g !== f); },
      send: () => {},
      handlers,
    };
    const el = document.createElement("div");
    document.body.append(el);
    window.panelModel = model;
    window.panelCleanup = mod.default.render({ model, el });
  });
}
"""


@pytest.fixture
def panel_page(page):
    # three controls, one of which (top_p) the panel does not have today: the front end must
    # draw whatever the specs say, not a fixed set
    controls = [control_spec(n) for n in ("temperature", "top_p", "max_tokens")]
    state = {"model": "fake:echo", "models": ["fake:echo"], "system": "", "busy": False,
             "transcript": [], "controls": controls, "temperature": 0.3, "top_p": None,
             "max_tokens": 64}
    page.set_content("<body></body>")
    page.evaluate(FAKE_MODEL, [(STATIC / "panel.js").read_text(), state])
    page.controls = controls
    return page


def test_controls_are_drawn_from_the_specs(panel_page):
    for spec in panel_page.controls:
        box = panel_page.get_by_label(spec["label"], exact=True)
        assert box.get_attribute("type") == "number"
        assert box.get_attribute("title") == spec["description"]
        assert box.get_attribute("step") == f"{spec['step']:g}"
        assert box.get_attribute("min") == f"{spec['min']:g}"
        expected_max = None if spec["max"] is None else f"{spec['max']:g}"
        assert box.get_attribute("max") == expected_max
    assert panel_page.get_by_label("Temperature", exact=True).input_value() == "0.3"
    assert panel_page.get_by_label("Top p", exact=True).input_value() == ""
    assert panel_page.get_by_label("Max tokens", exact=True).input_value() == "64"


def test_edits_are_kept_in_the_declared_range(panel_page):
    def edit(label: str, text: str):
        panel_page.get_by_label(label, exact=True).fill(text)
        panel_page.get_by_label(label, exact=True).dispatch_event("change")
        return panel_page.evaluate("() => window.panelModel.saved.at(-1)")

    assert edit("Temperature", "5")["temperature"] == 2  # clamped to 0..2
    assert edit("Top p", "0.25")["top_p"] == 0.25
    assert edit("Top p", "-1")["top_p"] == 0
    assert edit("Max tokens", "7.6")["max_tokens"] == 8  # an integer
    assert edit("Max tokens", "0")["max_tokens"] == 1  # at least 1
    assert edit("Temperature", "")["temperature"] is None  # back to the model's default
    # a value set from Python shows in its control
    panel_page.evaluate("""() => {
        window.panelModel.set("top_p", 0.5);
        for (const f of window.panelModel.handlers["change:top_p"]) f();
    }""")
    assert panel_page.get_by_label("Top p", exact=True).input_value() == "0.5"
    # cleanup stops listening to every control's trait
    panel_page.evaluate("() => window.panelCleanup()")
    left = panel_page.evaluate("""() => ["temperature", "top_p", "max_tokens"]
        .map((n) => (window.panelModel.handlers[`change:${n}`] || []).length)""")
    assert left == [0, 0, 0]
