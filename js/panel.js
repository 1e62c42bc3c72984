// ChatPanel front end. Streaming text arrives as custom messages carrying only new text;
// the whole transcript arrives as the `transcript` trait at the end of each turn. The kernel never
// redraws the view: the static copy of the transcript is an output of its own, after this one,
// hidden by nbchat.css wherever this view is drawn.
//
// Keys typed in the panel stay in the panel (see `keepKeys`); the log follows new text only while
// the reader is at its bottom (see `follow`); each message has its actions (see `messageActions`).

import { appendText, bytesToDataUrl, dataImage, h } from "./dom.js";
import { handleMarkdownClicks, MarkdownStream, renderMarkdown } from "./markdown.js";
import { approvalBlock, finishToolParts, toolStepBlock } from "./tool_steps.js";
import { modelPicker } from "./picker.js";

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

/** Copy text to the clipboard (falls back to a hidden textarea where the API is missing). */
async function copyText(/** @type {string} */ text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = h("textarea", { class: "nbchat-offscreen" });
    area.value = text;
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }
}

/** @param {{ model: AnyModel<PanelState>, el: HTMLElement }} ctx */
function render({ model, el }) {
  /** @type {{ file: File, url: string }[]} */
  let pending = [];
  /** @type {{ file: File, url: string }[]} what the last Send took (given back on an error) */
  let lastSent = [];
  /** @type {{ stream: MarkdownStream | null, box: HTMLElement, body: HTMLElement, images: HTMLElement } | null} the reply streaming in */
  let current = null;
  /** @type {{ key: string, node: HTMLElement }[]} what the log shows of the transcript */
  let shown = [];
  /** @type {HTMLElement[]} the user's message, shown until the transcript holds it */
  let provisional = [];
  /** @type {number | null} the turn being edited (its message is in the input box) */
  let editing = null;
  /** whether the log follows new text (the reader is at its bottom) */
  let stick = true;

  const picker = modelPicker({
    rows: () => model.get("catalog") || [],
    current: () => model.get("model"),
    onOpen: () => model.send({ type: "catalog" }),
    onChoose: (id, mode) => {
      if (mode === "regenerate") model.send({ type: "regenerate", model: id });
      else save("model", id);
    },
  });
  const keyHint = h("div", { class: "nbchat-key-hint", role: "note" });
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
  const undo = button("Undo new chat", { class: "nbchat-undo" });
  const exportMd = button("Export Markdown");
  const exportJson = button("Export JSON");
  const log = h("div", { class: "nbchat-log", role: "log", "aria-live": "polite", tabindex: "0" });
  const jump = button("↓ Jump to latest", { class: "nbchat-jump", hidden: "" });
  // what the running turn waits for, from the `status` trait (set by the kernel)
  const statusLine = h("div", { class: "nbchat-status", role: "status" });
  const editBanner = h("div", { class: "nbchat-editing", hidden: "" });
  const cancelEdit = button("Cancel edit");
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
    placeholder: "Message (Enter sends, Shift+Enter: new line, Esc stops a reply)",
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
      field("Model", picker.el),
      ...controls.map(({ spec, input }) => field(spec.label, input)),
      h("span", { class: "nbchat-buttons" }, newChat, undo, exportMd, exportJson),
    ),
    keyHint,
    h("div", { class: "nbchat-system" }, system),
    h("div", { class: "nbchat-log-wrap" }, log, jump),
    statusLine,
    editBanner,
    thumbs,
    h("div", { class: "nbchat-compose" }, input, h("div", { class: "nbchat-actions" }, attach, fileInput, send, stop)),
  );
  el.append(root);

  // ---- synced controls ------------------------------------------------------------------

  function syncControls() {
    picker.sync();
    const row = (model.get("catalog") || []).find((/** @type {any} */ r) => r.id === model.get("model"));
    keyHint.textContent = row && !row.ready ? `${row.id} cannot be used yet: ${row.hint}` : "";
    keyHint.hidden = !keyHint.textContent;
    if (document.activeElement !== system) system.value = model.get("system") || "";
    for (const { spec, input } of controls) {
      const v = model.get(spec.name);
      if (document.activeElement !== input) input.value = v === null || v === undefined ? "" : String(v);
    }
    const busy = !!model.get("busy");
    send.disabled = busy;
    stop.disabled = !busy;
    undo.hidden = !model.get("can_undo");
    root.classList.toggle("nbchat-busy", busy);
    for (const b of log.querySelectorAll(".nbchat-msg-actions button")) /** @type {HTMLButtonElement} */ (b).disabled = busy;
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

  // ---- scrolling: follow the bottom only while the reader is there ----------------------------

  const atBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 4;
  function follow() {
    if (stick) log.scrollTop = log.scrollHeight;
    jump.hidden = stick || atBottom();
  }
  // only the reader moving up lets go of the bottom: a scroll event that arrives after the
  // content grew (an image loaded) finds the log short of the bottom without anyone scrolling
  let lastTop = 0;
  log.addEventListener("scroll", () => {
    if (atBottom()) stick = true;
    else if (log.scrollTop < lastTop - 1) stick = false;
    lastTop = log.scrollTop;
    if (stick) follow();
  });
  // an image (a reply's, a thumbnail, one loaded on click) changes the height once it loads;
  // a narrower output wraps the text again
  log.addEventListener("load", follow, true);
  const resized = new ResizeObserver(() => stick && follow());
  resized.observe(log);
  jump.addEventListener("click", () => {
    stick = true;
    follow();
  });

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

  /**
   * Copy / Regenerate on a reply, Edit / Delete on a sent message; `turn` counts sent messages.
   * @param {any} entry
   * @param {number} turn
   */
  function messageActions(entry, turn) {
    const bar = h("div", { class: "nbchat-msg-actions" });
    if (entry.role === "assistant") {
      const copy = button("Copy", { "aria-label": "Copy reply" });
      copy.addEventListener("click", async () => {
        copy.textContent = (await copyText(String(entry.text || ""))) ? "Copied" : "Copy failed";
        setTimeout(() => (copy.textContent = "Copy"), 1500);
      });
      const again = button("Regenerate", { class: "nbchat-regenerate", "aria-label": "Regenerate reply" });
      again.addEventListener("click", () => model.send({ type: "regenerate", model: model.get("model") }));
      const other = button("with…", { class: "nbchat-regenerate", "aria-label": "Regenerate reply with another model" });
      other.addEventListener("click", () => picker.open("regenerate"));
      bar.append(copy, again, other);
    } else {
      const edit = button("Edit", { "aria-label": `Edit message ${turn + 1}` });
      edit.addEventListener("click", () => startEdit(turn, String(entry.text || "")));
      const del = button("Delete", { "aria-label": `Delete message ${turn + 1}` });
      del.addEventListener("click", () => model.send({ type: "delete", index: turn }));
      bar.append(edit, del);
    }
    return bar;
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
    if (entries.length > keep) {
      for (const node of provisional) node.remove();
      provisional = [];
      const streamed = current;
      current = null;
      streamed?.box.remove();
      let turn = entries.slice(0, keep).filter((/** @type {any} */ e) => e.role === "user").length - 1;
      for (let i = keep; i < entries.length; i++) {
        const entry = entries[i];
        if (entry.role === "user") turn++;
        let node;
        if (streamed?.stream && entry.role === "assistant" && String(entry.text || "") === streamed.stream.text) {
          streamed.stream.finish();
          finishReply(entry, streamed);
          node = streamed.box;
          streamed.stream = null;
        } else {
          node = renderEntry(entry);
        }
        if (entry.role !== "error") node.append(messageActions(entry, turn));
        log.append(node);
        shown.push({ key: keys[i], node });
      }
      streamed?.stream?.cancel();
    }
    // only the last reply can be regenerated
    const again = log.querySelectorAll(".nbchat-regenerate");
    const last = log.querySelectorAll(".nbchat-assistant");
    again.forEach((b) => ((/** @type {HTMLElement} */ (b)).hidden = b.closest(".nbchat-assistant") !== last[last.length - 1]));
    syncControls();
    follow();
  }

  // ---- editing a sent message -----------------------------------------------------------------

  /** @param {number} turn @param {string} text */
  function startEdit(turn, text) {
    editing = turn;
    input.value = text;
    showEditing();
    input.focus();
  }
  function showEditing() {
    editBanner.replaceChildren(
      ...(editing === null
        ? []
        : [`Editing message ${editing + 1}: Send replaces it and drops the replies after it. `, cancelEdit]),
    );
    editBanner.hidden = editing === null;
  }
  function endEdit() {
    editing = null;
    showEditing();
  }
  cancelEdit.addEventListener("click", () => {
    endEdit();
    input.value = "";
  });

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
    lastSent = files;
    renderThumbs();
    const buffers = await Promise.all(files.map((p) => p.file.arrayBuffer()));
    if (editing !== null) {
      // no new attachment: the edited message keeps its images (the kernel has them)
      model.send({ type: "edit", index: editing, text }, undefined, buffers);
      endEdit();
    } else {
      model.send({ type: "send", text }, undefined, buffers);
    }
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
    stick = true; // whoever sends wants to see the answer
    follow();
  }

  // ---- keys: typed in the panel, handled in the panel, never seen by the notebook --------------

  /** @param {KeyboardEvent} e */
  function onKey(e) {
    const t = e.target;
    if (e.key === "Escape" && model.get("busy")) {
      e.preventDefault();
      model.send({ type: "stop" });
      return;
    }
    if (t === picker.search) return picker.onKey(e);
    if (e.key === "Escape" && picker.isOpen()) return picker.close();
    if (t === input) {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        submit();
      } else if (e.key === "Escape" && editing !== null) {
        endEdit();
        input.value = "";
      }
    }
  }

  /**
   * JupyterLab handles shortcuts on `document` as the keydown bubbles; Notebook 7 listens on
   * `document` in the capture phase, before the panel could see the key. A listener on `window`
   * in the capture phase runs before both: it handles the panel's own keys and stops the event
   * there (typing, new lines and clicks, the keys' default actions, still happen). Accel+S
   * (save) still reaches the notebook.
   * @param {KeyboardEvent} e
   */
  function keepKeys(e) {
    const t = /** @type {Node | null} */ (e.target);
    if (!t || !root.contains(t)) return;
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "s") return;
    e.stopPropagation();
    if (e.type === "keydown") onKey(e);
  }
  for (const type of ["keydown", "keypress", "keyup"]) window.addEventListener(type, /** @type {any} */ (keepKeys), true);

  send.addEventListener("click", submit);
  stop.addEventListener("click", () => model.send({ type: "stop" }));
  newChat.addEventListener("click", () => {
    current?.stream?.cancel();
    current = null;
    for (const node of provisional) node.remove();
    provisional = [];
    endEdit();
    model.send({ type: "new" });
  });
  undo.addEventListener("click", () => model.send({ type: "undo_new" }));
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
      const stream = new MarkdownStream(body, follow);
      current = { stream, box, body, images };
      follow();
    } else if (msg.type === "delta" && current?.stream) {
      current.stream.append(String(msg.text));
    } else if (msg.type === "image" && current && buffers.length) {
      current.images.append(dataImage(bytesToDataUrl(buffers[0], msg.mime), "generated image"));
      follow();
    } else if (msg.type === "tool" && current) {
      current.body.before(toolStepBlock(msg));
    } else if (msg.type === "approve") {
      log.append(approvalBlock(msg, (ok) => model.send({ type: "approval", id: msg.id, ok })));
      stick = true; // a call waiting for Run or Deny must be seen
      follow();
    } else if (msg.type === "error") {
      // the prompt and its attachments come back, ready to send again
      if (!input.value && msg.prompt) input.value = msg.prompt;
      if (!pending.length && lastSent.length) {
        pending = lastSent;
        renderThumbs();
      }
      lastSent = [];
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
  const synced = ["catalog", "model", "system", "busy", "can_undo", ...controls.map((c) => c.spec.name)];
  for (const name of synced) model.on(`change:${name}`, syncControls);
  model.on("change:status", syncStatus);
  const stopClicks = handleMarkdownClicks(log);
  syncStatus();
  renderTranscript();
  renderThumbs();
  showEditing();

  return () => {
    resized.disconnect();
    for (const type of ["keydown", "keypress", "keyup"]) window.removeEventListener(type, /** @type {any} */ (keepKeys), true);
    stopClicks();
    current?.stream?.cancel();
    model.off("msg:custom", onMessage);
    model.off("change:transcript", renderTranscript);
    model.off("change:status", syncStatus);
    for (const name of synced) model.off(`change:${name}`, syncControls);
  };
}

export default /** @satisfies {AnyWidget<PanelState>} */ ({ render });
