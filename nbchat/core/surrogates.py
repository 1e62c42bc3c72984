"""UTF-16 surrogate pairs split across stream chunks, joined back into characters.

JSON escapes text as UTF-16, so a character outside the Basic Multilingual Plane (an emoji) is
two escapes, `"\\ud83d\\ude00"`, and a server may cut a stream between them (`"Hi \\ud83d"`, then
`"\\ude00"`; seen from OpenAI-compatible proxies). `json.loads` gives each half as a lone
surrogate, which no encoder accepts. A `SurrogateJoiner` holds a high half left at the end of a
chunk until the next chunk; a half that never finds its pair becomes U+FFFD.
"""

from __future__ import annotations

import re

__all__ = ["SurrogateJoiner", "join_surrogates"]

_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def join_surrogates(text: str) -> str:
    """`text` with surrogate pairs joined and lone halves replaced by U+FFFD."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


class SurrogateJoiner:
    """Feed a stream's text chunks in order; what comes out is always encodable."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = ""

    def feed(self, text: str) -> str:
        """The next chunk's text with surrogate pairs joined (lone halves as U+FFFD); a high half at
        its end is held back for the next chunk.
        """
        if self.held:
            text, self.held = self.held + text, ""
        elif text.isascii() or not _SURROGATE.search(text):  # the usual case, kept cheap
            return text
        if text and "\ud800" <= text[-1] <= "\udbff":
            text, self.held = text[:-1], text[-1]
        return join_surrogates(text)

    def flush(self) -> str:
        """At the end of the stream: a high half still waiting for its pair, as U+FFFD."""
        held, self.held = self.held, ""
        return REPLACEMENT if held else ""
