"""A loopback HTTP server whose answers a test scripts step by step: real sockets, real timing.

    server = FaultServer()                       # 127.0.0.1, a free port (fixture: fault_server)
    server.script(sse_head(), record({...}), 0.5, CLOSE)
    server.base                                  # "http://127.0.0.1:PORT/v1"
    server.requests                              # what arrived, in order
    server.most_at_once                          # the most requests answered at one time
    server.close()

Each connection takes the next script; the last one repeats. A step is bytes to send, a
number of seconds to pause, `HOLD` (stay connected and silent until the test ends), `CLOSE`
(close now, even mid-answer) or `STALL` (take the request and never answer, not even headers).
Pauses and holds end as soon as the server closes, so tests never wait for them.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass
from typing import Any

import pytest

HOLD, CLOSE, STALL = "hold", "close", "stall"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def head(status: int = 200, ctype: str = "text/event-stream", *, chunked: bool = False,
         length: int | None = None, **headers: str) -> bytes:
    """A status line and headers. Without `length` or `chunked`, the body ends at close."""
    reason = {200: "OK", 401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests",
              500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "Status")
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {ctype}"]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif length is not None:
        lines.append(f"Content-Length: {length}")
    lines.append("Connection: close")
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def sse_head(**headers: str) -> bytes:
    """Headers of an event stream in chunked encoding (so a close before the end is a drop)."""
    return head(200, "text/event-stream", chunked=True, **headers)


def chunk(data: bytes) -> bytes:
    """One piece of a chunked body (`END` ends the body)."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


END = b"0\r\n\r\n"


def record(obj: Any) -> bytes:
    """One SSE `data:` record holding `obj` as JSON, as a chunk."""
    return chunk(f"data: {json.dumps(obj)}\n\n".encode())


def text_chunk(text: str | list[Any] | int | dict[str, Any] | None = None, *,
               finish: str | None = None, **delta: Any) -> bytes:
    """A `chat.completion.chunk` record whose delta has `content=text` (and `delta` keys)."""
    d = dict(delta)
    if text is not None:
        d["content"] = text
    return record({"object": "chat.completion.chunk", "model": "m",
                   "choices": [{"index": 0, "delta": d, "finish_reason": finish}]})


DONE = chunk(b"data: [DONE]\n\n") + END


def json_answer(status: int, obj: Any, **headers: str) -> bytes:
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return head(status, "application/json", length=len(body), **headers) + body


class FaultServer:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.scripts: list[tuple[Any, ...]] = []
        self.requests: list[Seen] = []
        self.answering = 0  # requests taken and not yet fully answered
        self.most_at_once = 0  # the most there were
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._serve, name="fault-server", daemon=True)
        self._acceptor.start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *steps: Any) -> FaultServer:
        """Queue the answer to the next connection."""
        self.scripts.append(steps)
        return self

    def only(self, *steps: Any) -> FaultServer:
        """From now on, answer every connection with these steps."""
        with self._lock:
            self.scripts[:] = [steps]
        return self

    def _serve(self) -> None:
        while not self.closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
                steps = self.scripts.pop(0) if len(self.scripts) > 1 else \
                    (self.scripts[0] if self.scripts else (json_answer(404, {}),))
            handler = threading.Thread(target=self._handle, args=(conn, steps),
                                       name="fault-server-conn", daemon=True)
            self._threads.append(handler)
            handler.start()

    def _read_request(self, conn: socket.socket) -> Seen | None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return None
            buf += data
        top, _, rest = buf.partition(b"\r\n\r\n")
        lines = top.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            data = conn.recv(65536)
            if not data:
                break
            rest += data
        return Seen(method, path, headers, rest)

    def _handle(self, conn: socket.socket, steps: tuple[Any, ...]) -> None:
        try:
            seen = self._read_request(conn)
            if seen is None:
                return
            self.requests.append(seen)
            with self._lock:
                self.answering += 1
                self.most_at_once = max(self.most_at_once, self.answering)
            try:
                self._answer(conn, steps)
            finally:
                with self._lock:
                    self.answering -= 1
        except OSError:  # the client went away: nothing to do
            pass
        finally:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _answer(self, conn: socket.socket, steps: tuple[Any, ...]) -> None:
        for step in steps:
            if isinstance(step, bytes):
                conn.sendall(step)
            elif isinstance(step, (int, float)):
                if self.closing.wait(step):
                    return
            elif step in (HOLD, STALL):
                self.closing.wait()
                return
            elif step == CLOSE:
                return

    def close(self) -> None:
        """Stop accepting, drop every connection, and wait for the server's threads to end."""
        self.closing.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        except OSError:
            pass
        self.sock.close()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._acceptor.join(5)
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def fault_server():
    server = FaultServer()
    try:
        yield server
    finally:
        server.close()
