"""What makes HTML unsafe to show: checked on what our sanitizer produced, with a parser of its
own (the standard library's), so a test does not trust the code it tests.

`problems(html)` lists every element outside the allow-list, every event-handler or style
attribute, every URL that is not http(s)/mailto/`#` for a link or an inline raster image for
`src`, and every attribute that names the corpus' remote host other than a link's `href`.
"""

from __future__ import annotations

import html as htmllib
import json
import re
from html.parser import HTMLParser

from xss_corpus import REMOTE_HOST

ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "ul", "ol", "li",
    "pre", "code", "em", "strong", "s", "del", "a", "table", "thead", "tbody", "tr", "th",
    "td", "input", "span", "div", "sub", "img",
    # the collapsed "Reasoning" block nbchat wraps around a reasoning model's thinking: safe
    # while no attribute but a class survives the sanitizer (an ontoggle is flagged below)
    "details", "summary",
}
#: elements that can run script, load a document or resource, or submit: never allowed
SCRIPT_CAPABLE = {
    "script", "style", "iframe", "frame", "frameset", "object", "embed", "applet", "svg",
    "math", "base", "meta", "link", "form", "button", "input-image", "video", "audio",
    "source", "picture", "template", "noscript", "textarea", "select", "body",
    "html", "head", "title", "marquee", "isindex", "portal", "track",
}
_CONTROL = re.compile(r"[\x00-\x20\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]+")
_SAFE_HREF = re.compile(r"(?:https?:|mailto:|#)", re.I)
_RASTER = re.compile(r"data:image/(?:png|jpeg|gif|webp);base64,", re.I)
#: the styles the sanitizer keeps: alignment, and the compare table's fixed column widths
_STYLE = re.compile(
    r"\s*(?:(?:(?:text-align|vertical-align|table-layout)\s*:\s*[a-z-]+|width\s*:\s*[\d.]+%)"
    r"\s*;?\s*)*", re.I)


_PAYLOAD_CALL = re.compile(r"alert\('[a-z]\d\d'\)|msgbox\('[a-z]\d\d'\)")
_DATA_SCRIPT = re.compile(r"application/(?:vnd\.[\w.+-]+\+)?json", re.I)


class _Collector(HTMLParser):
    def __init__(self, document: bool = False) -> None:
        super().__init__(convert_charrefs=True)
        self.document = document
        self.found: list[str] = []
        self.text: list[str] = []
        self.links: list[str] = []
        self._script: str | None = None  # the type of the script being read

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        tag = tag.lower()
        if tag == "script":
            self._script = dict(attrs).get("type") or "text/javascript"
        if not self.document and (tag not in ALLOWED_TAGS or tag in SCRIPT_CAPABLE):
            self.found.append(f"element <{tag}>")
        if not self.document and tag == "input" and dict(attrs).get("type") != "checkbox":
            self.found.append("input that is not a checkbox")
        for name, value in attrs:
            name, value = name.lower(), value or ""
            plain = _CONTROL.sub("", htmllib.unescape(value))
            if name.startswith("on"):
                self.found.append(f"event handler {name} on <{tag}>")
            elif self.document and name in ("style", "src", "content", "data"):
                pass  # the page's own template
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
            # CSS's url() loads a resource from a style; in a link's href it is only text of
            # the address the reader chose to follow (hypothesis joined "<http://" "url(" "> "
            # into the autolink <a href="http://url(">), as a remote host there is
            if "url(" in plain.lower() and name != "href":
                self.found.append(f"url() in {name}")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag.lower() == "script":
            self._script = None

    def handle_endtag(self, tag: str) -> None:
        if tag.lower() == "script":
            self._script = None

    def handle_data(self, data: str) -> None:
        if self._script is None:
            self.text.append(data)
            return
        if _DATA_SCRIPT.fullmatch(self._script):
            try:  # a data script that a payload broke out of no longer parses
                json.loads(data)
            except ValueError:
                self.found.append(f"{self._script} script that is not JSON")
        elif _PAYLOAD_CALL.search(data):
            self.found.append(f"script running a payload: {_PAYLOAD_CALL.search(data)[0]}")


def _collect(fragment: str, document: bool = False) -> _Collector:
    c = _Collector(document)
    c.feed(fragment)
    c.close()
    return c


def problems(fragment: str) -> list[str]:
    """Everything in `fragment` that could run, fetch or navigate somewhere unsafe."""
    return _collect(fragment).found


def document_problems(page: str) -> list[str]:
    """For a whole page whose template brings its own scripts and styles (nbconvert's):
    event handlers, unsafe link targets, the remote host outside links, scripts that run a
    payload, and data scripts a payload broke out of."""
    return _collect(page, document=True).found


def visible_text(fragment: str) -> str:
    """The text a reader sees (character references decoded)."""
    return "".join(_collect(fragment).text)


def hrefs(fragment: str) -> list[str]:
    return _collect(fragment).links
