// Markdown for untrusted model output, shared by ChatPanel and CompareView.
//
// markdown-it (CommonMark + GFM tables and strikethrough, raw HTML off) renders to HTML, KaTeX
// renders math, highlight.js colours code; DOMPurify then sanitizes that HTML with an allow-list
// and hands back a DOM fragment (what is checked is what is inserted: no second parse). Links go
// only to http(s), mailto and #; a remote image becomes a button that loads it on a click.
//
// Streaming (`MarkdownStream`) re-renders only the unfinished tail: top-level blocks that more
// text cannot change are rendered once and kept. The work spent on the tail is held to a fixed
// multiple of the text's length; past that budget new text shows as plain text until the next
// render, so a long reply costs linear time however it is chunked.

import { tex } from "@mdit/plugin-tex";
import DOMPurify from "dompurify";
import hljs from "highlight.js/lib/common";
import katex from "katex";
import MarkdownIt from "markdown-it";
import { h, isImageDataUrl } from "./dom.js";

/** @typedef {import("markdown-it/lib/renderer.mjs").RenderRule} RenderRule */

const SAFE_LINK = /^(https?:|mailto:|#)/i;
const REMOTE_IMAGE = /^https?:\/\//i;
// CSS that could fetch or run something; KaTeX's own inline styles never hold these
const RISKY_STYLE = /url\s*\(|image-set|image\s*\(|@import|expression\s*\(|\\/i;

/**
 * @param {string} code
 * @param {string} lang
 */
function highlight(code, lang) {
  if (lang && hljs.getLanguage(lang)) {
    try {
      return hljs.highlight(code, { language: lang, ignoreIllegals: true }).value;
    } catch {
      // an odd grammar edge case: fall back to plain, escaped code
    }
  }
  return "";
}

/**
 * @param {string} tex
 * @param {boolean} displayMode
 */
function math(tex, displayMode) {
  return katex.renderToString(tex, {
    displayMode,
    throwOnError: false, // a formula that does not parse shows its source, in red
    trust: false, // no \href, \url, \includegraphics, \htmlStyle and friends
    strict: "ignore",
    maxExpand: 1000,
    maxSize: 20,
    output: "htmlAndMathml",
  });
}

export const md = new MarkdownIt("commonmark", { html: false, highlight }).enable(["table", "strikethrough"]);
md.use(tex, { delimiters: "all", render: math });
// only these targets become links or images; anything else stays literal text
md.validateLink = (/** @type {string} */ url) => SAFE_LINK.test(url.trim()) || isImageDataUrl(url.trim());

const escape = md.utils.escapeHtml;
const renderFence = /** @type {RenderRule} */ (md.renderer.rules.fence);
const renderCodeBlock = /** @type {RenderRule} */ (md.renderer.rules.code_block);
const COPY = '<button type="button" class="nbchat-copy" aria-label="Copy code">Copy</button>';
md.renderer.rules.fence = /** @type {RenderRule} */ (tokens, idx, options, env, self) =>
  `<div class="nbchat-codeblock">${COPY}${renderFence(tokens, idx, options, env, self)}</div>\n`;
md.renderer.rules.code_block = /** @type {RenderRule} */ (tokens, idx, options, env, self) =>
  `<div class="nbchat-codeblock">${COPY}${renderCodeBlock(tokens, idx, options, env, self)}</div>\n`;
md.renderer.rules.image = /** @type {RenderRule} */ (tokens, idx, options, env, self) => {
  const token = tokens[idx];
  const src = token.attrGet("src") || "";
  const alt = self.renderInlineAsText(token.children || [], options, env);
  if (isImageDataUrl(src)) return `<img src="${escape(src)}" alt="${escape(alt)}" class="nbchat-md-img">`;
  const label = alt ? `: ${escape(alt)}` : "";
  if (REMOTE_IMAGE.test(src)) {
    return (
      `<button type="button" class="nbchat-load-image" data-src="${escape(src)}" title="${escape(src)}">` +
      `Load image${label}</button>`
    );
  }
  return `<span class="nbchat-img-blocked">[image${label}]</span>`;
};

const purify = DOMPurify(window);
const SANITIZE = {
  // DOMPurify's default allow-list (HTML, SVG, MathML) plus the MathML wrapper KaTeX puts around
  // its TeX source (text only; annotation-xml, which can hold HTML, stays out)
  ADD_TAGS: ["semantics", "annotation"],
  FORBID_TAGS: [
    "style", "form", "input", "select", "textarea", "option", "iframe", "frame", "object", "embed",
    "link", "meta", "base", "image", "use", "video", "audio", "source", "track", "picture",
    "foreignobject", "animate", "set", "template", "dialog",
  ],
  FORBID_ATTR: ["srcset", "action", "formaction", "xlink:href", "background", "poster", "ping", "id", "name"],
  ALLOW_UNKNOWN_PROTOCOLS: false,
  RETURN_DOM_FRAGMENT: /** @type {const} */ (true),
};
purify.addHook("uponSanitizeAttribute", (_node, data) => {
  if (data.attrName === "style" && RISKY_STYLE.test(data.attrValue)) data.keepAttr = false;
});
purify.addHook("afterSanitizeAttributes", (node) => {
  if (node.hasAttribute("href")) {
    const href = (node.getAttribute("href") || "").trim();
    if (node.tagName === "A" && SAFE_LINK.test(href)) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer nofollow");
    } else {
      node.removeAttribute("href");
    }
  }
  if (node.hasAttribute("src") && !(node.tagName === "IMG" && isImageDataUrl(node.getAttribute("src") || ""))) {
    node.removeAttribute("src");
  }
});

/**
 * Sanitized DOM for rendered HTML.
 * @param {string} html
 * @returns {DocumentFragment}
 */
function sanitize(html) {
  return purify.sanitize(html, SANITIZE);
}

/**
 * Markdown as a sanitized DOM fragment.
 * @param {string} text
 */
export function markdownFragment(text) {
  return sanitize(md.render(text, {}));
}

/**
 * Render Markdown into `el`, replacing its children.
 * @param {string} text
 * @param {HTMLElement} el
 */
export function renderMarkdown(text, el) {
  el.classList.add("nbchat-md");
  el.replaceChildren(markdownFragment(text));
}

/**
 * The clicks rendered Markdown needs (copy a code block, load a remote image), delegated
 * from `root` so re-rendered content needs no listeners of its own. Returns the cleanup.
 * @param {HTMLElement} root
 */
export function handleMarkdownClicks(root) {
  /** @param {MouseEvent} e */
  const onClick = (e) => {
    const target = e.target instanceof Element ? e.target : null;
    const copy = target?.closest(".nbchat-md .nbchat-copy");
    if (copy instanceof HTMLElement) {
      // the code as written: markdown-it keeps the newline before the closing fence
      const code = (copy.parentElement?.querySelector("code")?.textContent ?? "").replace(/\n$/, "");
      navigator.clipboard.writeText(code).then(
        () => (copy.textContent = "Copied"),
        () => (copy.textContent = "Copy failed"),
      );
      setTimeout(() => (copy.textContent = "Copy"), 1500);
      return;
    }
    const load = target?.closest(".nbchat-md .nbchat-load-image");
    if (load instanceof HTMLElement) {
      const url = load.getAttribute("data-src") || "";
      if (!REMOTE_IMAGE.test(url)) return;
      const alt = (load.textContent || "").replace(/^Load image:? ?/, "");
      const img = h("img", { alt, referrerpolicy: "no-referrer", class: "nbchat-md-img" });
      img.setAttribute("src", url); // the user asked for this image
      load.replaceWith(img);
    }
  };
  root.addEventListener("click", onClick);
  return () => root.removeEventListener("click", onClick);
}

// ---- streaming ----------------------------------------------------------------------------------

// a block after one of these may still join it (a list item after a blank line, indented code)
const JOINABLE = new Set(["bullet_list_open", "ordered_list_open", "code_block"]);
// Work is counted in characters handed to markdown-it. Finished blocks are rendered once each;
// the unfinished tail is re-rendered only while all work stays under WORK_PER_CHAR per character
// of text (plus an allowance, so short replies re-render on every update); past that, new text
// is shown as plain text until the budget allows again. Finding where the finished blocks end
// needs only markdown-it's block pass, SCAN_COST of a full render per character.
const WORK_PER_CHAR = 2;
const WORK_ALLOWANCE = 8192;
const WORK_PER_RENDER = 256; // a render's fixed cost (sanitizer set-up, DOM swap), in characters
const SCAN_COST = 0.125;
// The DOM follows the text at most every UPDATE_INTERVAL_MS (the kernel batches text every 50 ms),
// and less often as a reply grows past CHARS_PER_MS * UPDATE_INTERVAL_MS (up to MAX_INTERVAL_MS):
// each update costs the browser a layout and a paint of the visible part whatever it adds, so a
// long reply's updates would otherwise cost more than rendering it once.
const UPDATE_INTERVAL_MS = 100;
const MAX_INTERVAL_MS = 500;
const CHARS_PER_MS = 250;
// committed blocks go into chunks of this many commits: layout then revisits a few boxes, not all
const COMMITS_PER_CHUNK = 16;
// plain text appended between renders goes into the last of these (not into <strong>, <a>, ...)
const CONTAINERS = new Set(["P", "LI", "UL", "OL", "BLOCKQUOTE", "DIV", "PRE", "CODE", "TABLE", "TBODY", "THEAD", "TR", "TD", "TH", "H1", "H2", "H3", "H4", "H5", "H6"]);

/**
 * Where the n-th line of `src` starts.
 * @param {string} src
 * @param {number} line
 */
function lineOffset(src, line) {
  let offset = 0;
  for (let i = 0; i < line; i++) {
    const next = src.indexOf("\n", offset);
    if (next < 0) return src.length;
    offset = next + 1;
  }
  return offset;
}

/**
 * Where the blocks of `src` that more text cannot change end (0: none yet). Only the block pass
 * runs: it sees the structure without parsing any inline content.
 * @param {string} src
 */
function finishedEnd(src) {
  /** @type {import("markdown-it/lib/token.mjs").default[]} */
  const tokens = [];
  md.block.parse(src, md, {}, tokens);
  /** @type {number[]} */
  const starts = [];
  tokens.forEach((t, i) => {
    if (t.level === 0 && t.nesting >= 0 && t.map) starts.push(i);
  });
  let k = starts.length - 1;
  if (k >= 1 && JOINABLE.has(tokens[starts[k - 1]].type)) k -= 1;
  return k >= 1 ? lineOffset(src, /** @type {[number, number]} */ (tokens[starts[k]].map)[0]) : 0;
}

/** Markdown that arrives in pieces, rendered into one element as it grows. */
export class MarkdownStream {
  /**
   * @param {HTMLElement} el emptied, then filled with the rendered text
   * @param {() => void} [onRender] called after each update of the DOM (e.g. to scroll)
   */
  constructor(el, onRender) {
    this.el = el;
    this.onRender = onRender;
    /** the text so far, line ends normalized to \n as markdown-it does */
    this.text = "";
    this.pendingCR = false;
    /** where the unfinished tail starts in `text` (everything before is rendered for good) */
    this.committed = 0;
    /** how much of `text` the DOM shows (rendered, or appended as plain text) */
    this.shown = 0;
    /** characters' worth of markdown-it work so far */
    this.work = 0;
    /** @type {{ references?: Record<string, unknown> }} reference definitions of committed blocks */
    this.env = {};
    this.frame = 0;
    this.timer = 0;
    this.lastUpdate = -Infinity;
    this.commits = 0;
    this.done = h("div", { class: "nbchat-md-done" });
    this.tail = h("div", { class: "nbchat-md-tail" });
    el.classList.add("nbchat-md");
    el.replaceChildren(this.done, this.tail);
  }

  /**
   * Add text; the DOM follows on an animation frame, at most every 100 ms (see above).
   * @param {string} text
   */
  append(text) {
    let add = text;
    if (this.pendingCR && add.startsWith("\n")) add = add.slice(1); // a \r\n split across deltas
    this.pendingCR = add.endsWith("\r");
    this.text += add.replace(/\r\n?/g, "\n");
    if (this.frame || this.timer) return;
    const interval = Math.min(MAX_INTERVAL_MS, Math.max(UPDATE_INTERVAL_MS, this.text.length / CHARS_PER_MS));
    const wait = this.lastUpdate + interval - performance.now();
    const next = () => {
      this.timer = 0;
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        this.lastUpdate = performance.now();
        this.update();
      });
    };
    if (wait > 0) this.timer = window.setTimeout(next, wait);
    else next();
  }

  /** Bring the DOM up to date now: commit finished blocks, then re-render or extend the tail. */
  update() {
    if (this.shown === this.text.length) return;
    const budget = WORK_PER_CHAR * this.text.length + WORK_ALLOWANCE;
    let tail = this.text.slice(this.committed);
    let committedNow = false;
    if (this.work + tail.length * SCAN_COST <= budget) {
      this.work += tail.length * SCAN_COST;
      const end = finishedEnd(tail);
      if (end) {
        this.commit(tail.slice(0, end));
        tail = tail.slice(end);
        committedNow = true;
      }
    }
    if (this.work + tail.length + WORK_PER_RENDER <= budget) {
      this.renderTail(tail);
    } else if (committedNow) {
      this.tail.replaceChildren(h("p", {}, tail)); // the unfinished block, as plain text for now
      this.shown = this.text.length;
    } else {
      this.appendPlain();
    }
    this.onRender?.();
  }

  /** The text is complete: render the tail once more, exactly. */
  finish() {
    this.cancel();
    this.renderTail(this.text.slice(this.committed));
    this.onRender?.();
  }

  /** Stop pending updates (the element is being replaced). */
  cancel() {
    if (this.frame) cancelAnimationFrame(this.frame);
    if (this.timer) clearTimeout(this.timer);
    this.frame = this.timer = 0;
  }

  /**
   * Render finished blocks once, for good (their reference definitions stay known).
   * @param {string} src
   */
  commit(src) {
    this.work += src.length + WORK_PER_RENDER;
    if (this.commits++ % COMMITS_PER_CHUNK === 0) this.done.append(h("div", { class: "nbchat-md-chunk" }));
    const chunk = /** @type {Element} */ (this.done.lastElementChild);
    chunk.append(sanitize(md.renderer.render(md.parse(src, this.env), md.options, this.env)));
    this.committed += src.length;
  }

  /** @param {string} src the unfinished tail */
  renderTail(src) {
    this.work += src.length + WORK_PER_RENDER;
    const env = { references: { ...this.env.references } };
    this.tail.replaceChildren(sanitize(md.renderer.render(md.parse(src, env), md.options, env)));
    this.shown = this.text.length;
  }

  /** Show the text that came since the last render as plain text, inside the last block. */
  appendPlain() {
    /** @type {Element} */
    let target = this.tail;
    while (target.lastElementChild && CONTAINERS.has(target.lastElementChild.tagName)) {
      const last = target.lastElementChild;
      if (last.classList.contains("nbchat-codeblock")) {
        target = last.querySelector("pre > code") || last;
        break;
      }
      target = last;
    }
    target.append(this.text.slice(this.shown));
    this.shown = this.text.length;
  }
}
