"""`%%chat` threads: what a thread keeps between cells, and a re-run cell replacing its turn.

Through a real IPython shell (cell ids as `InteractiveShell.run_cell(..., cell_id=...)` gives
them), real kernels (jupyter_client sending the `cellId` JupyterLab and Notebook 7 send;
nbclient, which sends none), a real llama_cpp.server and a recording loopback server.
"""

from __future__ import annotations

import queue
import textwrap
import time
import warnings

import pytest
from fakes import FakeProvider
from faultserver import CLOSE, DONE, FaultServer, sse_head, text_chunk
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import nbchat
from nbchat.core import registry
from nbchat.core.errors import ProviderError
from nbchat.notebook.magics import ChatMagics


class Shell:
    """A real InteractiveShell with our magics; each cell is run as a front end runs it (kept
    in the history, so each run is a new execution), with an optional cell id."""

    def __init__(self) -> None:
        self.ip = InteractiveShell.instance()
        self.magics = ChatMagics(shell=self.ip)
        self.ip.register_magics(self.magics)

    def close(self) -> None:
        if self.magics in self.ip.configurables:
            self.ip.configurables.remove(self.magics)
        self.ip.config.pop("ChatMagics", None)

    def run(self, cell: str, cell_id: str | None = None):
        return self.ip.run_cell(cell, store_history=True, cell_id=cell_id)

    def ok(self, cell: str, cell_id: str | None = None):
        result = self.run(cell, cell_id)
        assert result.error_in_exec is None, result.error_in_exec
        return result

    def error(self, cell: str, cell_id: str | None = None) -> str:
        result = self.run(cell, cell_id)
        assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
        return str(result.error_in_exec)

    def thread(self, name: str = "default"):
        return self.magics.threads[name]


@pytest.fixture
def sh():
    shell = Shell()
    yield shell
    shell.close()


@pytest.fixture
def recorder():
    """A loopback OpenAI-compatible server that answers "from B" and records what it gets."""
    server = FaultServer()
    server.script(sse_head(), text_chunk("from B"), text_chunk(finish="stop"), DONE)
    yield server
    server.close()


def _texts(conv) -> list[tuple[str, str]]:
    return [(m.role, m.text) for m in conv.history]


# ---- 1. a thread keeps its model, endpoint and options -----------------------------------------


def test_thread_keeps_its_endpoint_across_cells(sh, llama_server, recorder):
    """The provider's configured endpoint is B; the thread was started on A with --base-url:
    its later turns go to A, with the whole history, and B sees no request."""
    sh.ok(f"%config ChatMagics.base_urls = {{'openai': {recorder.base!r}}}")
    sh.ok(f"%%chat --thread t --base-url {llama_server} -m openai:smollm2 -t 0 --seed 3 "
          "--max-tokens 4 -s 'Answer in one word.'\nName a colour.")
    first = nbchat.last
    sh.ok("%%chat --thread t\nAnother one.")
    second = nbchat.last
    assert recorder.requests == []
    assert second.error is None and second.text
    assert second.model == "openai:smollm2"
    assert second.endpoint == first.endpoint == llama_server
    # the options of the first cell, on the second request
    assert (second.options.temperature, second.options.seed, second.options.max_tokens) == (
        0.0, 3, 4)
    assert sh.thread("t").system == "Answer in one word."
    assert [r for r, _ in _texts(sh.thread("t"))] == ["user", "assistant"] * 2
    # the footer says where the reply came from: the model and the endpoint's host
    port = llama_server.split(":")[2].split("/")[0]
    assert second.footer().startswith(f"openai:smollm2 at 127.0.0.1:{port} · ")
    # a thread without --base-url uses the configured endpoint B (and says so)
    sh.ok("%%chat --thread other -m openai:smollm2\nHi")
    assert len(recorder.requests) == 1 and nbchat.last.text == "from B"
    assert f"at 127.0.0.1:{recorder.port}" in nbchat.last.footer()


