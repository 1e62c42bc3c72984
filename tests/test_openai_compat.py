"""The OpenAI-compatible engine: pure body building and chunk parsing with recorded wire data,
then the streaming I/O through `httpx.MockTransport` and, for what a mock cannot show
(dropped connection, stall), a tiny loopback server."""

from __future__ import annotations

import asyncio
import io
import json
import pathlib
import socket
import threading
from dataclasses import replace

import httpx
import pytest
from fakes import recorded_openai_style

import nbchat
from nbchat.core import http, registry
from nbchat.core.errors import (
    AuthenticationError,
    ConnectionFailed,
    ProtocolError,
    ProviderError,
    RateLimited,
    SchemaMismatch,
)
from nbchat.core.options import parse_settings
from nbchat.core.sse import iter_sse
from nbchat.core.types import (
    Done,
    ImagePart,
    Message,
    Request,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallEvent,
)
from nbchat.providers.openai import OpenAIProvider
from nbchat.providers.protocols.openai_wire import (
    Caps,
    StreamState,
    ToolCallAssembler,
    build_body,
    parse_completion,
)

WIRE = pathlib.Path(__file__).parent / "wire"
BASE = "https://models.test/v1"  # https: a key sent here gets no plain-http warning
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


def wire(name: str) -> bytes:
    return (WIRE / name).read_bytes()


def parse_wire(data: bytes) -> list:
    """Run recorded SSE bytes through the pure parser, as the engine does."""
    state = StreamState("test")
    events: list = []
    for _, rec in iter_sse([data]):
        if rec == "[DONE]":
            break
        events += state.feed(json.loads(rec))
    return events + state.done_events()


def request(**options) -> Request:
    settings = parse_settings(options)
    return Request("m", (Message.of("user", "hi"),), settings.options)


# ---- build_body --------------------------------------------------------------------------


def test_body_basic_fields():
    body = build_body(request(temperature=0.2, top_p=0.9, max_tokens=50, stop=["\n", "END"],
                              seed=7))
    assert body == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 50,
        "stop": ["\n", "END"],
        "seed": 7,
    }
    caps = Caps(include_usage=False, max_tokens_field="max_completion_tokens",
                default_max_tokens=1024)
    body = build_body(request(), caps)
    assert "stream_options" not in body and body["max_completion_tokens"] == 1024


def test_body_json_mode_and_schema_styles():
    assert build_body(request(json=True))["response_format"] == {"type": "json_object"}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = build_body(request(schema=schema), Caps(strict_schema=True))
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema, "strict": True},
    }
    body = build_body(request(schema=schema), Caps(schema_style="json_object"))
    assert body["response_format"] == {"type": "json_object", "schema": schema}
    body = build_body(request(schema=schema), Caps(schema_style="guided_json"))
    assert body["guided_json"] == schema and "response_format" not in body


def test_body_schema_from_dataclass_is_named():
    from dataclasses import dataclass

    @dataclass
    class Person:
        name: str
        age: int

    spec = build_body(request(schema=Person))["response_format"]["json_schema"]
    assert spec["name"] == "Person"
    assert spec["schema"]["required"] == ["name", "age"]


def test_body_tools_and_tool_choice():
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    body = build_body(request(tools=[add], tool_choice="add"))
    assert body["tools"][0]["function"]["name"] == "add"
    assert body["tools"][0]["function"]["parameters"]["properties"]["a"] == {"type": "integer"}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "add"}}
    for choice in ("auto", "required", "none"):
        assert build_body(request(tools=[add], tool_choice=choice))["tool_choice"] == choice
    assert "tool_choice" not in build_body(request(tools=[add]))


def test_body_logprobs_and_extra():
    body = build_body(request(logprobs=3, input={"frequency_penalty": 0.5}))
    assert body["logprobs"] is True and body["top_logprobs"] == 3
    assert body["frequency_penalty"] == 0.5
    assert "top_logprobs" not in build_body(request(logprobs=True))


def test_body_image_parts_and_history_with_tool_calls():
    img = ImagePart(PNG, "image/png")
    msgs = (
        Message("system", (TextPart("be brief"),)),
        Message("user", (TextPart("what is this?"), img)),
        Message("assistant", (), (ToolCall("look", {"x": 1}, "call_1"),)),
        Message("tool", (TextPart("a cat"),), tool_call_id="call_1"),
    )
    body = build_body(Request("m", msgs))
    user = body["messages"][1]
    assert user["content"][0] == {"type": "text", "text": "what is this?"}
    assert user["content"][1]["image_url"]["url"].startswith("data:image/png;base64,iVBOR")
    assert body["messages"][2] == {
        "role": "assistant", "content": "",
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "look", "arguments": '{"x": 1}'}}],
    }
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "call_1", "content": "a cat"}
    nv = build_body(Request("m", msgs), Caps(image_url_string=True))
    assert nv["messages"][1]["content"][1]["image_url"].startswith("data:image/png;base64,")


