// A tiny Markdown renderer for untrusted model output. It only ever creates elements and
// text nodes (it never parses HTML strings); links only to http(s); images only on a click.
// Shared by panel.js and compare.js (nbchat concatenates it in front of each widget module).

const SAFE_LINK = /^https?:\/\//i;
const SAFE_IMAGE_DATA = /^data:image\/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=]*$/;
const INLINE =
  /(`+)([^`][\s\S]*?)\1(?!`)|!\[([^\]]*)\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)|\[([^\]]+)\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)|\*\*([^*][\s\S]*?)\*\*|(?<![\w])__([^_][\s\S]*?)__(?![\w])|\*([^*\s][^*]*?)\*|(?<![\w])_([^_\s][^_]*?)_(?![\w])/g;

/**
 * @template {string} K
 * @param {K} tag
 * @param {Record<string, string>} [attrs]
 * @param {...(Node|string)} children
 * @returns {K extends keyof HTMLElementTagNameMap ? HTMLElementTagNameMap[K] : HTMLElement}
 */
function h(tag, attrs = {}, ...children) {
  const node = /** @type {any} */ (document.createElement(tag));
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

/** @param {string} url */
function isSafeImageSrc(url) {
  return SAFE_IMAGE_DATA.test(url);
}

/**
 * Text with line breaks kept.
 * @param {string} text
 * @param {HTMLElement} parent
 */
function appendText(text, parent) {
  const lines = text.split("\n");
  lines.forEach((line, i) => {
    if (i) parent.append(h("br"));
    if (line) parent.append(document.createTextNode(line));
  });
}

/**
 * A button that shows a remote image only when clicked (nothing is fetched before).
 * @param {string} alt
 * @param {string} url
 */
function imagePlaceholder(alt, url) {
  const label = `Load image${alt ? ": " + alt : ""}`;
  if (!SAFE_LINK.test(url) && !isSafeImageSrc(url)) {
    return h("span", { class: "nbchat-img-blocked" }, `[image${alt ? ": " + alt : ""}]`);
  }
  const btn = h("button", { type: "button", class: "nbchat-load-image", title: url }, label);
  btn.addEventListener("click", () => {
    const img = h("img", { alt, referrerpolicy: "no-referrer", class: "nbchat-md-img" });
    img.setAttribute("src", url);
    btn.replaceWith(img);
  });
  return btn;
}

/**
 * Inline Markdown: code spans, links, images, bold, italic.
 * @param {string} text
 * @param {HTMLElement} parent
 */
function renderInline(text, parent) {
  let pos = 0;
  const re = new RegExp(INLINE.source, "g"); // own state: this function recurses
  for (let m = re.exec(text); m; m = re.exec(text)) {
    appendText(text.slice(pos, m.index), parent);
    pos = m.index + m[0].length;
    if (m[1] !== undefined) {
      parent.append(h("code", {}, m[2]));
    } else if (m[3] !== undefined) {
      parent.append(imagePlaceholder(m[3], m[4]));
    } else if (m[5] !== undefined) {
      const url = m[6];
      if (SAFE_LINK.test(url)) {
        const a = h("a", { target: "_blank", rel: "noopener noreferrer nofollow" });
        a.setAttribute("href", url);
        renderInline(m[5], a);
        parent.append(a);
      } else {
        const span = h("span", { class: "nbchat-unsafe-link", title: "link removed" });
        renderInline(m[5], span);
        parent.append(span);
      }
    } else if (m[7] !== undefined || m[8] !== undefined) {
      const b = h("strong");
      renderInline(m[7] ?? m[8], b);
      parent.append(b);
    } else {
      const i = h("em");
      renderInline(m[9] ?? m[10], i);
      parent.append(i);
    }
  }
  appendText(text.slice(pos), parent);
}

/**
 * A monospaced code block with a copy button.
 * @param {string} code
 * @param {string} lang
 */
function codeBlock(code, lang) {
  const copy = h("button", { type: "button", class: "nbchat-copy", "aria-label": "Copy code" }, "Copy");
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(code);
      copy.textContent = "Copied";
    } catch {
      copy.textContent = "Copy failed";
    }
    setTimeout(() => (copy.textContent = "Copy"), 1500);
  });
  const pre = h("pre", {}, h("code", lang ? { "data-lang": lang } : {}, code));
  return h("div", { class: "nbchat-codeblock" }, copy, pre);
}

/**
 * Render Markdown into `parent`, replacing its children.
 * @param {string} text
 * @param {HTMLElement} parent
 */
function renderMarkdown(text, parent) {
  parent.replaceChildren();
  const lines = text.split("\n");
  /** @type {string[]} */
  let para = [];
  /** @type {HTMLElement | null} */
  let list = null;
  const flush = () => {
    if (para.length) {
      const p = h("p");
      renderInline(para.join("\n"), p);
      parent.append(p);
      para = [];
    }
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = line.match(/^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/);
    if (fence) {
      flush();
      list = null;
      const mark = fence[1];
      const body = [];
      for (i++; i < lines.length; i++) {
        const t = lines[i].trim();
        if (t.startsWith(mark) && t.split("").every((c) => c === mark[0])) break;
        body.push(lines[i]);
      }
      parent.append(codeBlock(body.join("\n"), fence[2]));
      continue;
    }
    const heading = line.match(/^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/);
    if (heading) {
      flush();
      list = null;
      const hx = h(`h${Math.min(heading[1].length + 2, 6)}`);
      renderInline(heading[2], hx);
      parent.append(hx);
      continue;
    }
    const item = line.match(/^\s*([-*+]|\d+[.)])\s+(.*)$/);
    if (item) {
      flush();
      const ordered = /\d/.test(item[1]);
      if (!list || (list.tagName === "OL") !== ordered) {
        list = h(ordered ? "ol" : "ul");
        parent.append(list);
      }
      const li = h("li");
      renderInline(item[2], li);
      list.append(li);
      continue;
    }
    if (!line.trim()) {
      flush();
      list = null;
      continue;
    }
    if (list && /^\s{2,}\S/.test(line) && list.lastElementChild) {
      const li = /** @type {HTMLElement} */ (list.lastElementChild);
      li.append(h("br"));
      renderInline(line.trim(), li);
      continue;
    }
    list = null;
    para.push(line);
  }
  flush();
}

/**
 * A data: URL for image bytes sent by the kernel (never a remote URL).
 * @param {DataView | ArrayBuffer} buf
 * @param {string} mime
 */
function bytesToDataUrl(buf, mime) {
  const bytes =
    buf instanceof ArrayBuffer ? new Uint8Array(buf) : new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, Array.from(bytes.subarray(i, i + 0x8000)));
  }
  const safeMime = /^image\/(png|jpeg|gif|webp)$/.test(mime) ? mime : "image/png";
  return `data:${safeMime};base64,${btoa(s)}`;
}

/**
 * An <img> for a kernel-supplied data: URL; anything else is refused.
 * @param {string} src
 * @param {string} alt
 */
function dataImage(src, alt) {
  if (!isSafeImageSrc(src)) return h("span", {}, "[image]");
  const img = h("img", { alt, class: "nbchat-image" });
  img.setAttribute("src", src);
  return img;
}
