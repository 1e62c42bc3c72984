"""Panel rendering cost in Chromium: main-thread time, streaming versus rendering once.

The shipped ChatPanel bundle (nbchat/static/panel.js) runs on a bare page with a stand-in model
(tests/browser/widget_page.py). Main-thread time is Chromium's own `TaskDuration` (DevTools
Performance metrics: script, style, layout and paint tasks), read before and after each run.

- A 64,000-token Markdown reply (paragraphs, lists, code, tables, math; ~4.2 characters a token)
  streamed as the kernel sends it: a delta of 40 tokens every 50 ms (the kernel's batching
  interval; a fast model at 800 tokens/s, so 80 s of streaming), then the transcript that ends
  the turn; against the same reply restored at once. Target: streaming <= 3x rendering once.
- 128 KB of `" __x"` (the pattern that froze the old renderer) against 128 KB of ordinary prose,
  each rendered once and each streamed in 4 KB deltas every 50 ms. Target: <= 2x the prose.

    .venv/bin/python benchmarks/bench_panel_render.py
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "browser"))

from widget_page import mount_panel, open_bare, reply  # noqa: E402

WORDS = ("the model reads a long answer about rivers and mountains while tokens arrive in small "
         "batches from the kernel so every paragraph grows before it ends with some numbers "
         "like 42 and code such as print and values").split()


def chromium():
    spec = importlib.util.spec_from_file_location(
        "browser_conftest", os.path.join(HERE, "..", "tests", "browser", "conftest.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    spec.loader.exec_module(mod)
    return mod.CHROMIUM, mod.CHROMIUM_ARGS


def prose(n_words: int, rng: random.Random, markdown: bool = True) -> str:
    """Ordinary reply text: paragraphs of 40-120 words, with lists, code, tables and math."""
    out: list[str] = []
    words = 0
    while words < n_words:
        kind = rng.random() if markdown else 0.0
        if kind < 0.7:
            n = rng.randint(40, 120)
            para = " ".join(rng.choice(WORDS) for _ in range(n))
            if markdown:
                para = para.replace(" rivers ", " **rivers** ").replace(" code ", " `code` ")
                para = para.replace(" numbers ", " numbers $x_i^2$ ")
            out.append(para[0].upper() + para[1:] + ".")
        elif kind < 0.8:
            n = rng.randint(3, 8)
            out.append("\n".join(f"{i + 1}. " + " ".join(rng.choice(WORDS) for _ in range(8))
                                 for i in range(n)))
        elif kind < 0.88:
            lines = [f"x{i} = compute({i}, 'value')  # step {i}" for i in range(rng.randint(4, 12))]
            out.append("```python\n" + "\n".join(lines) + "\n```")
        elif kind < 0.95:
            rows = "\n".join(f"| {rng.choice(WORDS)} | {i} | {rng.random():.3f} |"
                             for i in range(rng.randint(3, 8)))
            out.append("| name | n | score |\n|---|--:|--:|\n" + rows)
        else:
            out.append("## " + " ".join(rng.choice(WORDS) for _ in range(4)))
        words += len(out[-1].split())
    return "\n\n".join(out)


def task_seconds(cdp) -> float:
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    return next(m["value"] for m in metrics if m["name"] == "TaskDuration")


def measure(browser, text: str, mode: str, delta: int = 0) -> float:
    """Main-thread seconds to show `text` in a fresh panel: restored once, or streamed."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    try:
        open_bare(page)
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable", {"timeDomain": "threadTicks"})
        i = mount_panel(page)
        page.evaluate("() => nb.frame()")
        before = task_seconds(cdp)
        if mode == "once":
            page.evaluate("([i, t]) => { nb.widgets[i].change('transcript', t); }",
                          [i, [reply(text)]])
        else:
            page.evaluate(
                "async ([i, t, n]) => { const w = nb.widgets[i];"
                " w.emit({type: 'start', model: 'm'});"
                " for (let p = 0; p < t.length; p += n) {"
                " w.emit({type: 'delta', text: t.slice(p, p + n)});"
                " await new Promise((r) => setTimeout(r, 50)); } await nb.settle(); }",
                [i, text, delta])
            page.evaluate("([i, t]) => { nb.widgets[i].change('transcript', t); }",
                          [i, [reply(text)]])
        page.evaluate("() => nb.frame().then(() => nb.frame())")  # style, layout and paint done
        seconds = task_seconds(cdp) - before
        assert page.remote == []
        shown = page.locator(".nbchat-body").last.evaluate("el => el.textContent.length")
        assert shown > 0.5 * len(text) * (0.5 if "```" in text else 1)
        return seconds
    finally:
        context.close()


def best(fn, runs: int = 3) -> float:
    return min(fn() for _ in range(runs))


def main() -> int:
    from playwright.sync_api import sync_playwright

    exe, args = chromium()
    rng = random.Random(7)
    long_reply = prose(64_000 * 3 // 4, rng)  # ~0.75 words a token
    tokens = 64_000
    per_token = len(long_reply) / tokens
    delta = round(40 * per_token)
    underscores = " __x" * 32768
    plain = prose(30_000, random.Random(3), markdown=False)[: len(underscores)]
    ok = True
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=args, headless=True)
        once = best(lambda: measure(browser, long_reply, "once"))
        streamed = best(lambda: measure(browser, long_reply, "stream", delta), runs=1)
        ratio = streamed / once
        ok &= ratio <= 3
        print(f"64,000-token reply ({len(long_reply)} chars, {len(long_reply) // delta} deltas of "
              f"{delta} chars): rendered once {once * 1000:.0f} ms, "
              f"streamed {streamed * 1000:.0f} ms"
              f" main thread = {ratio:.2f}x (target <= 3) {'OK' if ratio <= 3 else 'MISSED'}")
        for mode, size in (("once", 0), ("stream", 4096)):
            t_plain = best(lambda m=mode, s=size: measure(browser, plain, m, s))
            t_under = best(lambda m=mode, s=size: measure(browser, underscores, m, s))
            r = t_under / t_plain
            ok &= r <= 2
            label = "rendered once" if mode == "once" else f"streamed in {size}-char deltas"
            print(f"128 KB of ' __x' vs 128 KB of prose, {label}: {t_under * 1000:.0f} ms vs "
                  f"{t_plain * 1000:.0f} ms = {r:.2f}x (target <= 2) "
                  f"{'OK' if r <= 2 else 'MISSED'}")
        browser.close()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
