"""A loopback OpenAI-compatible server that streams N chunks spread over a set time.

    from benchmarks.slow_sse import start_slow_server
    base_url, stop = start_slow_server(n_chunks=20, seconds=1.0)   # base_url ends in /v1

Every request (any model name) gets its own thread, so concurrent requests overlap the way
independent cloud hosts would. Used by bench_compare.py and bench_panel.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def start_slow_server(
    n_chunks: int, seconds: float, text: str = "word "
) -> tuple[str, Callable[[], None]]:
    pause = seconds / max(n_chunks, 1)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            body = json.dumps({"object": "list", "data": [
                {"id": "slow", "object": "model", "created": 0, "owned_by": "bench"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            head = {"id": "c", "object": "chat.completion.chunk", "created": 0,
                    "model": req.get("model", "slow")}
            start = time.perf_counter()
            for i in range(n_chunks):
                chunk = {**head, "choices": [{"index": 0, "delta": {"content": text},
                                              "finish_reason": None}]}
                # paced against the clock, so per-chunk sleep overshoot does not add up
                delay = start + (i + 1) * pause - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            end = {**head, "choices": [], "usage": {"prompt_tokens": 5,
                                                    "completion_tokens": n_chunks,
                                                    "total_tokens": n_chunks + 5}}
            stop = {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            self.wfile.write(f"data: {json.dumps(stop)}\n\ndata: {json.dumps(end)}\n\n"
                             "data: [DONE]\n\n".encode())
            self.wfile.flush()
            self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return f"http://127.0.0.1:{server.server_address[1]}/v1", stop
