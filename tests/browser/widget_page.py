"""The shipped widget bundles (nbchat/static) on a bare page in Chromium, with a stand-in for the
anywidget model: enough to feed a ChatPanel or CompareView its traits and custom messages.

The page is served by Playwright's router from a made-up origin; every other request is recorded
in `page.remote` and answered here, so nothing leaves the machine.
"""

from __future__ import annotations

from nbchat.notebook.widgets import STATIC

#: loopback, so the page is a secure context (the clipboard needs one); no server listens there
ORIGIN = "http://127.0.0.1:9"

HARNESS = """
window.nb = {
  widgets: [],
  async mount(name, state) {
    const mod = await import(`/${name}.js`);
    const listeners = {};
    const sent = [];
    const model = {
      state: { ...state },
      get(k) { return this.state[k]; },
      set(k, v) { this.state[k] = v; },
      save_changes() {},
      on(evt, cb) { (listeners[evt] ||= []).push(cb); },
      off(evt, cb) { listeners[evt] = (listeners[evt] || []).filter((f) => f !== cb); },
      send(msg) { sent.push(msg); },
    };
    const el = document.createElement("div");
    el.className = "widget-" + this.widgets.length;
    document.body.append(el);
    const cleanup = mod.default.render({ model, el });
    this.widgets.push({
      model, el, sent, cleanup,
      emit(msg, buffers = []) { for (const f of listeners["msg:custom"] || []) f(msg, buffers); },
      change(k, v) { model.state[k] = v; for (const f of listeners["change:" + k] || []) f(); },
    });
    return this.widgets.length - 1;
  },
  frame() { return new Promise((r) => requestAnimationFrame(() => r())); },
  // past the renderer's update interval (100 ms for replies under 25 KB) and one more frame
  settle() { return new Promise((r) => setTimeout(r, 150)).then(() => this.frame()); },
  // one update interval: each delta sent after this gets its own update
  tick() { return new Promise((r) => setTimeout(r, 105)); },
  // a panel's reply as the kernel sends it: start, deltas of `size` characters (one per frame)
  async stream(i, text, size, model = "m") {
    const w = this.widgets[i];
    w.emit({ type: "start", model });
    for (let p = 0; p < text.length; p += size) {
      w.emit({ type: "delta", text: text.slice(p, p + size) });
      await this.frame();
    }
    await this.settle();
  },
};
"""

PANEL_STATE = {"model": "m", "models": ["m"], "system": "", "temperature": None,
               "max_tokens": None, "controls": [], "busy": False, "status": "", "transcript": []}


def open_bare(page) -> None:
    """Serve the bundles and a blank page that loads nbchat.css, like anywidget does."""
    page.remote = []

    def route(r):
        url = r.request.url
        if url.startswith(ORIGIN + "/"):
            name = url[len(ORIGIN) + 1:].split("?")[0]
            if name in ("panel.js", "compare.js"):
                return r.fulfill(status=200, content_type="text/javascript",
                                 body=(STATIC / name).read_text())
            if name == "index.html":
                css = (STATIC / "nbchat.css").read_text()
                html = f"<!doctype html><html><head><style>{css}</style></head><body></body></html>"
                return r.fulfill(status=200, content_type="text/html", body=html)
            return r.fulfill(status=404, body="")
        if not url.startswith("data:"):
            page.remote.append(url)
        return r.fulfill(status=404, body="")

    page.route("**/*", route)
    page.goto(f"{ORIGIN}/index.html")
    page.add_script_tag(content=HARNESS)


def mount(page, name: str, state: dict) -> int:
    return page.evaluate("([n, s]) => nb.mount(n, s)", [name, state])


def mount_panel(page, transcript: list[dict] | None = None) -> int:
    return mount(page, "panel", {**PANEL_STATE, "transcript": transcript or []})


def reply(text: str, model: str = "m") -> dict:
    return {"role": "assistant", "model": model, "text": text, "images": [], "badge": model,
            "interrupted": False}


def stream(page, i: int, text: str, size: int = 8) -> None:
    page.evaluate("([i, t, s]) => nb.stream(i, t, s)", [i, text, size])


def finish(page, i: int, transcript: list[dict]) -> None:
    """The turn's end: the kernel rewrites the transcript trait."""
    page.evaluate("([i, t]) => nb.widgets[i].change('transcript', t)", [i, transcript])


def body(page, i: int, n: int = -1):
    """The n-th message body of widget i (a Playwright locator)."""
    bodies = page.locator(f".widget-{i} .nbchat-body")
    return bodies.nth(n) if n >= 0 else bodies.last