def test_too_many_stop_strings():
    with pytest.raises(nbchat.errors.BadOption, match="at most 4"):
        build_body(request(stop=list("abcde")), Caps(max_stop=4))


# ---- parsing recorded streams ------------------------------------------------------------


def test_parse_text_and_usage_chunk():
    events = parse_wire(wire("openai_text_usage.sse"))
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert texts == ["Hello", " world\n", "café ☕"]
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason == "stop"
    assert (done.usage.input_tokens, done.usage.output_tokens) == (9, 4)


def test_parse_fragmented_parallel_tool_calls():
    events = parse_wire(wire("openai_tool_fragments.sse"))
    calls = [e.tool_call for e in events if isinstance(e, ToolCallEvent)]
    assert calls == [ToolCall("get_weather", {"city": "Paris"}, "call_abc"),
                     ToolCall("get_time", {"tz": "CET"}, "call_def")]
    assert events[-1].finish_reason == "tool_calls" and events[-1].usage.output_tokens == 31


def test_parse_llamacpp_forced_tool_repeating_names():
    events = parse_wire(wire("llamacpp_forced_tool.sse"))
    [call] = [e.tool_call for e in events if isinstance(e, ToolCallEvent)]
    assert call.name == "get_weather" and call.arguments == {"city": "Paris"}
    assert events[-1].usage.input_tokens is None  # llama.cpp sends no usage in streams


def test_parse_llamacpp_logprobs():
    deltas = [e for e in parse_wire(wire("llamacpp_text_logprobs.sse"))
              if isinstance(e, TextDelta)]
    assert deltas and all(d.logprobs and "logprob" in d.logprobs[0] for d in deltas)