def test_thread_sends_its_options_and_system_prompt_on_every_turn(sh, recorder):
    sh.ok(f"%%chat -m openai:m --base-url {recorder.base} -t 0.2 --top-p 0.9 --max-tokens 7 "
          "--seed 5 --stop END --logprobs 2 --input width=512 -s 'Be brief.' --json\none")
    sh.ok("%%chat\ntwo")
    sh.ok("%%chat -t 1.1 --input style=\"oil\"\nthree")
    first, second, third = (r.json() for r in recorder.requests)
    for body in (first, second, third):
        assert body["messages"][0] == {"role": "system", "content": "Be brief."}
        assert (body["top_p"], body["max_tokens"], body["seed"], body["stop"]) == (
            0.9, 7, 5, ["END"])
        assert body["logprobs"] is True and body["top_logprobs"] == 2
        assert body["width"] == 512
    assert first["temperature"] == second["temperature"] == 0.2
    assert third["temperature"] == 1.1 and third["style"] == "oil"  # a later cell changes them
    # --json is this cell's answer format, not the thread's
    assert "response_format" in first and "response_format" not in second
    assert [m["content"] for m in third["messages"][1:] if m["role"] == "user"] == [
        "one", "two", "three"]


def test_thread_options_over_config_defaults(sh, fake):
    sh.ok("%config ChatMagics.temperature = 0.3")
    sh.ok("%config ChatMagics.max_tokens = 12")
    sh.ok("%%chat -m fake:echo -t 1.0\none")
    sh.ok("%%chat\ntwo")  # the thread's own temperature, the configured max_tokens
    assert (fake.requests[-1].options.temperature, fake.requests[-1].options.max_tokens) == (
        1.0, 12)
    sh.ok("%config ChatMagics.max_tokens = 20")  # a default the thread never set follows %config
    sh.ok("%%chat\nthree")
    assert fake.requests[-1].options.max_tokens == 20
    sh.ok("%%chat --thread fresh -m fake:echo\nhi")  # a new thread starts from the defaults
    assert fake.requests[-1].options.temperature == 0.3


def test_thread_endpoint_follows_its_provider(sh, fake):
    other = FakeProvider("fake2")
    registry.register(other)
    try:
        sh.ok("%%chat -m fake:echo --base-url http://h1.example:8000/v1\none")
        sh.ok("%%chat\ntwo")
        assert fake.endpoints[-1].base_url == "http://h1.example:8000/v1"
        assert "fake:echo at h1.example:8000" in nbchat.last.footer()
        sh.ok("%%chat -m fake:other\nthree")  # the same provider: the endpoint stays
        assert fake.endpoints[-1].base_url == "http://h1.example:8000/v1"
        sh.ok("%%chat -m fake2:echo\nfour")  # another provider: the old endpoint is not its own
        assert other.endpoints[-1].base_url is None
        assert nbchat.last.footer().startswith("fake2:echo ·")
        sh.ok("%%chat -m fake:echo\nfive")
        assert fake.endpoints[-1].base_url is None
        sh.ok("%%chat --base-url http://h2.example/v1 -t 0.5\nsix")
        sh.ok("%%chat --new\nfresh")  # afresh: no history or options; model and endpoint stay
        assert fake.endpoints[-1].base_url == "http://h2.example/v1"
        assert fake.requests[-1].options.temperature is None
        assert len(fake.requests[-1].messages) == 1
    finally:
        registry.unregister("fake2")


def test_a_cell_that_fails_before_sending_changes_no_thread_option(sh, fake):
    sh.ok("%%chat -m fake:echo -t 0.4\none")
    msg = sh.error("%%chat -t 1.5 --tool-choice nope\ntwo")
    assert "tool_choice" in msg
    sh.ok("%%chat\nthree")
    assert fake.requests[-1].options.temperature == 0.4


