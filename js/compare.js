// CompareView front end: one column per model. Text streams in as custom messages
// ({type: "delta", cols: {index: newText}}), waits as ({type: "status", col, text});
// each column's final state arrives in `columns`.

import { dataImage, h } from "./dom.js";
import { handleMarkdownClicks, MarkdownStream, renderMarkdown } from "./markdown.js";

/** @typedef {import("./types").CompareState} CompareState */
/** @template {Record<string, any>} T @typedef {import("./types").AnyModel<T>} AnyModel */
/** @template {Record<string, any>} T @typedef {import("./types").AnyWidget<T>} AnyWidget */

/** @param {any} stats */
function formatStats(stats) {
  if (!stats) return "";
  const bits = [];
  if (stats.ttft != null) bits.push(`first token ${stats.ttft.toFixed(2)} s`);
  if (stats.tps != null) bits.push(`${stats.tps.toFixed(1)} tok/s`);
  if (stats.input_tokens != null || stats.output_tokens != null) {
    bits.push(`${stats.input_tokens ?? "?"} in / ${stats.output_tokens ?? "?"} out tokens`);
  }
  if (stats.failed) {
    // a failed column's time is how long it took to fail, not a total
    bits.push(`failed after ${(stats.duration || 0).toFixed(2)} s`);
  } else if (stats.duration != null) bits.push(`${stats.duration.toFixed(2)} s total`);
  if (stats.interrupted) bits.push("interrupted");
  return bits.join(" · ");
}

/**
 * @typedef {{ model: string, col: HTMLElement, body: HTMLElement, stats: HTMLElement, extras: HTMLElement,
 *   stream: MarkdownStream | null, text: string | null }} ColumnView
 * `stream` while the column's text streams in; `text`, the final text its body shows, after.
 */

/** @param {{ model: AnyModel<CompareState>, el: HTMLElement }} ctx */
function render({ model, el }) {
  const prompt = h("div", { class: "nbchat-prompt" });
  const cols = h("div", { class: "nbchat-cols" });
  el.append(h("div", { class: "nbchat-compare" }, prompt, cols));
  /** @type {ColumnView[]} */
  let views = [];

  /** @param {string} name */
  function column(name) {
    const body = h("div", { class: "nbchat-col-body" });
    const stats = h("div", { class: "nbchat-col-stats" });
    const extras = h("div", { class: "nbchat-col-extras" });
    const col = h(
      "div",
      { class: "nbchat-col", role: "article", "aria-label": name },
      h("div", { class: "nbchat-col-head" }, name),
      stats,
      body,
      extras,
    );
    cols.append(col);
    return { model: name, col, body, stats, extras, stream: null, text: null };
  }

  // A column's body is rendered when its final text arrives; while it streams, only its tail is.
  function renderAll() {
    prompt.textContent = model.get("prompt") ? `Prompt: ${model.get("prompt")}` : "";
    const columns = model.get("columns") || [];
    if (columns.length !== views.length || columns.some((/** @type {any} */ c, /** @type {number} */ i) => String(c.model) !== views[i].model)) {
      for (const v of views) v.stream?.cancel();
      cols.replaceChildren();
      views = columns.map((/** @type {any} */ c) => column(String(c.model)));
    }
    columns.forEach((/** @type {any} */ c, /** @type {number} */ i) => {
      const v = views[i];
      const text = String(c.text || "");
      v.col.setAttribute("data-state", String(c.state));
      if (c.state === "waiting" || c.state === "streaming") {
        if (!v.stream) {
          v.stream = new MarkdownStream(v.body);
          v.text = null;
          if (text) v.stream.append(text);
        }
      } else if (v.stream && v.stream.text === text) {
        v.stream.finish();
        v.stream = null;
        v.text = text;
      } else if (v.text !== text) {
        v.stream?.cancel();
        v.stream = null;
        renderMarkdown(text, v.body);
        v.text = text;
      }
      v.extras.replaceChildren(
        ...(c.error ? [h("div", { class: "nbchat-col-error", role: "alert" }, String(c.error))] : []),
        ...(c.images || []).map((/** @type {any} */ src) => dataImage(String(src), "generated image")),
      );
      v.stats.textContent = c.state === "waiting" ? "waiting…" : c.state === "streaming" ? "streaming…" : formatStats(c.stats);
    });
  }

  /** @param {any} msg */
  function onMessage(msg) {
    if (msg.type === "status") {
      // what a column waits for ("waiting for cerebras, 12 s"); "" once text flows
      const v = views[Number(msg.col)];
      if (v) v.stats.textContent = msg.text ? `${msg.text}…` : (v.stream ? v.stream.text : v.text) ? "streaming…" : "waiting…";
      return;
    }
    if (msg.type !== "delta") return;
    for (const [key, text] of Object.entries(msg.cols)) {
      const v = views[Number(key)];
      if (!v?.stream) continue;
      v.stream.append(String(text));
      v.stats.textContent = "streaming…";
    }
  }

  const stopClicks = handleMarkdownClicks(cols);
  model.on("msg:custom", onMessage);
  model.on("change:columns", renderAll);
  model.on("change:prompt", renderAll);
  renderAll();
  return () => {
    stopClicks();
    for (const v of views) v.stream?.cancel();
    model.off("msg:custom", onMessage);
    model.off("change:columns", renderAll);
    model.off("change:prompt", renderAll);
  };
}

export default /** @satisfies {AnyWidget<CompareState>} */ ({ render });
