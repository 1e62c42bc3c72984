// ChatPanel front end. Streaming text arrives as custom messages carrying only new text;
// the whole transcript arrives as the `transcript` trait at the end of each turn.

import { appendText, bytesToDataUrl, dataImage, h } from "./dom.js";
import { handleMarkdownClicks, MarkdownStream, renderMarkdown } from "./markdown.js";
import { approvalBlock, finishToolParts, toolStepBlock } from "./tool_steps.js";

/** @typedef {import("./types").PanelState} PanelState */
/** @typedef {import("./types").ControlSpec} ControlSpec */
/** @template {Record<string, any>} T @typedef {import("./types").AnyModel<T>} AnyModel */
/** @template {Record<string, any>} T @typedef {import("./types").AnyWidget<T>} AnyWidget */

/**
 * @param {string} label
 * @param {Record<string, string>} [attrs]
 */
function button(label, attrs = {}) {
  return h("button", { type: "button", ...attrs }, label);
}

/** @param {{ model: AnyModel<PanelState>, el: HTMLElement }} ctx */
function render({ model, el }) {
  /** @type {{ file: File, url: string }[]} */
  let pending = [];
  /** @type {{ stream: MarkdownStream | null, box: HTMLElement, body: HTMLElement, images: HTMLElement } | null} the reply streaming in */
  let current = null;
  /** @type {{ key: string, node: HTMLElement }[]} what the log shows of the transcript */
  let shown = [];
  /** @type {HTMLElement[]} the user's message, shown until the transcript holds it */
  let provisional = [];

  const modelSelect = h("select", { "aria-label": "Model" });
  const system = h("textarea", { "aria-label": "System prompt", rows: "1", placeholder: "System prompt" });
  // one number input per option control, drawn from the specs the kernel declares
  const controls = (model.get("controls") || []).map((/** @type {ControlSpec} */ spec) => {
    /** @type {Record<string, string>} */
    const attrs = { type: "number", "aria-label": spec.label, title: spec.description, placeholder: "default" };
    if (spec.min !== null) attrs.min = String(spec.min);
    if (spec.max !== null) attrs.max = String(spec.max);
    attrs.step = spec.step !== null ? String(spec.step) : spec.type === "integer" ? "1" : "any";
    return { spec, input: h("input", attrs) };
  });
  const newChat = button("New chat");
  const exportMd = button("Export Markdown");
  const exportJson = button("Export JSON");
  const log = h("div", { class: "nbchat-log", role: "log", "aria-live": "polite" });
  // what the running turn waits for, from the `status` trait (set by the kernel)
  const statusLine = h("div", { class: "nbchat-status", role: "status" });
  const thumbs = h("div", { class: "nbchat-thumbs" });
  const fileInput = h("input", {
    type: "file",
    accept: "image/*",
    multiple: "",
    class: "nbchat-file",
    "aria-label": "Attach image",
  });
  const attach = button("Attach image");
  const input = h("textarea", {
    "aria-label": "Message",
    rows: "3",
    placeholder: "Message (Enter sends, Shift+Enter: new line)",
  });
  const send = button("Send", { class: "nbchat-send" });
  const stop = button("Stop");

  const field = (/** @type {string} */ label, /** @type {HTMLElement} */ control) =>
    h("span", { class: "nbchat-field" }, h("span", { class: "nbchat-label", "aria-hidden": "true" }, label), control);
  const root = h(
    "div",
    { class: "nbchat-panel" },
    h(
      "div",
      { class: "nbchat-controls" },
      field("Model", modelSelect),
      ...controls.map(({ spec, input }) => field(spec.label, input)),
      newChat,
      exportMd,
      exportJson,
    ),
    h("div", { class: "nbchat-system" }, system),
    log,
    statusLine,
    thumbs,
    h("div", { class: "nbchat-compose" }, input, h("div", { class: "nbchat-actions" }, attach, fileInput, send, stop)),
  );
  el.append(root);

  // ---- synced controls ------------------------------------------------------------------

  function syncControls() {
    const models = model.get("models") || [];
    const value = model.get("model");
    modelSelect.replaceChildren(...models.map((/** @type {string} */ m) => h("option", { value: m }, m)));
    if (value && !models.includes(value)) modelSelect.append(h("option", { value }, value));
    modelSelect.value = value;
    if (document.activeElement !== system) system.value = model.get("system") || "";
    for (const { spec, input } of controls) {
      const v = model.get(spec.name);
      if (document.activeElement !== input) input.value = v === null || v === undefined ? "" : String(v);
    }
    const busy = !!model.get("busy");
    send.disabled = busy;
    stop.disabled = !busy;
    root.classList.toggle("nbchat-busy", busy);
  }

  /**
   * @template {keyof PanelState} K
   * @param {K} name
   * @param {PanelState[K]} value
   */
  function save(name, value) {
    model.set(name, value);
    model.save_changes();
  }
  modelSelect.addEventListener("change", () => save("model", modelSelect.value));
  system.addEventListener("change", () => save("system", system.value));
  /** An input's value within its spec's range (rounded for integers); "" is the default. */
  function controlValue(/** @type {ControlSpec} */ spec, /** @type {string} */ text) {
    if (text === "" || !Number.isFinite(Number(text))) return null;
    let v = spec.type === "integer" ? Math.round(Number(text)) : Number(text);
    if (spec.min !== null) v = Math.max(spec.min, v);
    if (spec.max !== null) v = Math.min(spec.max, v);
    return v;
  }
  for (const { spec, input } of controls) {
    input.addEventListener("change", () => save(spec.name, controlValue(spec, input.value)));
  }

  // ---- transcript -------------------------------------------------------------------------

  /** @param {string} role @param {string} [modelName] */
  function bubble(role, modelName) {
    const body = h("div", { class: "nbchat-body" });
    const images = h("div", { class: "nbchat-images" });
    /** @type {Record<string, string>} */
    const attrs = role === "assistant" ? { role: "article", "aria-label": `Reply from ${modelName || "model"}` } : {};
    const who = role === "assistant" ? modelName || "assistant" : "You";
    const box = h("div", { class: `nbchat-msg nbchat-${role}`, ...attrs }, h("div", { class: "nbchat-who" }, who), body, images);
    return { box, body, images };
  }

  /**
   * The rest of an assistant bubble: reasoning, a note, its images, the interrupted mark, the badge.
   * @param {any} entry
   * @param {{ box: HTMLElement, body: HTMLElement, images: HTMLElement }} parts
   */
  function finishReply(entry, { box, body, images }) {
    for (const old of box.querySelectorAll(":scope > .nbchat-reasoning, :scope > .nbchat-note")) old.remove();
    if (entry.reasoning) {
      const thought = h("div", { class: "nbchat-thought" });
      appendText(String(entry.reasoning), thought);
      body.before(h("details", { class: "nbchat-reasoning" }, h("summary", {}, "Reasoning"), thought));
    }
    if (entry.note) body.after(h("div", { class: "nbchat-note" }, String(entry.note)));
    finishToolParts(entry, box, body);
    images.replaceChildren(...(entry.images || []).map((/** @type {any} */ src) => dataImage(String(src), "image")));
    box.classList.toggle("nbchat-interrupted", !!entry.interrupted);
    box.querySelector(".nbchat-badge")?.remove();
    box.append(h("div", { class: "nbchat-badge" }, String(entry.badge || "")));
  }

  /** @param {any} entry @returns {HTMLElement} */
  function renderEntry(entry) {
    if (entry.role === "error") return h("div", { class: "nbchat-error", role: "alert" }, String(entry.text));
    const parts = bubble(entry.role, entry.model);
    if (entry.role === "assistant") {
      renderMarkdown(String(entry.text || ""), parts.body);
      finishReply(entry, parts);
    } else {
      appendText(String(entry.text || ""), parts.body);
      for (const src of entry.images || []) parts.images.append(dataImage(String(src), "image"));
    }
    return parts.box;
  }

  function syncStatus() {
    const text = model.get("status") || "";
    statusLine.textContent = text ? `${text}…` : "";
    statusLine.hidden = !text;
  }

  // Entries already on screen stay as they are; a turn's end adds its entries, and the reply that
  // streamed keeps its DOM when its text is the transcript's (only its tail is rendered again).
  function renderTranscript() {
    const entries = model.get("transcript") || [];
    const keys = entries.map((/** @type {any} */ e) => JSON.stringify(e));
    let keep = 0;
    while (keep < shown.length && keep < entries.length && shown[keep].key === keys[keep]) keep++;
    for (const s of shown.slice(keep)) s.node.remove();
    shown = shown.slice(0, keep);
    if (entries.length === keep) return; // entries were only taken away (old errors)
    for (const node of provisional) node.remove();
    provisional = [];
    const streamed = current;
    current = null;
    streamed?.box.remove();
    for (let i = keep; i < entries.length; i++) {
      const entry = entries[i];
      let node;
      if (streamed?.stream && entry.role === "assistant" && String(entry.text || "") === streamed.stream.text) {
        streamed.stream.finish();
        finishReply(entry, streamed);
        node = streamed.box;
        streamed.stream = null;
      } else {
        node = renderEntry(entry);
      }
      log.append(node);
      shown.push({ key: keys[i], node });
    }
    streamed?.stream?.cancel();
    log.scrollTop = log.scrollHeight;
  }

  // ---- sending ------------------------------------------------------------------------------

  function renderThumbs() {
    thumbs.replaceChildren(
      ...pending.map((p, i) => {
        const img = h("img", { alt: p.file.name, class: "nbchat-thumb" });
        img.setAttribute("src", p.url); // a local blob: URL of the user's own file
        const remove = button("×", { "aria-label": `Remove ${p.file.name}`, class: "nbchat-remove" });
        remove.addEventListener("click", () => {
          URL.revokeObjectURL(p.url);
          pending.splice(i, 1);
          renderThumbs();
        });
        return h("span", { class: "nbchat-thumb-wrap" }, img, remove);
      }),
    );
  }

  /** @param {Iterable<File>} files */
  function addFiles(files) {
    for (const file of files) {
      if (file.type.startsWith("image/")) pending.push({ file, url: URL.createObjectURL(file) });
    }
    renderThumbs();
  }

  async function submit() {
    const text = input.value;
    if (model.get("busy") || (!text.trim() && !pending.length)) return;
    const files = pending;
    pending = [];
    renderThumbs();
    const buffers = await Promise.all(files.map((p) => p.file.arrayBuffer()));
    model.send({ type: "send", text }, undefined, buffers);
    input.value = "";
    // the kernel drops old errors from the transcript when a turn starts; so does the log, now
    shown = shown.filter((s) => !(s.node.classList.contains("nbchat-error") && (s.node.remove(), true)));
    const { box, body, images } = bubble("user");
    log.append(box);
    provisional.push(box);
    appendText(text, body);
    for (const p of files) {
      const img = h("img", { alt: p.file.name, class: "nbchat-thumb" });
      img.setAttribute("src", p.url);
      images.append(img);
    }
    log.scrollTop = log.scrollHeight;
  }

  send.addEventListener("click", submit);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    }
  });
  stop.addEventListener("click", () => model.send({ type: "stop" }));
  newChat.addEventListener("click", () => {
    current?.stream?.cancel();
    current = null;
    for (const node of provisional) node.remove();
    provisional = [];
    model.send({ type: "new" });
  });
  exportMd.addEventListener("click", () => model.send({ type: "export", format: "markdown" }));
  exportJson.addEventListener("click", () => model.send({ type: "export", format: "json" }));
  attach.addEventListener("click", () => fileInput.click());
  fileInput.addEventListener("change", () => {
    addFiles(fileInput.files || []);
    fileInput.value = "";
  });
  root.addEventListener("dragover", (e) => e.preventDefault());
  root.addEventListener("drop", (e) => {
    e.preventDefault();
    addFiles(e.dataTransfer?.files || []);
  });
  input.addEventListener("paste", (e) => {
    const files = Array.from(e.clipboardData?.files || []).filter((f) => f.type.startsWith("image/"));
    if (files.length) {
      e.preventDefault();
      addFiles(files);
    }
  });

  // ---- messages from the kernel ---------------------------------------------------------------

  /** @param {any} msg @param {DataView[]} buffers */
  function onMessage(msg, buffers) {
    if (msg.type === "start") {
      current?.stream?.cancel();
      const { box, body, images } = bubble("assistant", msg.model);
      box.append(h("div", { class: "nbchat-badge" }, "…"));
      log.append(box);
      provisional.push(box);
      const stream = new MarkdownStream(body, () => (log.scrollTop = log.scrollHeight));
      current = { stream, box, body, images };
    } else if (msg.type === "delta" && current?.stream) {
      current.stream.append(String(msg.text));
    } else if (msg.type === "image" && current && buffers.length) {
      current.images.append(dataImage(bytesToDataUrl(buffers[0], msg.mime), "generated image"));
    } else if (msg.type === "tool" && current) {
      current.body.before(toolStepBlock(msg));
    } else if (msg.type === "approve") {
      log.append(approvalBlock(msg, (ok) => model.send({ type: "approval", id: msg.id, ok })));
      log.scrollTop = log.scrollHeight;
    } else if (msg.type === "error") {
      if (!input.value && msg.prompt) input.value = msg.prompt;
    } else if (msg.type === "export") {
      const blob = new Blob([msg.content], { type: msg.mime });
      const a = h("a", { download: msg.filename });
      a.setAttribute("href", URL.createObjectURL(blob));
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.getAttribute("href") || ""), 1000);
    }
  }

  model.on("msg:custom", onMessage);
  model.on("change:transcript", renderTranscript);
  model.on("change:models", syncControls);
  model.on("change:model", syncControls);
  model.on("change:system", syncControls);
  for (const { spec } of controls) model.on(`change:${spec.name}`, syncControls);
  model.on("change:busy", syncControls);
  model.on("change:status", syncStatus);
  const stopClicks = handleMarkdownClicks(log);
  syncControls();
  syncStatus();
  renderTranscript();

  return () => {
    stopClicks();
    current?.stream?.cancel();
    model.off("msg:custom", onMessage);
    model.off("change:transcript", renderTranscript);
    model.off("change:status", syncStatus);
    for (const name of ["models", "model", "system", "busy", ...controls.map((c) => c.spec.name)]) {
      model.off(`change:${name}`, syncControls);
    }
    for (const p of pending) URL.revokeObjectURL(p.url);
  };
}

export default /** @satisfies {AnyWidget<PanelState>} */ ({ render });
