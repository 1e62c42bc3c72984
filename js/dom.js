// Small DOM helpers shared by the widgets. Nothing here parses HTML: elements and text nodes only.

const SAFE_IMAGE_DATA = /^data:image\/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=]*$/;

/**
 * An element with attributes and children.
 * @template {string} K
 * @param {K} tag
 * @param {Record<string, string>} [attrs]
 * @param {...(Node|string)} children
 * @returns {K extends keyof HTMLElementTagNameMap ? HTMLElementTagNameMap[K] : HTMLElement}
 */
export function h(tag, attrs = {}, ...children) {
  const node = /** @type {any} */ (document.createElement(tag));
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

/**
 * Whether `url` is a base64 data: URL of a raster image (never a remote URL, never SVG).
 * @param {string} url
 */
export function isImageDataUrl(url) {
  return SAFE_IMAGE_DATA.test(url);
}

/**
 * Plain text with its line breaks kept (what the user typed).
 * @param {string} text
 * @param {HTMLElement} parent
 */
export function appendText(text, parent) {
  text.split("\n").forEach((line, i) => {
    if (i) parent.append(h("br"));
    if (line) parent.append(document.createTextNode(line));
  });
}

/**
 * A data: URL for image bytes sent by the kernel (never a remote URL).
 * @param {DataView | ArrayBuffer} buf
 * @param {string} mime
 */
export function bytesToDataUrl(buf, mime) {
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
export function dataImage(src, alt) {
  if (!isImageDataUrl(src)) return h("span", {}, "[image]");
  const img = h("img", { alt, class: "nbchat-image" });
  img.setAttribute("src", src);
  return img;
}