def _dead_base() -> str:
    """A loopback base URL where nothing listens (the connection is refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_a_cell_that_fails_before_a_reply_leaves_the_thread_and_last_as_they_were(
        sh, recorder, monkeypatch):
    """A missing key on a switch of provider: the thread keeps its model, endpoint, options
    and history, and nbchat.last its good reply (the tester's cells, in order)."""
    monkeypatch.delenv("CEREBRAS_API_KEY", raising=False)
    sh.ok(f"%%chat --thread t --base-url {recorder.base} -m openai:x -t 0.3\nq1")
    good = nbchat.last
    assert good.text == "from B"
    msg = sh.error("%%chat --thread t -m cerebras:llama3.1-8b\nq2")
    assert "CEREBRAS_API_KEY" in msg
    assert nbchat.last is good  # not an empty Reply of the failed cell
    conv = sh.thread("t")
    assert conv.model == "openai:x" and conv.settings.base_url == recorder.base
    sh.ok("%%chat --thread t\nafter")  # not stuck on cerebras
    assert len(recorder.requests) == 2 and nbchat.last.model == "openai:x"
    assert recorder.requests[-1].json()["temperature"] == 0.3
    sh.ok("%%chat --thread t -m openai:x\nback")  # the same endpoint, not api.openai.com
    assert len(recorder.requests) == 3
    assert [t for _, t in _texts(sh.thread("t"))] == [
        "q1", "from B", "after", "from B", "back", "from B"]


def test_every_failure_before_a_reply_leaves_the_thread_as_it_was(sh, recorder, monkeypatch):
    """A refused connection with new options, a bad option after a switch of model, a failed
    --new and a failed first cell of a thread: none of them changes a thread."""
    monkeypatch.delenv("CEREBRAS_API_KEY", raising=False)
    sh.ok(f"%%chat --thread t --base-url {recorder.base} -m openai:x -t 0.3 -s 'Be brief.'\nq1")
    good = nbchat.last
    sh.error(f"%%chat --thread t --base-url {_dead_base()} -t 0.9 --max-tokens 3 "
             "--timeout 5\nrefused")
    sh.error("%%chat --thread t -m cerebras:llama3.1-8b --tool-choice nope\nbad option")
    sh.error("%%chat --thread t --new -m cerebras:llama3.1-8b -s 'Other.'\nfresh")
    assert nbchat.last is good
    conv = sh.thread("t")
    assert (conv.model, conv.settings.base_url, conv.system) == (
        "openai:x", recorder.base, "Be brief.")
    assert len(conv.history) == 2
    sh.ok("%%chat --thread t\nq2")
    body = recorder.requests[-1].json()
    assert body["temperature"] == 0.3 and "max_tokens" not in body
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert [m["content"] for m in body["messages"][1:]] == ["q1", "from B", "q2"]
    # a thread whose first cell failed was never started: a later cell starts it afresh
    sh.error("%%chat --thread n -m cerebras:llama3.1-8b -t 1.5\nfirst")
    assert "n" not in sh.magics.threads
    sh.ok(f"%%chat --thread n -m openai:x --base-url {recorder.base}\nfirst")
    assert "temperature" not in recorder.requests[-1].json()


def test_a_failure_after_partial_text_is_kept_in_last(sh, recorder):
    sh.ok(f"%%chat --thread t --base-url {recorder.base} -m openai:x\nq1")
    recorder.only(sse_head(), text_chunk("half an ans"), CLOSE)
    sh.error("%%chat --thread t\nq2")
    partial = nbchat.last
    assert partial.text == "half an ans" and partial.error is not None


def test_dry_run_shows_the_endpoint(recorder):
    from test_magics import Shell as Recording

    shell = Recording()
    try:
        shell.ok(f"%%chat --thread dr --base-url {recorder.base} -m openai:x\nq1")
        shell.ok("%%chat --thread dr --dry-run\nq2")
        shown = "".join(m["data"].get("text/plain", "") for m in shell.messages)
        assert f"endpoint: {recorder.base}" in shown
        shell.ok("%%chat --thread dr2 --dry-run -m local\nq")
        shown = "".join(m["data"].get("text/plain", "") for m in shell.messages)
        assert "endpoint: in this process" in shown
        assert len(recorder.requests) == 1
    finally:
        shell.close()


# ---- 2. re-running a cell replaces its turn -----------------------------------------------------


def test_rerunning_a_cell_replaces_its_turn(sh, fake):
    for _ in range(3):
        sh.ok("%%chat -m fake:echo\nWhat is 2+2?", cell_id="cell-a")
    assert _texts(sh.thread()) == [("user", "What is 2+2?"), ("assistant", "What is 2+2?")]
    # each run was sent without the earlier runs of itself
    assert [len(r.messages) for r in fake.requests] == [1, 1, 1]
    assert "replaced its earlier run" in nbchat.last.footer()
    # editing the cell and running it again is how a question is revised
    sh.ok("%%chat\nWhat is 3+3?", cell_id="cell-a")
    assert _texts(sh.thread()) == [("user", "What is 3+3?"), ("assistant", "What is 3+3?")]


def test_rerunning_an_earlier_cell_drops_the_later_turns(sh, fake):
    sh.ok("%%chat -m fake:echo\nfirst", cell_id="c1")
    sh.ok("%%chat\nsecond", cell_id="c2")
    sh.ok("%%chat\nthird", cell_id="c3")
    sh.ok("%%chat\nsecond, revised", cell_id="c2")
    assert [m.text for m in fake.requests[-1].messages] == ["first", "first", "second, revised"]
    assert [t for _, t in _texts(sh.thread())] == ["first", "first", "second, revised",
                                                   "second, revised"]
    assert "dropped the 1 later turn" in nbchat.last.footer()
    sh.ok("%%chat\nthird", cell_id="c3")  # running the later cell again brings it back
    assert [t for r, t in _texts(sh.thread()) if r == "user"] == [
        "first", "second, revised", "third"]
    # threads are apart: the same cell on another thread is another turn
    sh.ok("%%chat --thread side -m fake:echo\nfirst", cell_id="c1")
    assert len(sh.thread().history) == 6 and len(sh.thread("side").history) == 2


def test_without_a_cell_id_the_source_identifies_the_cell(sh, fake):
    for _ in range(3):
        sh.ok("%%chat -m fake:echo\nSame question")
    assert len(sh.thread().history) == 2
    sh.ok("%%chat\nAnother question")  # another source: another turn
    assert len(sh.thread().history) == 4


def test_several_chats_in_one_run_of_a_cell_are_several_turns(sh, fake):
    code = textwrap.dedent("""
        for q in ["one", "two", "three"]:
            get_ipython().run_cell_magic("chat", "-m fake:echo", q)
    """)
    sh.ok(code, cell_id="loop")
    assert [t for r, t in _texts(sh.thread()) if r == "user"] == ["one", "two", "three"]
    sh.ok(code, cell_id="loop")  # and running it again replaces all three
    assert [t for r, t in _texts(sh.thread()) if r == "user"] == ["one", "two", "three"]


def test_a_rerun_that_fails_keeps_the_earlier_turn(sh, fake):
    sh.ok("%%chat -m fake:echo\nkeep me", cell_id="c1")
    fake.enqueue(error=ProviderError("down", status=503, provider="fake"))
    sh.error("%%chat -m fake:echo\nkeep me", cell_id="c1")
    assert _texts(sh.thread()) == [("user", "keep me"), ("assistant", "keep me")]


# ---- 2. in real kernels -----------------------------------------------------------------------


def _execute(kc, code: str, cell_id: str | None = None, timeout: float = 120) -> list[dict]:
    """Run `code` as a front end does: with the cell's id in the request's metadata (what
    JupyterLab and Notebook 7 send) when given. Returns the iopub outputs; raises on error."""
    content = {"code": code, "silent": False, "store_history": True, "user_expressions": {},
               "allow_stdin": False, "stop_on_error": True}
    msg = kc.session.msg("execute_request", content,
                         metadata={"cellId": cell_id} if cell_id else {})
    kc.shell_channel.send(msg)
    msg_id = msg["header"]["msg_id"]
    outputs: list[dict] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no idle after {timeout} s for {code!r}") from None
        if got["parent_header"].get("msg_id") != msg_id:
            continue
        if got["msg_type"] == "error":
            raise AssertionError("\n".join(got["content"]["traceback"]))
        if got["msg_type"] in ("stream", "display_data", "execute_result"):
            outputs.append(got)
        if got["msg_type"] == "status" and got["content"]["execution_state"] == "idle":
            return outputs


def _printed(outputs: list[dict]) -> str:
    return "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")


