"""What the tool loop costs: a loop of 3 sequential requests vs the same requests by hand.

A loopback OpenAI-compatible server (a process of its own) plays a model that calls a
tool twice, one call per reply, then answers: it looks at how many `tool` messages the request
holds (0 -> call `step(n=1)`, 1 -> `step(n=2)`, 2 -> a text answer of `--answer` chunks). Tool
calls stream as argument fragments, as OpenAI sends them.

- loop: `nbchat.achat(..., tools=[step])`: three requests, the function run twice, its results
  sent back bound to each call's id;
- by hand: the same three POSTs with httpx (same client settings: one AsyncClient, keep-alive),
  each stream read line by line and parsed with `json.loads`, the arguments joined, the function
  called and the next request's messages built.

Both sides run in the same event loop, in alternating blocks (by hand, loop, by hand, ...) so
they see the same machine load; the ratio is the median of the per-pair ratios. The local log
is off (it has its own benchmark, bench_log_overhead.py). Target (issue 12): loop/by hand <= 1.05.

    .venv/bin/python benchmarks/bench_tool_loop.py [--blocks 15] [--per-block 10] [--answer 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import httpx

MODEL = "bench"
HEAD = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
        "model": MODEL}


def _chunk(delta: dict, finish: str | None = None) -> bytes:
    record = {**HEAD, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                   "finish_reason": finish}]}
    return f"data: {json.dumps(record)}\n\n".encode()


def tool_call_body(n: int) -> bytes:
    """A streamed call of `step` with `{"n": n}`, its arguments in fragments."""
    args = json.dumps({"n": n, "note": "x" * 40})
    parts = [_chunk({"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": f"call_{n}", "type": "function",
         "function": {"name": "step", "arguments": ""}}]})]
    parts += [_chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[i:i + 4]}}]})
              for i in range(0, len(args), 4)]
    parts += [_chunk({}, "tool_calls"), b"data: [DONE]\n\n"]
    return b"".join(parts)


def answer_body(n_chunks: int) -> bytes:
    parts = [_chunk({"role": "assistant", "content": ""})]
    parts += [_chunk({"content": "tok "})] * n_chunks
    parts += [_chunk({}, "stop"), b"data: [DONE]\n\n"]
    return b"".join(parts)


def _response(body: bytes) -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {len(body)}"
            "\r\nConnection: keep-alive\r\n\r\n").encode() + body


async def serve(answer_chunks: int, sock: socket.socket) -> None:
    """The scripted model: answer each POST by the number of `tool` messages it holds."""
    replies = [_response(tool_call_body(1)), _response(tool_call_body(2)),
               _response(answer_body(answer_chunks))]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = json.loads(await reader.readexactly(length)) if length else {}
                results = sum(1 for m in body.get("messages", ()) if m.get("role") == "tool")
                writer.write(replies[min(results, 2)])
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, sock=sock)
    async with server:
        await server.serve_forever()


def start_server(answer_chunks: int) -> tuple[str, Callable[[], None]]:
    """The scripted model on 127.0.0.1 in a process of its own (in a thread of this one, it
    would share the GIL with the client and measure the hand-over between the two):
    (base URL ending in /v1, stop)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(answer_chunks),
                             "--fd", str(sock.fileno())], pass_fds=[sock.fileno()])
    sock.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("the scripted server did not start") from None
            time.sleep(0.05)

    def stop() -> None:
        proc.terminate()
        proc.wait(10)

    return f"http://127.0.0.1:{port}/v1", stop


def step(n: int, note: str = "") -> str:
    """One step of a task.

    Args:
        n: the step's number
        note: anything to remember
    """
    return f"step {n} done"


TOOL = {"type": "function", "function": {"name": "step", "description": "One step of a task.",
        "parameters": {"type": "object", "properties": {"n": {"type": "integer"},
                                                        "note": {"type": "string"}},
                       "required": ["n"]}}}


