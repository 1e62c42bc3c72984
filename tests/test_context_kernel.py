"""The notebook as context, in a real ipykernel: `--context` with variables, the last error
(a real failing cell's traceback) and cells, `--dry-run` with the local model's own token
count, `%chat_error` and `--code` against a loopback server of the test's own."""

from __future__ import annotations

import json
import queue
import time

import pytest
from faultserver import DONE, sse_head, text_chunk

jupyter_client = pytest.importorskip("jupyter_client")


def run(kc, code: str, timeout: float = 120) -> tuple[str, dict]:
    """Execute `code`: (everything it showed as text, the execute reply's content)."""
    msg_id = kc.execute(code)
    shown: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no idle after {timeout} s for {code!r}") from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        content = msg["content"]
        if msg["msg_type"] == "stream":
            shown.append(content["text"])
        elif msg["msg_type"] in ("display_data", "execute_result", "update_display_data"):
            shown.append(content["data"].get("text/plain", ""))
        elif msg["msg_type"] == "error":
            shown.append("\n".join(content["traceback"]))
        if msg["msg_type"] == "status" and content["execution_state"] == "idle":
            break
    while True:
        reply = kc.get_shell_msg(timeout=30)
        if reply["parent_header"].get("msg_id") == msg_id:
            return "".join(shown), reply["content"]


@pytest.fixture(scope="module")
def kc():
    km = jupyter_client.KernelManager(kernel_name="python3")
    km.start_kernel()
    client = km.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    try:
        yield client
    finally:
        client.stop_channels()
        km.shutdown_kernel(now=True)


def test_an_error_raised_before_the_extension_loaded_is_found(kc):
    _, reply = run(kc, "def ratio(a, b):\n    return a / b\n\nratio(1, 0)")
    assert reply["status"] == "error"
    failing = reply["execution_count"]
    run(kc, "%load_ext nbchat")
    shown, reply = run(kc, "%%chat --dry-run --context error -m local\nWhy?")
    assert reply["status"] == "ok", shown
    assert "ZeroDivisionError: division by zero" in shown
    assert f"In[{failing}], line 2, in ratio" in shown and "return a / b" in shown
    assert f"The cell that raised it (In[{failing}]):" in shown and "ratio(1, 0)" in shown


def test_dry_run_shows_context_and_the_local_models_count_and_sends_nothing(kc):
    run(kc, "import numpy as np, pandas as pd, polars as pl\n"
            "df = pd.DataFrame({'city': ['Oslo', 'Lima', 'Pune'], 'temp': [3.5, 19.0, 31.2]})\n"
            "pf = pl.DataFrame({'k': list(range(40))})\n"
            "arr = np.arange(2000.0).reshape(1000, 2)\n"
            "unnamed = 'SHOULD_NOT_BE_SENT'")
    _, reply = run(kc, "values = {'a': 1}\nvalues['b']")
    assert reply["status"] == "error"
    failing = reply["execution_count"]
    shown, reply = run(kc, "%%chat --dry-run --context df,pf,arr,error,cell:-1 -m local\n"
                           "What went wrong?")
    assert reply["status"] == "ok", shown
    assert "dry run: nothing was sent to llamacpp:smollm2" in shown
    assert "own tokenizer" in shown and "~" not in shown.split("prompt:")[1].split("\n")[0]
    assert "### df: pandas DataFrame" in shown and "Oslo" in shown and "describe():" in shown
    assert "### pf: polars DataFrame" in shown and "k: Int64" in shown
    assert "shape: (1000, 2), dtype: float64" in shown and "mean: 999.5" in shown
    assert "KeyError: 'b'" in shown and f"In[{failing}]" in shown
    assert f"### cell:-1: source of cell In[{failing}]" in shown
    assert "SHOULD_NOT_BE_SENT" not in shown
    assert shown.rstrip().endswith("What went wrong?")
    # the count shown is the one nbchat.count gives for the same request
    tokens = int(shown.split("prompt: ")[1].split(" ")[0])
    counted, _ = run(kc, "import nbchat\nprint(int(nbchat.count('What went wrong?', "
                         "model='local', context=['df', 'pf', 'arr', 'error', 'In["
                         f"{failing}]'])))")
    assert abs(int(counted) - tokens) <= 3  # the same request but for one heading's name
    logged, _ = run(kc, "print(len(nbchat.log()))")
    assert logged.strip() == "0"  # nothing was sent, so nothing logged