HISTORY = ("m = get_ipython().magics_manager.registry['ChatMagics']\n"
           "print([(x.role, x.text) for x in m.threads['default'].history])")


def test_kernel_rerun_with_cell_id_replaces_the_turn(llama_server):
    jupyter_client = pytest.importorskip("jupyter_client")
    km = jupyter_client.KernelManager(kernel_name="python3")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        _execute(kc, "%load_ext nbchat")
        chat = (f"%%chat -m openai:smollm2 --base-url {llama_server} -t 0 --max-tokens 3\n"
                "Say hi.")
        for _ in range(3):
            _execute(kc, chat, cell_id="0b6d2c1e-cell")
        history = eval(_printed(_execute(kc, HISTORY)))
        assert [r for r, _ in history] == ["user", "assistant"]
        assert history[0][1] == "Say hi."
        _execute(kc, chat.replace("Say hi.", "Say bye."), cell_id="another-cell")
        _execute(kc, chat.replace("Say hi.", "Say hello."), cell_id="0b6d2c1e-cell")
        history = eval(_printed(_execute(kc, HISTORY)))
        assert [t for r, t in history if r == "user"] == ["Say hello."]  # the later turn went
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_nbclient_rerun_without_cell_id_replaces_the_turn_by_source(llama_server):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("%load_ext nbchat\nfrom nbchat.notebook import context"),
        nbformat.v4.new_code_cell(f"%%chat -m openai:smollm2 --base-url {llama_server} -t 0 "
                                  "--max-tokens 3\nSay hi."),
        nbformat.v4.new_code_cell("print(context.where()[1])\n" + HISTORY),
    ])
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3")
    with client.setup_kernel():
        client.execute_cell(nb.cells[0], 0)
        for _ in range(3):
            client.execute_cell(nb.cells[1], 1)
        client.execute_cell(nb.cells[2], 2)
    printed = "".join(o.get("text", "") for o in nb.cells[2].outputs).splitlines()
    assert printed[0] == "None"  # nbclient sent no cell id: the source identified the cell
    assert [r for r, _ in eval(printed[1])] == ["user", "assistant"]


