"""An incremental Server-Sent Events parser: bytes in, `(event, data)` records out.

Pure and generic (OpenAI-style chat streams, Replicate, Cog all use it). It follows the
WHATWG rules that matter on the wire: `:` comment lines are skipped, several `data:` lines
of one record are joined with "\\n", `event:` names the record ("message" by default), one
leading space after the colon is dropped, lines end in LF, CRLF or CR, and a record ends at a
blank line. Chunk boundaries may fall anywhere, even inside a CRLF or a UTF-8 sequence.

The hot path is one `bytes.split(b"\\n")` per network chunk and a few comparisons per line.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator

__all__ = ["SSEParser", "aiter_sse", "iter_sse", "sse_records"]

Record = tuple[str, str]


#: bytes kept while no record has come, to show what a server sent instead of events
HEAD_LIMIT = 1 << 20


class SSEParser:
    """Feed bytes with `feed()`; each call returns the records completed by those bytes.

    `records` counts the records dispatched; while it is 0 the bytes received (up to
    `HEAD_LIMIT`) are kept, so that a body that is not SSE at all (a bare JSON error object or
    an HTML page under `content-type: text/event-stream`) can be shown: see `bare_body`."""

    __slots__ = ("_buf", "_event", "_data", "last_id", "retry", "records", "_head")

    def __init__(self) -> None:
        self._buf = b""
        self._event = ""
        self._data: list[bytes] = []
        self.last_id: str | None = None
        self.retry: int | None = None
        self.records = 0
        self._head = b""

    @property
    def bare_body(self) -> bytes | None:
        """What the server sent when it sent no record at all (None once a record came)."""
        return None if self.records else self._head

    def feed(self, chunk: bytes) -> list[Record]:
        """The `(event, data)` records completed by `chunk` (bytes, split anywhere); the rest is
        buffered. `data` is the record's `data:` lines joined with "\\n" and decoded as UTF-8 (bad
        bytes replaced); `event` is "message" unless an `event:` line named it.
        """
        if not self.records and len(self._head) < HEAD_LIMIT:
            self._head += chunk
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            # a CR at the very end may be the first half of a CRLF split across chunks
            hold = buf.endswith(b"\r")
            if hold:
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if hold:
                buf += b"\r"
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        out: list[Record] = []
        data = self._data
        for line in lines:
            if not line:  # blank line: dispatch
                if data:
                    out.append(
                        (self._event or "message", b"\n".join(data).decode("utf-8", "replace"))
                    )
                    data.clear()
                self._event = ""
                continue
            if line[:5] == b"data:":
                value = line[5:]
                data.append(value[1:] if value[:1] == b" " else value)
                continue
            if line[0] == 58:  # ":" comment / keep-alive ping
                continue
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"event":
                self._event = value.decode("utf-8", "replace")
            elif name == b"data":  # "data" with no colon: an empty data line
                data.append(b"")
            elif name == b"id":
                self.last_id = value.decode("utf-8", "replace")
            elif name == b"retry" and value.isdigit():
                self.retry = int(value)
            # any other field is ignored, as the spec says
        if out:
            self.records += len(out)
        return out

    def flush(self) -> list[Record]:
        """At end of stream: the last record if the server closed without a final blank line."""
        out = self.feed(b"\n\n") if (self._buf or self._data) else []
        self._buf = b""
        return out

    @property
    def pending(self) -> bool:
        """Whether bytes of an unfinished record are buffered."""
        return bool(self._buf or self._data)


def iter_sse(chunks: Iterable[bytes]) -> Iterator[Record]:
    """The `(event, data)` records of a byte stream, the last even without a final blank line."""
    parser = SSEParser()
    for chunk in chunks:
        yield from parser.feed(chunk)
    yield from parser.flush()


async def aiter_sse(chunks: AsyncIterable[bytes]) -> AsyncIterator[Record]:
    """`iter_sse` for an async byte stream (e.g. `httpx.Response.aiter_bytes()`)."""
    async for record in sse_records(SSEParser(), chunks):
        yield record


async def sse_records(parser: SSEParser, chunks: AsyncIterable[bytes]) -> AsyncIterator[Record]:
    """Records from `chunks` through `parser`, which the caller keeps (e.g. for `bare_body`)."""
    async for chunk in chunks:
        for record in parser.feed(chunk):
            yield record
    for record in parser.flush():
        yield record