def test_cell_numbers_and_bad_names_say_what_to_do(kc):
    _, first = run(kc, "x_marker = 41 + 1")
    n = first["execution_count"]
    shown, _ = run(kc, f"%%chat --dry-run --context In[{n}] -m local\nq")
    assert "x_marker = 41 + 1" in shown
    shown, reply = run(kc, "%%chat --dry-run --context nosuchvar -m local\nq")
    assert reply["status"] == "error" and "no variable 'nosuchvar'" in shown
    shown, reply = run(kc, "%%chat --dry-run --context cell:9999 -m local\nq")
    assert reply["status"] == "error" and "no such cell" in shown


def test_chat_error_explains_and_code_puts_the_fix_in_a_new_cell(kc, fault_server):
    fault_server.only(sse_head(), text_chunk("It divides by zero.\n\n```python\n"),
                      text_chunk("ratio(1, 1)\n```\n", finish="stop"), DONE)
    _, reply = run(kc, "ratio(2, 0)")
    failing = reply["execution_count"]
    shown, reply = run(kc, f"%chat_error -m openai:m --base-url {fault_server.base} --code")
    assert reply["status"] == "ok", shown
    body = fault_server.requests[-1].json()
    sent = body["messages"][-1]["content"]
    sent = sent if isinstance(sent, str) else json.dumps(sent)
    assert "ZeroDivisionError" in sent and f"In[{failing}]" in sent and "ratio(2, 0)" in sent
    assert "explain" in sent.lower()
    assert "Oslo" not in sent and "SHOULD_NOT_BE_SENT" not in sent  # only the error was named
    payloads = reply.get("payload", [])
    nxt = [p for p in payloads if p.get("source") == "set_next_input"]
    assert nxt and nxt[0]["text"] == "ratio(1, 1)" and nxt[0]["replace"] is False


def test_code_without_a_code_block_says_so(kc, fault_server):
    fault_server.only(sse_head(), text_chunk("No code here.", finish="stop"), DONE)
    shown, reply = run(kc, f"%%chat -m openai:m --base-url {fault_server.base} --code\nhi")
    assert "no code block" in shown
    assert not [p for p in reply.get("payload", []) if p.get("source") == "set_next_input"]


def test_map_in_a_notebook_shows_the_widget_progress_bar(kc, fault_server):
    fault_server.only(sse_head(), text_chunk("yes", finish="stop"), DONE)
    msg_id = kc.execute(f"out = nbchat.map('{{text}}', ['a', 'b', 'c'], model='openai:m', "
                        f"base_url='{fault_server.base}')")
    kinds: list[str] = []
    while True:
        msg = kc.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "display_data":
            kinds += list(msg["content"]["data"])
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    assert "application/vnd.jupyter.widget-view+json" in kinds  # tqdm's notebook bar
    shown, _ = run(kc, "print([r.text for r in out], out.errors)")
    assert shown.strip() == "['yes', 'yes', 'yes'] {}"


def test_dry_run_follows_the_thread_and_leaves_it_unchanged(kc, fault_server):
    fault_server.only(sse_head(), text_chunk("first answer", finish="stop"), DONE)
    _, reply = run(kc, f"%%chat -m openai:m --base-url {fault_server.base} --thread dr -t 0.5\n"
                       "first question")
    assert reply["status"] == "ok"
    sent_before = len(fault_server.requests)
    shown, reply = run(kc, "%%chat --dry-run --thread dr --context df\nsecond question")
    assert reply["status"] == "ok", shown
    assert "nothing was sent to openai:m" in shown and "prompt: ~" in shown  # an estimate
    assert shown.index("first question") < shown.index("first answer") < shown.index(
        "### df: pandas DataFrame") < shown.index("second question")
    assert len(fault_server.requests) == sent_before
    kept, _ = run(kc, "m = get_ipython().find_cell_magic('chat').__self__\n"
                      "t = m.threads['dr']\nprint(len(t.history), t.settings.options.temperature)")
    assert kept.split() == ["2", "0.5"]