# ---- 5. magic gaps -----------------------------------------------------------------------------


def test_empty_model_is_a_clear_error(sh, fake):
    for flag in ('-m ""', "-m ''", '-m " "'):
        msg = sh.error(f"%%chat {flag}\nHi")
        assert msg.startswith('-m "": give a model id') and "%models" in msg
    assert fake.requests == []


def test_input_flags_become_model_inputs(sh, fake):
    sh.ok('%%chat -m fake:echo --input width=512 --input go_fast=true --input "prompt=a red fox"'
          ' --input \'sizes=[1, 2]\' --input seed_text=007x\nGo')
    assert fake.requests[-1].options.extra == {
        "width": 512, "go_fast": True, "prompt": "a red fox", "sizes": [1, 2],
        "seed_text": "007x"}
    for bad in ("width", "=3"):
        assert "KEY=VALUE" in sh.error(f"%%chat --input {bad}\nGo")


def test_input_flags_reach_a_real_cog_model_and_stay_with_the_thread(sh):
    from cogserver import CogServer

    with CogServer("image") as server:
        sh.ok(f"%%chat --thread draw -m cog:draw --base-url {server.url} --input width=40 "
              "--input height=24\na red circle")
        assert nbchat.last.images[0].size == (40, 24)
        sh.ok("%%chat --thread draw --input width=32\na blue square")  # height is kept
        assert nbchat.last.images[0].size == (32, 24)


def test_footer_host_never_shows_a_key(sh, fake):
    sh.ok("%%chat -m fake:echo --base-url http://user:sk-NOTSHOWN1@h1.example:8000/v1?key=q\nHi")
    footer = nbchat.last.footer()
    assert "at h1.example:8000 ·" in footer
    assert "sk-NOTSHOWN1" not in footer and "user" not in footer and "key=q" not in footer


def test_unknown_cloud_model_warns_with_close_matches_and_is_sent(sh, recorder):
    # the provider's hosted endpoint, served here by the loopback recorder
    from nbchat.providers.cerebras import CerebrasProvider

    class Hosted(CerebrasProvider):
        default_base_url = recorder.base

    registry.register(Hosted())
    try:
        sh.ok("%config ChatMagics.api_keys = {'cerebras': 'k-test'}")
        with pytest.warns(UserWarning, match=r"cerebras:llama3\.1-7b .*did you mean "
                                              r".*cerebras:llama3\.1-8b"):
            sh.ok("%%chat -m cerebras:llama3.1-7b\nHi")
        assert recorder.requests[-1].json()["model"] == "llama3.1-7b"  # sent as written
        with warnings.catch_warnings():  # a known id, or a self-hosted endpoint: no warning
            warnings.simplefilter("error", UserWarning)
            sh.ok("%%chat -m cerebras:llama3.1-8b\nHi")
            sh.ok(f"%%chat --thread own -m cerebras:llama3.1-7b --base-url "
                  f"http://127.0.0.1:{recorder.port}/x/v1\nHi")
    finally:
        registry.unregister("cerebras")
        sh.ok("%config ChatMagics.api_keys = {}")