def test_assembler_unparseable_arguments_are_kept_raw():
    asm = ToolCallAssembler()
    asm.add([{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{oops"}}])
    assert asm.finish() == [ToolCall("f", {"_raw": "{oops"}, "c")]


def test_parse_whole_completion():
    obj = {"id": "x", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi there"},
         "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    events = parse_completion(obj)
    assert events[0] == TextDelta("Hi there")
    assert events[-1].usage.output_tokens == 2


# ---- streaming through MockTransport -----------------------------------------------------


class Server:
    """A MockTransport handler: answers queued responses, records request bodies."""

    def __init__(self) -> None:
        self.responses: list[httpx.Response] = []
        self.bodies: list[dict] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, req: httpx.Request) -> httpx.Response:
        self.requests.append(req)
        if req.content:
            self.bodies.append(json.loads(req.content))
        return self.responses.pop(0)

    def sse(self, data: bytes, status: int = 200, **headers: str) -> None:
        self.responses.append(httpx.Response(
            status, content=data, headers={"content-type": "text/event-stream", **headers}))


@pytest.fixture
def mock(monkeypatch, sleeps):
    server = Server()
    provider = OpenAIProvider(transport=httpx.MockTransport(server))
    registry.register(provider)
    monkeypatch.setenv("OPENAI_BASE_URL", BASE)
    server.sleeps = sleeps  # type: ignore[attr-defined]
    yield server
    registry.unregister("openai")


def test_stream_text_through_the_core(mock):
    mock.sse(wire("openai_text_usage.sse"))
    chunks = list(nbchat.stream("hi", model="openai:m", temperature=0))
    assert chunks == ["Hello", " world\n", "café ☕"]
    body = mock.bodies[0]
    assert body["stream"] is True and body["temperature"] == 0
    assert str(mock.requests[0].url) == f"{BASE}/chat/completions"
    assert "authorization" not in mock.requests[0].headers  # self-hosted: no key needed


def test_reply_collects_tool_calls_and_usage(mock):
    mock.sse(wire("openai_tool_fragments.sse"))
    reply = nbchat.chat("weather?", model="openai:m",
                        tools=[{"name": "get_weather", "parameters": {"type": "object"}}])
    assert [c.name for c in reply.tool_calls] == ["get_weather", "get_time"]
    assert reply.usage.input_tokens == 82 and reply.finish_reason == "tool_calls"


def test_midstream_error_keeps_partial_text(mock):
    mock.sse(wire("midstream_error.sse"))
    conv = nbchat.Conversation(model="openai:m")
    with pytest.raises(ProviderError) as err:
        conv.send("hi")
    assert "The server had an error" in str(err.value) and "mid-stream" in str(err.value)
    assert err.value.partial_text == "Partial answer"
    assert conv.replies[-1].text == "Partial answer" and conv.replies[-1].interrupted
    assert len(mock.requests) == 1  # text had reached the user: never retried


def test_event_error_record(mock):
    mock.sse(wire("event_error.sse"))
    with pytest.raises(ProviderError, match="Model overloaded"):
        nbchat.chat("hi", model="openai:m")


def test_malformed_record_is_a_protocol_error(mock):
    mock.sse(wire("malformed.sse"))
    conv = nbchat.Conversation(model="openai:m")
    with pytest.raises(ProtocolError, match="malformed stream record"):
        conv.send("hi")
    assert conv.replies[-1].text == "ok" and conv.replies[-1].interrupted


def test_html_page_instead_of_a_stream(mock):
    mock.responses.append(httpx.Response(
        200, text="<!DOCTYPE html><html><body>Welcome to nginx</body></html>",
        headers={"content-type": "text/html"}))
    with pytest.raises(ProtocolError, match="HTML page instead of JSON.*base URL"):
        nbchat.chat("hi", model="openai:m")


def test_429_retry_after_then_stream(mock):
    mock.responses.append(httpx.Response(
        429, json={"error": {"message": "Rate limit reached", "type": "requests"}},
        headers={"retry-after": "2"}))
    mock.sse(wire("openai_text_usage.sse"))
    reply = nbchat.chat("hi", model="openai:m")
    assert reply.text == "Hello world\ncafé ☕"
    assert mock.sleeps == [2.0] and len(mock.requests) == 2


def test_429_exhausted(mock):
    for _ in range(3):
        mock.responses.append(httpx.Response(
            429, json={"error": {"message": "Rate limit reached"}}, headers={"retry-after": "1"}))
    with pytest.raises(RateLimited, match="Rate limit reached; retry in 1 s"):
        nbchat.chat("hi", model="openai:m")


def test_server_ignoring_stream_gets_a_whole_reply(mock):
    mock.responses.append(httpx.Response(200, json={
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1}}))
    assert nbchat.chat("hi", model="openai:m").text == "whole"


def test_key_sent_but_never_shown(mock, monkeypatch):
    secret = "sk-proj-SECRETSECRETSECRET123"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    mock.responses.append(httpx.Response(
        401, json={"error": {"message": f"Incorrect API key provided: {secret}."}}))
    with pytest.raises(AuthenticationError) as err:
        nbchat.chat("hi", model="openai:m")
    assert mock.requests[0].headers["authorization"] == f"Bearer {secret}"
    assert secret not in str(err.value) and secret not in repr(err.value)
    assert "OPENAI_API_KEY" in str(err.value)
    assert secret not in repr(registry.get_provider("openai"))


def test_openai_com_needs_a_key(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(nbchat.errors.MissingKey, match="OPENAI_API_KEY"):
        nbchat.chat("hi", model="openai:gpt-4o-mini")


def test_schema_fallback_for_servers_without_json_schema(mock):
    mock.responses.append(httpx.Response(422, json={"detail": [
        {"loc": ["body", "response_format", "type"], "msg": "Input should be 'json_object'"}]}))
    mock.sse(wire("openai_text_usage.sse"))
    with pytest.raises(SchemaMismatch):  # the recorded reply is text, not JSON
        nbchat.chat("hi", model="openai:m", schema={"type": "object"}, schema_retries=0)
    assert mock.bodies[0]["response_format"]["type"] == "json_schema"
    assert mock.bodies[1]["response_format"] == {"type": "json_object",
                                                 "schema": {"type": "object"}}


def test_model_listing_merges_live_ids(mock):
    mock.responses.append(httpx.Response(200, json={"object": "list", "data": [
        {"id": "llama-3", "object": "model", "created": 0, "owned_by": "me"}]}))
    [info] = nbchat.models("openai")
    assert info.id == "openai:llama-3" and info.key_set


def test_batch_against_mock(mock):
    for _ in range(3):
        mock.sse(wire("openai_text_usage.sse"))
    replies = nbchat.batch(["a", "b", "c"], model="openai:m", concurrency=2)
    assert [r.text for r in replies] == ["Hello world\ncafé ☕"] * 3
    assert sorted(b["messages"][0]["content"] for b in mock.bodies) == ["a", "b", "c"]


# ---- a real loopback server for drops and stalls -------------------------------------------


class Misbehaving:
    """Answers POSTs with SSE headers and one record, then drops or stalls (per request)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.mode = "drop"
        self.release = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += conn.recv(65536)
            head, _, rest = buf.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            while len(rest) < length:
                rest += conn.recv(65536)
            record = wire("openai_text_usage.sse").split(b"\n\n")[2] + b"\n\n"
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"transfer-encoding: chunked\r\n\r\n"
                         + f"{len(record):x}\r\n".encode() + record + b"\r\n")
            if self.mode == "stall":
                self.release.wait(30)
            # drop: close without the terminating zero-length chunk

    def close(self) -> None:
        self.release.set()
        self.sock.close()


@pytest.fixture
def misbehaving(monkeypatch):
    server = Misbehaving()
    monkeypatch.setenv("OPENAI_BASE_URL", server.base)
    http.configure(idle_timeout=0.5)
    yield server
    server.close()


def test_dropped_connection_is_reported_and_kernel_stays_usable(misbehaving):
    conv = nbchat.Conversation(model="openai:m")
    with pytest.raises(ConnectionFailed, match="dropped before the reply finished") as err:
        conv.send("hi")
    assert "127.0.0.1" in str(err.value)
    assert conv.replies[-1].text == "Hello"
    misbehaving.mode = "drop"
    with pytest.raises(ConnectionFailed):  # the next call works (and fails the same way)
        conv.send("again")


def test_stall_is_an_idle_timeout(misbehaving):
    misbehaving.mode = "stall"

    async def go():
        conv = nbchat.Conversation(model="openai:m")
        got = []
        with pytest.raises(ConnectionFailed, match="nothing arrived for 0.5 s .idle timeout.") \
                as err:
            async for chunk in conv.astream("hi"):
                got.append(chunk)
        return got, err.value

    got, _ = asyncio.run(go())
    assert got == ["Hello"]  # the text before the stall reached the user and is kept


def test_request_is_immutable_for_fallback():
    r = request(schema={"type": "object"})
    assert replace(r, model="x").options.schema == {"type": "object"}


def test_key_with_a_trailing_newline_is_stripped(mock, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", " sk-fromafile123456\n")
    mock.sse(wire("openai_text_usage.sse"))
    nbchat.chat("hi", model="openai:m")
    assert mock.requests[0].headers["authorization"] == "Bearer sk-fromafile123456"


def test_key_that_cannot_be_a_header_is_refused_without_showing_it(misbehaving, monkeypatch):
    # over a real socket httpx refuses such a header and quotes it in its error message
    secret = "zz-SECRET-in-two\nlines"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    with pytest.raises(nbchat.errors.UsageError, match="OPENAI_API_KEY.*copy it again") as err:
        nbchat.chat("hi", model="openai:m")
    assert "SECRET" not in str(err.value) and err.value.__context__ is None


def test_unexpected_httpx_errors_become_short_errors_without_the_key(mock, monkeypatch):
    secret = "zz-SECRET-abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", secret)

    def broken(req: httpx.Request) -> httpx.Response:
        raise httpx.LocalProtocolError(f"Illegal header value {req.headers['authorization']}")

    registry.register(OpenAIProvider(transport=httpx.MockTransport(broken)))
    with pytest.raises(ConnectionFailed, match="models.test failed") as err:
        nbchat.chat("hi", model="openai:m")
    assert secret not in str(err.value) and err.value.__cause__ is None
    assert mock.sleeps == []  # not a retryable failure


def test_base_url_without_a_scheme_says_so():
    with pytest.raises(ConnectionFailed, match="not a valid http:// or https://"):
        nbchat.chat("hi", model="openai:m", base_url="localhost:8000/v1")


# ---- image inputs of every kind, for every provider on this engine ------------------------


@pytest.fixture(scope="module")
def image_url():
    """A real loopback server giving a JPEG: URLs are fetched by the core, not mocked."""
    import http.server

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buf, format="JPEG")
    jpeg = buf.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("content-type", "image/jpeg")
            self.send_header("content-length", str(len(jpeg)))
            self.end_headers()
            self.wfile.write(jpeg)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/cat.jpg", jpeg
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("model, string_form", [
    ("openai:m", False), ("cerebras:preview-vision", False), ("anyscale:m", False),
    ("nvidia:meta/llama-3.2-11b-vision-instruct", False),
    ("nvidia:microsoft/phi-3-vision-128k-instruct", True),
])
def test_images_from_path_url_bytes_and_pil(model, string_form, image_url, tmp_path,
                                            monkeypatch):
    import base64

    from PIL import Image

    url, jpeg = image_url
    path = tmp_path / "cat.png"
    Image.new("RGB", (3, 3), "blue").save(path)
    pil = Image.new("RGBA", (2, 2), (0, 255, 0, 128))
    with recorded_openai_style(model, monkeypatch, BASE,
                               wire("openai_text_usage.sse")) as bodies:
        nbchat.chat("what is this?", model=model, images=[str(path), url, PNG, pil])
    parts = bodies[0]["messages"][-1]["content"]
    assert parts[0] == {"type": "text", "text": "what is this?"}
    uris = [p["image_url"] if string_form else p["image_url"]["url"] for p in parts[1:]]
    assert [u.split(";")[0] for u in uris] == ["data:image/png", "data:image/jpeg",
                                               "data:image/png", "data:image/png"]
    raw = [base64.b64decode(u.split(",", 1)[1]) for u in uris]
    assert raw[0] == path.read_bytes() and raw[1] == jpeg and raw[2] == PNG
    assert Image.open(io.BytesIO(raw[3])).getpixel((0, 0)) == (0, 255, 0, 128)


def test_stream_cut_off_inside_a_record_is_a_clear_error(mock):
    mock.sse(b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\ndata: {"cho')
    conv = nbchat.Conversation(model="openai:m")
    with pytest.raises(ConnectionFailed, match="closed before the reply finished"):
        conv.send("hi")
    assert conv.replies[-1].text == "Hi" and conv.replies[-1].interrupted


@pytest.mark.parametrize("record", [b"[1, 2]", b'{"choices": [null]}',
                                    b'{"choices": [{"delta": "text"}]}',
                                    b'{"choices": [{"delta": {"tool_calls": [7]}}]}'])
def test_record_of_an_unexpected_shape_is_a_protocol_error(mock, record):
    mock.sse(b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\ndata: ' + record
             + b"\n\ndata: [DONE]\n\n")
    conv = nbchat.Conversation(model="openai:m")
    with pytest.raises(ProtocolError, match="stream record nbchat cannot read"):
        conv.send("hi")
    assert conv.replies[-1].text == "Hi"


def test_input_cannot_replace_the_model_messages_or_streaming():
    """`input=` (`%%chat --input k=v`) adds body fields; it may not replace the ones that make
    the request this turn: the model, the messages and streaming. The refusal comes before
    anything is sent and names what to remove; other fields still go in as given."""
    from nbchat.core.errors import BadOption

    body = build_body(request(input={"repeat_penalty": 1.1, "top_k": 5}))
    assert body["repeat_penalty"] == 1.1 and body["top_k"] == 5
    for extra in ({"model": "evil"}, {"messages": []}, {"stream": False},
                  {"stream_options": {}, "model": "x"}):
        with pytest.raises(BadOption, match="cannot be set with input=") as info:
            build_body(request(input=extra))
        assert all(k in str(info.value) for k in extra)
    with pytest.raises(BadOption, match="messages, model cannot be set"):  # nothing is sent
        nbchat.chat("hi", model="openai:m", base_url="http://127.0.0.1:9/v1",
                    input={"messages": [], "model": "evil"})


@pytest.mark.parametrize("status, base, says", [
    (502, "http://127.0.0.1:9/v1", "a gateway or proxy could not reach the model server"),
    (200, "http://127.0.0.1:9/v1", "not as an OpenAI-compatible API; check the host and port"),
    (200, "http://127.0.0.1:9", "usually ending in /v1"),
])
def test_an_html_page_says_what_to_check(status, base, says):
    """An HTML page where JSON was expected: from a gateway (502/503/504), the model server
    is down behind it; at an address that already ends in /v1, the host or port is wrong; else
    the base URL probably lacks /v1. The advice fits the case."""
    from nbchat.providers.openai import OpenAIProvider

    provider = OpenAIProvider()
    err = provider.html_error(status, b"<html>Bad Gateway</html>", f"{base}/chat/completions")
    assert isinstance(err, ProtocolError) and says in str(err)
    assert f"HTTP {status}" in str(err)
