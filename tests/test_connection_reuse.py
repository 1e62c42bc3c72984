"""A streamed reply that ends with `[DONE]` leaves its connection open for the next request
(nbchat.providers.protocols.openai_compat reads the body's end before closing the response;
httpx closes a connection whose response was closed before its end). Many requests in a row
(nbchat.map) then do not pay a TCP (and, in the cloud, TLS) handshake each: nbchat.map's
workers keep one connection each (nbchat.core.http.own_pool)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import nbchat

CHUNK = {"object": "chat.completion.chunk", "model": "m",
         "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}
BODY = f"data: {json.dumps(CHUNK)}\n\ndata: [DONE]\n\n".encode()


def keep_alive_server(delay: float = 0.0):
    """A loopback OpenAI-style server on keep-alive connections; counts connections. Each
    answer waits `delay` seconds (requests wait in parallel).
    Returns (base URL, the list of accepted connections, stop)."""
    accepted: list[int] = []
    tasks: list[asyncio.Task] = []
    holder: dict = {}
    loop = asyncio.new_event_loop()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    ready = threading.Event()

    async def handle(reader, writer):
        accepted.append(1)
        tasks.append(asyncio.current_task())
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                await asyncio.sleep(delay)
                # chunked, as streaming servers send it: the body ends with a 0-size chunk
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n"
                             + f"{len(BODY):x}\r\n".encode() + BODY + b"\r\n0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def run():
        asyncio.set_event_loop(loop)
        holder["server"] = loop.run_until_complete(asyncio.start_server(handle, sock=sock))
        ready.set()
        loop.run_forever()
        loop.close()

    async def shutdown():
        holder["server"].close()
        for task in tasks:  # the connections the client keeps open
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await holder["server"].wait_closed()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(5)

    def stop():
        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)

    return f"http://127.0.0.1:{sock.getsockname()[1]}/v1", accepted, stop


def test_requests_in_a_row_share_one_connection():
    base, accepted, stop = keep_alive_server()
    try:
        replies = [nbchat.chat("hi", model="openai:m", base_url=base) for _ in range(4)]
        assert [r.text for r in replies] == ["hi"] * 4
        assert len(accepted) == 1  # without reading the body's end: one connection per request
    finally:
        stop()


def test_a_map_keeps_one_connection_per_worker():
    from nbchat.core.mapping import _spare

    # with one shared pool, httpcore closes each connection that goes idle while more than
    # its keep-alive limit (16) are open, so at concurrency 24 most rows opened a new one
    base, accepted, stop = keep_alive_server(delay=0.02)
    try:
        rows = [f"row {i}" for i in range(96)]
        out = nbchat.map("{text}", rows, model="openai:m", base_url=base, concurrency=24,
                         progress=False)
        assert not out.errors and [r.text for r in out] == ["hi"] * 96
        workers = 24 + _spare(24)  # a quarter more workers than slots (see nbchat.core.mapping)
        assert len(accepted) <= workers + 2  # one per worker (a spare if one dropped)
    finally:
        stop()
