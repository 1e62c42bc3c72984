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

Two servers, two figures, in one run:

1. **paced like the local model** (the issue's figure): before the run, `llama_cpp.server` with
   SmolLM2 (the project's loopback OpenAI-compatible peer, the fastest real model server here)
   streams a few short replies; the scripted server then waits that median time to first chunk
   before each reply and that median gap between chunks. The tool loop's cost is measured as a
   real loop would see it: against a server that has to generate.
2. **instant**: the whole reply written at once, no waiting. Only the client's CPU is left, so
   this is the bound on nbchat's own per-request and per-chunk cost (Python: building the
   request, the turn's bookkeeping, the provenance hash, the status tracker), with httpx's own
   cost as the baseline.

Both sides run in the same event loop, in alternating blocks (by hand, loop, turns; then loop,
turns, by hand; ...) so they see the same machine load; the ratio is the median of the
per-pair ratios. The local log is off (it has its own benchmark, bench_log_overhead.py).
Target (issue 12): loop/by hand <= 1.05.

    .venv/bin/python benchmarks/bench_tool_loop.py [--pace both|local|none] [--blocks 15]
        [--per-block 10] [--answer 300]
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


def _response(body: bytes) -> list[bytes]:
    """The reply as the pieces a paced server writes: head and first record, then a record
    each (a record ends in a blank line)."""
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {len(body)}"
            "\r\nConnection: keep-alive\r\n\r\n").encode()
    records = [r + b"\n\n" for r in body.split(b"\n\n") if r]
    return [head + records[0], *records[1:]]


async def serve(answer_chunks: int, sock: socket.socket, ttft: float = 0.0,
                gap: float = 0.0) -> None:
    """The scripted model: answer each POST by the number of `tool` messages it holds; with
    `ttft`/`gap` (seconds), wait before the first record and between records, as a model
    server generating does; without, write the whole reply at once."""
    replies = [_response(tool_call_body(1)), _response(tool_call_body(2)),
               _response(answer_body(answer_chunks))]
    whole = [b"".join(r) for r in replies]

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
                which = min(results, 2)
                if not ttft and not gap:
                    writer.write(whole[which])
                    await writer.drain()
                    continue
                await asyncio.sleep(ttft)
                for i, piece in enumerate(replies[which]):
                    if i:
                        await asyncio.sleep(gap)
                    writer.write(piece)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, sock=sock)
    async with server:
        await server.serve_forever()


def start_server(answer_chunks: int, ttft: float = 0.0,
                 gap: float = 0.0) -> tuple[str, Callable[[], None]]:
    """The scripted model on 127.0.0.1 in a process of its own (in a thread of this one, it
    would share the GIL with the client and measure the hand-over between the two):
    (base URL ending in /v1, stop)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(answer_chunks),
                             "--fd", str(sock.fileno()), "--ttft", repr(ttft), "--gap", repr(gap)],
                            pass_fds=[sock.fileno()])
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


def local_pace(samples: int = 7) -> tuple[float, float]:
    """(time to first chunk, median gap between chunks) in seconds of `llama_cpp.server` with
    SmolLM2 on loopback, streaming short replies (the same server the tests start)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "tests"))
    from servers import start_llama_server, stop_server

    base, proc, log = start_llama_server()
    firsts: list[float] = []
    gaps: list[float] = []
    try:
        with httpx.Client(timeout=60) as client:
            for i in range(samples + 1):
                body = {"model": "smollm2", "stream": True, "max_tokens": 24, "temperature": 0,
                        "messages": [{"role": "user", "content": f"Count to ten. ({i})"}]}
                start = time.perf_counter()
                stamps: list[float] = []
                with client.stream("POST", f"{base}/chat/completions", json=body) as resp:
                    for line in resp.iter_lines():
                        if line.startswith("data: {"):
                            stamps.append(time.perf_counter())
                if i == 0:
                    continue  # warm-up: loading, first prompt
                firsts.append(stamps[0] - start)
                gaps += [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    finally:
        stop_server(proc)
        log.close()  # type: ignore[attr-defined]
    return statistics.median(firsts), statistics.median(gaps)


async def run(base: str, blocks: int, per_block: int, answer: int) -> float:
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
        order = [(hand, h), (loop, lp), (turns, t)]
        for block in range(blocks):  # each side goes first in turn: no place in a block wins
            for fn, out in order[block % 3:] + order[:block % 3]:
                out.append(await timed(fn, per_block))

    def line(name: str, xs: list[float]) -> None:
        print(f"  {name:<40}{statistics.median(xs) * 1000:8.2f} ms "
              f"(block range {min(xs) * 1000:.2f}..{max(xs) * 1000:.2f})")

    line("3 requests by hand (httpx):", h)
    line("3 nbchat turns, tool answered by hand:", t)
    line("nbchat tool loop (3 requests):", lp)
    vs_httpx = statistics.median(y / x for x, y in zip(h, lp, strict=True))
    vs_turns = statistics.median(y / x for x, y in zip(t, lp, strict=True))
    print(f"  ratio loop / httpx by hand  (median of {blocks} paired blocks): {vs_httpx:.3f}")
    print(f"  ratio loop / nbchat turns   (median of {blocks} paired blocks): {vs_turns:.3f}  "
          "(the loop's own share)")
    print(f"  nbchat's cost per request over httpx: "
          f"{(statistics.median(lp) - statistics.median(h)) / 3 * 1e6:.0f} us")
    return vs_httpx


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pace", choices=("both", "local", "none"), default="both",
                    help="local: the server paced like llama_cpp.server with SmolLM2; "
                         "none: instant replies (client CPU only)")
    ap.add_argument("--blocks", type=int, default=15)
    ap.add_argument("--per-block", type=int, default=10)
    ap.add_argument("--answer", type=int, default=300, help="text chunks of the final answer")
    ap.add_argument("--paced-answer", type=int, default=40,
                    help="text chunks of the final answer when paced")
    ap.add_argument("--paced-blocks", type=int, default=7)
    ap.add_argument("--paced-per-block", type=int, default=2)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the server process
    ap.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ttft", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--gap", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve is not None:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.serve, socket.socket(fileno=args.fd), args.ttft, args.gap))
        return
    os.environ["NBCHAT_LOG"] = "off"
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    results = {}
    if args.pace in ("both", "local"):
        ttft, gap = local_pace()
        print(f"paced like llama_cpp.server + SmolLM2 on loopback (measured now): first chunk "
              f"after {ttft * 1000:.1f} ms, then one every {gap * 1000:.2f} ms; answer of "
              f"{args.paced_answer} chunks")
        base, stop = start_server(args.paced_answer, ttft, gap)
        try:
            results["paced"] = asyncio.run(run(base, args.paced_blocks, args.paced_per_block,
                                               args.paced_answer))
        finally:
            stop()
    if args.pace in ("both", "none"):
        print(f"instant server (client CPU only); answer of {args.answer} chunks")
        base, stop = start_server(args.answer)
        try:
            results["instant"] = asyncio.run(run(base, args.blocks, args.per_block, args.answer))
        finally:
            stop()
    if "paced" in results:
        print(f"issue 12 figure: loop / by hand against the paced server = "
              f"{results['paced']:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
