"""A loopback OpenAI-compatible server that streams N `chat.completion.chunk` records fast.

    from benchmarks.loopback_sse import start_server
    base_url, stop = start_server(20_000)   # base_url ends in /v1
    ...                                      # POST {base_url}/chat/completions
    stop()

The whole SSE body is built once and written in one go (HTTP/1.1 keep-alive, Content-Length),
so the client, not the server, is what a benchmark measures. `GET /v1/models` lists "bench".
CLI: `python benchmarks/loopback_sse.py 20000 [DELAY_SECONDS]` serves until Ctrl-C (prints its
base URL first).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
from collections.abc import Callable

MODEL = "bench"


def sse_body(n_chunks: int, text: str = "tok ") -> bytes:
    """N content chunks, a finish chunk, a usage chunk and [DONE], as the wire carries them."""
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
            "model": MODEL, "system_fingerprint": "fp_bench"}
    content = json.dumps({**head, "choices": [{"index": 0, "delta": {"content": text},
                                              "logprobs": None, "finish_reason": None}]})
    first = json.dumps({**head, "choices": [{"index": 0, "delta": {"role": "assistant",
                                            "content": ""}, "logprobs": None,
                                            "finish_reason": None}]})
    last = json.dumps({**head, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                           "finish_reason": "stop"}]})
    usage = json.dumps({**head, "choices": [], "usage": {
        "prompt_tokens": 5, "completion_tokens": n_chunks, "total_tokens": n_chunks + 5}})
    parts = [f"data: {first}\n\n".encode()]
    parts += [f"data: {content}\n\n".encode()] * n_chunks
    parts += [f"data: {last}\n\n".encode(), f"data: {usage}\n\n".encode(), b"data: [DONE]\n\n"]
    return b"".join(parts)


def _response(status: str, ctype: str, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Connection: keep-alive\r\n\r\n").encode() + body


def start_server(n_chunks: int, host: str = "127.0.0.1", delay: float = 0.0
                 ) -> tuple[str, Callable[[], None]]:
    """Start the server in a daemon thread; returns (base URL ending in /v1, stop function).
    `delay`: seconds each chat completion waits before its answer (requests wait in parallel).
    """
    stream = _response("200 OK", "text/event-stream", sse_body(n_chunks))
    models = _response("200 OK", "application/json", json.dumps(
        {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0,
                                     "owned_by": "bench"}]}).encode())
    missing = _response("404 Not Found", "application/json",
                        b'{"error":{"message":"not found","type":"invalid_request_error"}}')

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                if length:
                    await reader.readexactly(length)
                if method == "POST" and path.endswith("/chat/completions"):
                    if delay:
                        await asyncio.sleep(delay)
                    writer.write(stream)
                elif method == "GET" and path.endswith("/models"):
                    writer.write(models)
                else:
                    writer.write(missing)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, asyncio.AbstractServer] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def main() -> None:
            holder["server"] = await asyncio.start_server(handle, sock=sock)
            ready.set()

        loop.run_until_complete(main())
        loop.run_forever()
        server = holder["server"]
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()

    thread = threading.Thread(target=run, name="loopback-sse", daemon=True)
    thread.start()
    ready.wait(10)

    def stop() -> None:
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    return f"http://{host}:{port}/v1", stop


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    wait = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    url, stop_server = start_server(n, delay=wait)
    print(url, flush=True)
    print(f"streaming {n} chunks at {url}/chat/completions (Ctrl-C to stop)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        stop_server()
