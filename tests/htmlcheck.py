"""What makes HTML unsafe to show: checked on what our sanitizer produced, with a parser of its
own (the standard library's), so a test does not trust the code it tests.

`problems(html)` lists every element outside the allow-list, every event-handler or style
attribute, every URL that is not http(s)/mailto/`#` for a link or an inline raster image for
`src`, and every attribute that names the corpus' remote host other than a link's `href`.
"""

from __future__ import annotations

import html as htmllib
import re
from html.parser import HTMLParser

from xss_corpus import REMOTE_HOST

ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "ul", "ol", "li",
    "pre", "code", "em", "strong", "s", "del", "a", "table", "thead", "tbody", "tr", "th",
    "td", "input", "span", "div", "sub", "img",
}
#: elements that can run script, load a document or resource, or submit: never allowed
SCRIPT_CAPABLE = {
    "script", "style", "iframe", "frame", "frameset", "object", "embed", "applet", "svg",
    "math", "base", "meta", "link", "form", "button", "input-image", "video", "audio",
    "source", "picture", "template", "noscript", "textarea", "select", "details", "body",
    "html", "head", "title", "marquee", "isindex", "portal", "track",
}
_CONTROL = re.compile(r"[\x00-\x20\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]+")
_SAFE_HREF = re.compile(r"(?:https?:|mailto:|#)", re.I)
_RASTER = re.compile(r"data:image/(?:png|jpeg|gif|webp);base64,", re.I)
_STYLE = re.compile(r"\s*(?:(?:text-align|vertical-align)\s*:\s*[a-z-]+\s*;?\s*)*", re.I)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self.text: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        tag = tag.lower()
        if tag not in ALLOWED_TAGS or tag in SCRIPT_CAPABLE:
            self.found.append(f"element <{tag}>")
        if tag == "input" and dict(attrs).get("type") != "checkbox":
            self.found.append("input that is not a checkbox")
        for name, value in attrs:
            name, value = name.lower(), value or ""
            plain = _CONTROL.sub("", htmllib.unescape(value))
            if name.startswith("on"):
                self.found.append(f"event handler {name} on <{tag}>")
            elif name == "style" and not _STYLE.fullmatch(value):
                self.found.append(f"style {value!r} on <{tag}>")
            elif name == "href":
                self.links.append(plain)
                if not _SAFE_HREF.match(plain):
                    self.found.append(f"href {value!r}")
            elif name == "src" and not _RASTER.match(plain):
                self.found.append(f"src {value!r}")
            elif name in ("srcset", "action", "formaction", "data", "xlink:href", "background",
                          "poster", "srcdoc", "http-equiv", "content"):
                self.found.append(f"attribute {name} on <{tag}>")
            if REMOTE_HOST in plain and name != "href":
                self.found.append(f"remote host in {name}")
            if "url(" in plain.lower():
                self.found.append(f"url() in {name}")

    handle_startendtag = handle_starttag

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _collect(fragment: str) -> _Collector:
    c = _Collector()
    c.feed(fragment)
    c.close()
    return c


def problems(fragment: str) -> list[str]:
    """Everything in `fragment` that could run, fetch or navigate somewhere unsafe."""
    return _collect(fragment).found


def visible_text(fragment: str) -> str:
    """The text a reader sees (character references decoded)."""
    return "".join(_collect(fragment).text)


def hrefs(fragment: str) -> list[str]:
    return _collect(fragment).links
