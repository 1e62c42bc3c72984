"""Interrupting a real ipykernel while `%%chat` streams from the local model."""

from __future__ import annotations

import queue
import time

import pytest
from faultserver import DONE, STALL, sse_head, text_chunk

jupyter_client = pytest.importorskip("jupyter_client")


#: shell replies to requests other than the cell being run (see _run)
OTHER_REPLIES: list[dict] = []


def _run(kc, code: str, timeout: float = 120, on_output=None) -> tuple[list[dict], dict]:
    """Execute `code`; collect iopub outputs until idle. `on_output(msg)` sees each output."""
    msg_id = kc.execute(code)
    outputs: list[dict] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no idle after {timeout} s for {code!r}") from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind in ("stream", "display_data", "update_display_data", "execute_result", "error"):
            outputs.append(msg)
            if on_output is not None:
                on_output(msg)
        if kind == "status" and msg["content"]["execution_state"] == "idle":
            break
    while True:  # the reply to this request; others (e.g. to comm_info) are kept aside
        reply = kc.get_shell_msg(timeout=30)
        if reply["parent_header"].get("msg_id") == msg_id:
            return outputs, reply["content"]
        OTHER_REPLIES.append(reply)


def _shown(outputs: list[dict]) -> str:
    """The HTML of every display message (the reply and its footer)."""
    return "".join(m["content"].get("data", {}).get("text/html", "") for m in outputs)


@pytest.fixture(scope="module")
def kernel():
    km = jupyter_client.KernelManager(kernel_name="python3")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_interrupt_stops_generation_keeps_partial_reply_and_next_cell_works(kernel):
    km, kc = kernel
    _, status = _run(kc, "%load_ext nbchat\nimport nbchat")
    assert status["status"] == "ok"
    interrupted_at: list[float] = []

    def interrupt_once(msg):
        html = msg["content"].get("data", {}).get("text/html", "")
        text = "nbchat-md" in html  # the reply's rendered text, not a status line
        if not interrupted_at and text and msg["msg_type"] in ("display_data",
                                                                "update_display_data"):
            interrupted_at.append(time.monotonic())
            km.interrupt_kernel()

    outputs, status = _run(
        kc,
        "%%chat -m local -t 0 --seed 1 --max-tokens 400\nWrite a very long essay about the sea.",
        on_output=interrupt_once,
    )
    assert interrupted_at, "no streamed output arrived before the interrupt"
    assert status["status"] == "error"  # the cell stops (Run All does not go on)
    shown = _shown(outputs)
    assert "interrupted" in shown  # the footer says so, under the partial text

    # the history kept the partial reply, marked interrupted, and generation stopped early
    _, status = _run(
        kc,
        "conv = get_ipython().find_cell_magic('chat').__self__.threads['default']\n"
        "last = conv.history[-1]\n"
        "assert last.role == 'assistant' and last.interrupted, last\n"
        "assert 0 < nbchat.last.usage.output_tokens < 400, nbchat.last.usage\n"
        "assert last.text and last.text == nbchat.last.text\n",
    )
    assert status["status"] == "ok", status

    outputs, status = _run(kc, "%%chat --max-tokens 5\nSay hi.")
    assert status["status"] == "ok"
    assert "llamacpp:smollm2" in _shown(outputs)


def test_a_message_arriving_during_a_sync_call_does_not_break_the_kernel(kernel):
    """ipykernel 7 handles shell messages (widget events, comm requests) on its loop; a sync
    call that re-entered that loop (nest_asyncio) made them fail with "cannot enter context"."""
    km, kc = kernel
    _run(kc, "import nbchat")
    sent: list[str] = []

    def poke(msg):
        if not sent:
            sent.append(kc.comm_info())  # a shell request while the cell streams

    outputs, status = _run(
        kc,
        "for c in nbchat.stream('Write a long story.', max_tokens=60, temperature=0):\n"
        "    print(c, end='', flush=True)\n",
        on_output=poke,
    )
    assert sent and status["status"] == "ok"
    errors = [m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream"
              and m["content"]["name"] == "stderr"]
    assert not any("cannot enter context" in e for e in errors), errors
    deadline = time.monotonic() + 30
    while not any(r["parent_header"].get("msg_id") == sent[0] for r in OTHER_REPLIES):
        assert time.monotonic() < deadline, "the comm_info request was not answered"
        OTHER_REPLIES.append(kc.get_shell_msg(timeout=30))


def test_sync_calls_from_a_thread_pool_in_a_kernel(kernel, fault_server):
    _, kc = kernel
    fault_server.script(sse_head(), text_chunk("a"), 0.2, text_chunk("b", finish="stop"), DONE)
    _, status = _run(kc, (
        "import nbchat\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        f"BASE = {fault_server.base!r}\n"
        "def one(i):\n"
        "    return nbchat.chat(f'q{i}', model='openai:m', base_url=BASE).text\n"
        "with ThreadPoolExecutor(4) as pool:\n"
        "    texts = list(pool.map(one, range(8)))\n"
        "assert texts == ['ab'] * 8, texts\n"
    ), timeout=60)
    assert status["status"] == "ok", status


def test_a_wait_shows_its_status_and_an_interrupt_ends_it_at_once(kernel, fault_server):
    km, kc = kernel
    fault_server.script(STALL)  # takes the request, never answers
    _run(kc, "%load_ext nbchat")
    interrupted_at: list[float] = []

    def interrupt_on_status(msg):
        html = msg["content"].get("data", {}).get("text/html", "")
        if not interrupted_at and "waiting for openai" in html:
            interrupted_at.append(time.monotonic())
            km.interrupt_kernel()

    outputs, status = _run(
        kc, f"%%chat -m openai:m --base-url {fault_server.base}\nHi",
        on_output=interrupt_on_status, timeout=30)
    assert interrupted_at, "no status line appeared while the server kept silent"
    assert time.monotonic() - interrupted_at[0] < 3
    assert status["status"] == "error", status
    # the status line was emptied, so no stale "waiting" stays in the saved notebook
    [shown] = [m for m in outputs if m["msg_type"] == "display_data"
               and "nbchat-status" in m["content"]["data"].get("text/html", "")]
    did = shown["content"]["transient"]["display_id"]
    updates = [m["content"]["data"] for m in outputs if m["msg_type"] == "update_display_data"
               and m["content"]["transient"]["display_id"] == did]
    assert updates[-1] == {"text/plain": ""}
