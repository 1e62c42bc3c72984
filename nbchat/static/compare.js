// CompareView front end: one column per model. Text streams in as custom messages
// ({type: "delta", cols: {index: newText}}), waits as ({type: "status", col, text});
// each column's final state arrives in `columns`.
// Uses h, renderMarkdown, dataImage from markdown.js (prepended by nbchat).

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
  if (stats.duration != null) bits.push(`${stats.duration.toFixed(2)} s total`);
  if (stats.interrupted) bits.push("interrupted");
  return bits.join(" · ");
}

/** @param {{ model: AnyModel<CompareState>, el: HTMLElement }} ctx */
function render({ model, el }) {
  const prompt = h("div", { class: "nbchat-prompt" });
  const cols = h("div", { class: "nbchat-cols" });
  el.append(h("div", { class: "nbchat-compare" }, prompt, cols));
  /** @type {{ model: string, text: string, body: HTMLElement, stats: HTMLElement, frame: number }[]} */
  let views = [];

  function renderAll() {
    prompt.textContent = model.get("prompt") ? `Prompt: ${model.get("prompt")}` : "";
    const columns = model.get("columns") || [];
    views.forEach((v) => cancelAnimationFrame(v.frame));
    cols.replaceChildren();
    const previous = views;
    views = columns.map((/** @type {any} */ c, /** @type {number} */ i) => {
      // a column still streaming keeps the text this view has received so far
      const live = c.state === "waiting" || c.state === "streaming";
      const text = live && previous[i] && previous[i].model === c.model ? previous[i].text : String(c.text || "");
      const body = h("div", { class: "nbchat-col-body" });
      const stats = h("div", { class: "nbchat-col-stats" });
      const col = h(
        "div",
        { class: "nbchat-col", role: "article", "aria-label": String(c.model), "data-state": String(c.state) },
        h("div", { class: "nbchat-col-head" }, String(c.model)),
        stats,
        body,
      );
      cols.append(col);
      if (c.error) col.append(h("div", { class: "nbchat-col-error", role: "alert" }, String(c.error)));
      for (const src of c.images || []) col.append(dataImage(String(src), "generated image"));
      stats.textContent = c.state === "waiting" ? "waiting…" : c.state === "streaming" ? "streaming…" : formatStats(c.stats);
      renderMarkdown(text, body);
      return { model: String(c.model), text, body, stats, frame: 0 };
    });
  }

  /** @param {any} msg */
  function onMessage(msg) {
    if (msg.type === "status") {
      // what a column waits for ("waiting for cerebras, 12 s"); "" once text flows
      const v = views[Number(msg.col)];
      if (v) v.stats.textContent = msg.text ? `${msg.text}…` : v.text ? "streaming…" : "waiting…";
      return;
    }
    if (msg.type !== "delta") return;
    for (const [key, text] of Object.entries(msg.cols)) {
      const v = views[Number(key)];
      if (!v) continue;
      v.text += text;
      v.stats.textContent = "streaming…";
      if (!v.frame) {
        v.frame = requestAnimationFrame(() => {
          v.frame = 0;
          renderMarkdown(v.text, v.body);
        });
      }
    }
  }

  model.on("msg:custom", onMessage);
  model.on("change:columns", renderAll);
  model.on("change:prompt", renderAll);
  renderAll();
  return () => {
    model.off("msg:custom", onMessage);
    model.off("change:columns", renderAll);
    model.off("change:prompt", renderAll);
  };
}

export default /** @satisfies {AnyWidget<CompareState>} */ ({ render });