async def by_hand(client: httpx.AsyncClient, base: str) -> str:
    messages: list[dict] = [{"role": "user", "content": "go"}]
    while True:
        body = {"model": MODEL, "messages": messages, "tools": [TOOL], "stream": True,
                "stream_options": {"include_usage": True}}
        text: list[str] = []
        call = {"id": "", "name": "", "arguments": ""}
        async with client.stream("POST", f"{base}/chat/completions", json=body) as resp:
            resp.raise_for_status()
            async for line in resp.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                delta = json.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    text.append(delta["content"])
                for frag in delta.get("tool_calls") or ():
                    call["id"] = frag.get("id") or call["id"]
                    fn = frag.get("function") or {}
                    call["name"] = fn.get("name") or call["name"]
                    call["arguments"] += fn.get("arguments") or ""
        if not call["name"]:
            return "".join(text)
        result = step(**json.loads(call["arguments"]))
        messages += [{"role": "assistant", "content": "", "tool_calls": [
            {"id": call["id"], "type": "function",
             "function": {"name": call["name"], "arguments": call["arguments"]}}]},
            {"role": "tool", "tool_call_id": call["id"], "content": result}]


async def with_loop(base: str) -> str:
    import nbchat

    reply = await nbchat.achat("go", model=f"openai:{MODEL}", base_url=base, tools=[step])
    assert [s.result for s in reply.steps] == ["step 1 done", "step 2 done"], reply.steps
    return reply.text


async def nbchat_by_hand(base: str) -> str:
    """The same three requests as single nbchat turns, the tool run and answered by hand."""
    import nbchat

    conv = nbchat.Conversation(model=f"openai:{MODEL}", base_url=base, tools=[TOOL])
    reply = await conv.asend("go")
    while reply.tool_calls:
        [call] = reply.tool_calls
        reply = await conv.asend(("tool", step(**call.arguments)))
    return reply.text


async def run(base: str, blocks: int, per_block: int, answer: int) -> None:
    async def timed(fn: Callable[[], object], n: int) -> float:
        t = time.perf_counter()
        for _ in range(n):
            text = await fn()  # type: ignore[misc]
            assert text == "tok " * answer, text[:40]
        return (time.perf_counter() - t) / n

    async with httpx.AsyncClient(timeout=30) as client:
        def hand() -> object:
            return by_hand(client, base)

        def loop() -> object:
            return with_loop(base)

        def turns() -> object:
            return nbchat_by_hand(base)

        for fn in (hand, loop, turns):  # warm every path (connections, imports, schemas)
            await timed(fn, 3)
        h, lp, t = [], [], []
        for _ in range(blocks):
            h.append(await timed(hand, per_block))
            lp.append(await timed(loop, per_block))
            t.append(await timed(turns, per_block))

    def line(name: str, xs: list[float]) -> None:
        print(f"{name:<40}{statistics.median(xs) * 1000:7.2f} ms "
              f"(block range {min(xs) * 1000:.2f}..{max(xs) * 1000:.2f})")

    line("3 requests by hand (httpx):", h)
    line("3 nbchat turns, tool answered by hand:", t)
    line("nbchat tool loop (3 requests):", lp)
    vs_httpx = statistics.median(y / x for x, y in zip(h, lp, strict=True))
    vs_turns = statistics.median(y / x for x, y in zip(t, lp, strict=True))
    print(f"ratio loop / httpx by hand  (median of {blocks} paired blocks): {vs_httpx:.3f}  "
          "(target <= 1.05)")
    print(f"ratio loop / nbchat turns   (median of {blocks} paired blocks): {vs_turns:.3f}  "
          "(the loop's own share)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=15)
    ap.add_argument("--per-block", type=int, default=10)
    ap.add_argument("--answer", type=int, default=300, help="text chunks of the final answer")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the server process
    ap.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve is not None:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.serve, socket.socket(fileno=args.fd)))
        return
    os.environ["NBCHAT_LOG"] = "off"
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    base, stop = start_server(args.answer)
    try:
        asyncio.run(run(base, args.blocks, args.per_block, args.answer))
    finally:
        stop()


if __name__ == "__main__":
    main()
