// The panel's model picker: a button that opens a searchable list grouped by provider, with each
// provider's key status (what to set, never the key) and each model's capabilities.

import { h } from "./dom.js";

/** @typedef {import("./types").CatalogRow} CatalogRow */

/** @param {boolean | null | undefined} known @param {string} name */
function capability(known, name) {
  if (known === true) return h("span", { class: "nbchat-cap", title: `can use ${name}` }, name);
  if (known === false) return h("span", { class: "nbchat-cap nbchat-cap-no", title: `no ${name}` }, `no ${name}`);
  return h("span", { class: "nbchat-cap nbchat-cap-unknown", title: `${name}: not known for this model` }, `${name} ?`);
}

/** Whether every word of `query` occurs in the row's id or description (case-insensitive). */
export function matches(/** @type {CatalogRow} */ row, /** @type {string} */ query) {
  const hay = `${row.id} ${row.description || ""}`.toLowerCase();
  return query.toLowerCase().split(/\s+/).filter(Boolean).every((w) => hay.includes(w));
}

/**
 * @param {{ rows: () => CatalogRow[], current: () => string, onOpen: () => void,
 *   onChoose: (id: string, mode: "select" | "regenerate") => void }} opts
 */
export function modelPicker({ rows, current, onOpen, onChoose }) {
  const label = h("span", { class: "nbchat-picker-label" });
  const dot = h("span", { class: "nbchat-key-dot", "aria-hidden": "true" });
  const button = h("button", { type: "button", class: "nbchat-picker-button", "aria-haspopup": "listbox", "aria-label": "Model" }, dot, label);
  const search = h("input", { type: "search", class: "nbchat-picker-search", "aria-label": "Search models", placeholder: "Search models (part of an id)" });
  const list = h("div", { class: "nbchat-picker-list", role: "listbox", "aria-label": "Models" });
  const heading = h("div", { class: "nbchat-picker-heading" });
  const pop = h("div", { class: "nbchat-picker", hidden: "" }, heading, search, list);
  /** @type {"select" | "regenerate"} */
  let mode = "select";
  let active = 0;
  /** @type {HTMLElement[]} */
  let options = [];

  function syncButton() {
    const id = current();
    const row = rows().find((r) => r.id === id);
    label.textContent = id;
    button.title = row ? `${id}: ${row.hint}` : id;
    dot.className = `nbchat-key-dot nbchat-key-${row ? row.key : "unknown"}`;
  }

  function draw() {
    const q = search.value;
    const groups = new Map();
    for (const row of rows()) {
      if (!matches(row, q)) continue;
      if (!groups.has(row.provider)) groups.set(row.provider, []);
      groups.get(row.provider).push(row);
    }
    options = [];
    const children = [];
    for (const [provider, items] of groups) {
      const first = items[0];
      children.push(
        h("div", { class: `nbchat-picker-group nbchat-key-${first.key}`, role: "presentation" },
          h("span", { class: "nbchat-picker-provider" }, provider),
          h("span", { class: "nbchat-picker-hint" }, first.ready ? first.hint : `needs setup: ${first.hint}`)),
      );
      for (const row of items) {
        const opt = h("div", { class: "nbchat-picker-option", role: "option", "data-id": row.id, "aria-selected": String(row.id === current()) },
          h("span", { class: "nbchat-picker-id" }, row.id),
          capability(row.vision, "vision"), capability(row.tools, "tools"));
        opt.addEventListener("mousedown", (e) => e.preventDefault()); // keep the search focused
        opt.addEventListener("click", () => choose(row.id));
        options.push(opt);
        children.push(opt);
      }
    }
    // an id the tables do not list (a model on an OpenAI-compatible server, a new release)
    const typed = q.trim();
    if (/^[\w.-]+:\S+$/.test(typed) && !rows().some((r) => r.id === typed)) {
      const opt = h("div", { class: "nbchat-picker-option", role: "option", "data-id": typed, "aria-selected": "false" },
        h("span", { class: "nbchat-picker-id" }, `Use “${typed}”`));
      opt.addEventListener("mousedown", (e) => e.preventDefault());
      opt.addEventListener("click", () => choose(typed));
      options.push(opt);
      children.push(opt);
    }
    if (!options.length) children.push(h("div", { class: "nbchat-picker-empty" }, `No model matches “${q}”; type a full id (provider:model) to use one not listed.`));
    list.replaceChildren(...children);
    active = Math.min(active, Math.max(0, options.length - 1));
    highlight();
  }

  function highlight() {
    options.forEach((o, i) => o.classList.toggle("nbchat-picker-active", i === active));
    options[active]?.scrollIntoView?.({ block: "nearest" });
  }

  /** @param {"select" | "regenerate"} how */
  function open(how = "select") {
    mode = how;
    heading.textContent = how === "regenerate" ? "Regenerate the last reply with:" : "Choose a model:";
    pop.hidden = false;
    search.value = "";
    active = 0;
    onOpen();
    draw();
    search.focus();
  }

  function close() {
    pop.hidden = true;
  }

  /** @param {string} id */
  function choose(id) {
    close();
    onChoose(id, mode);
    button.focus();
  }

  /** Keys typed in the search box (the panel routes them here). @param {KeyboardEvent} e */
  function onKey(e) {
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      active = Math.max(0, Math.min(options.length - 1, active + (e.key === "ArrowDown" ? 1 : -1)));
      highlight();
    } else if (e.key === "Enter") {
      e.preventDefault();
      const id = options[active]?.getAttribute("data-id");
      if (id) choose(id);
    } else if (e.key === "Escape") {
      e.preventDefault();
      close();
      button.focus();
    }
  }

  button.addEventListener("click", () => (pop.hidden ? open() : close()));
  search.addEventListener("input", () => {
    active = 0;
    draw();
  });
  const wrap = h("span", { class: "nbchat-picker-wrap" }, button, pop);
  return { el: wrap, search, sync: () => { syncButton(); if (!pop.hidden) draw(); }, open, close, onKey, isOpen: () => !pop.hidden };
}
