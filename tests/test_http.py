"""Retries, error bodies and transport failures of the shared HTTP layer (MockTransport)."""

from __future__ import annotations

import asyncio
import email.utils
import time

import httpx
import pytest

import nbchat
from nbchat.core import http
from nbchat.core.errors import (
    AuthenticationError,
    ConnectionFailed,
    ContextTooLong,
    ProtocolError,
    ProviderError,
    RateLimited,
    remember_secret,
)

URL = "https://api.example.test/v1/chat/completions"


def run(coro):
    # a fresh loop each time, explicitly: once nest_asyncio has patched asyncio (any test that
    # used the sync bridge inside a running loop does that), asyncio.run reuses one loop
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def replies(*responses: httpx.Response):
    """A MockTransport answering with the given responses in order; records requests."""
    queue = list(responses)
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return queue.pop(0)

    return httpx.MockTransport(handler), calls


async def send(transport, **kw):
    client = httpx.AsyncClient(transport=transport)
    try:
        resp = await http.open_stream(client, "POST", URL, provider="acme", json_body={"a": 1},
                                      **kw)
        body = await resp.aread()
        await resp.aclose()
        return resp.status_code, body
    finally:
        await client.aclose()


def test_retries_429_honouring_retry_after_then_succeeds(sleeps):
    transport, calls = replies(
        httpx.Response(429, headers={"retry-after": "3"}, json={"error": {"message": "slow"}}),
        httpx.Response(503, headers={"retry-after-ms": "250"}, text="busy"),
        httpx.Response(200, text="ok"),
    )
    assert run(send(transport)) == (200, b"ok")
    assert len(calls) == 3
    assert sleeps == [3.0, 0.25]
    assert calls[0].headers["content-type"] == "application/json"
    assert calls[0].content == b'{"a":1}'


def test_retry_after_http_date():
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < http.parse_retry_after({"retry-after": when}) <= 30


def test_backoff_doubles_and_is_capped():
    policy = http.RetryPolicy(initial=0.5, maximum=8.0)
    d = [http.retry_delay(i, {}, policy) for i in range(6)]
    assert 0.375 <= d[0] <= 0.5 and 0.75 <= d[1] <= 1.0 and 6.0 <= d[5] <= 8.0


def test_gives_up_after_two_retries_with_the_provider_message(sleeps):
    body = {"error": {"message": "Rate limit exceeded", "type": "rate_limit"}}
    transport, calls = replies(*[httpx.Response(429, json=body,
                                                headers={"retry-after": "1"})] * 3)
    with pytest.raises(RateLimited) as info:
        run(send(transport))
    assert len(calls) == 3 and len(sleeps) == 2
    assert info.value.retry_after == 1.0
    assert info.value.status == 429
    assert "Rate limit exceeded" in str(info.value) and "retry in 1 s" in str(info.value)
    assert str(info.value).endswith("(nbchat tried 3 times)")  # it already did retry
    assert info.value.full_message.endswith("(nbchat tried 3 times)")


def test_long_retry_after_is_reported_not_waited(sleeps):
    transport, calls = replies(httpx.Response(429, headers={"retry-after": "3600"}, text="{}"))
    with pytest.raises(RateLimited) as info:
        run(send(transport))
    assert len(calls) == 1 and sleeps == []
    assert info.value.retry_after == 3600 and "tried" not in str(info.value)  # once: no note


def test_400_is_not_retried(sleeps):
    transport, calls = replies(httpx.Response(400, json={"error": {"message": "bad"}}))
    with pytest.raises(ProviderError, match="HTTP 400: bad"):
        run(send(transport))
    assert len(calls) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"message": "model not found", "type": "invalid_request_error"}},  # OpenAI
        {"message": "model not found", "type": "not_found_error", "code": "model_not_found"},
        {"status": 404, "title": "Not Found", "detail": "model not found"},  # NVIDIA
    ],
    ids=["openai", "flat", "problem-details"],
)
def test_three_error_shapes(body):
    err = http.error_from_response(404, httpx.Response(404, json=body).content, {},
                                   provider="acme")
    assert type(err) is ProviderError
    assert "model not found" in str(err) and "acme" in str(err) and "HTTP 404" in str(err)


def test_status_mapping():
    auth = http.error_from_response(401, b'{"error":{"message":"Invalid API key"}}', {},
                                    provider="acme", key_env="ACME_API_KEY")
    assert isinstance(auth, AuthenticationError) and "ACME_API_KEY" in str(auth)
    ctx = http.error_from_response(
        400,
        b'{"error":{"message":"Requested tokens (3000) exceed context window of 2048",'
        b'"type":"invalid_request_error","code":"context_length_exceeded"}}',
        {}, provider="acme",
    )
    assert isinstance(ctx, ContextTooLong) and "exceed context window" in str(ctx)
    limited = http.error_from_response(429, b'{"detail":"throttled","retry_after":7}', {},
                                       provider="acme")
    assert isinstance(limited, RateLimited) and limited.retry_after == 7


def test_html_error_page_is_a_protocol_error():
    err = http.error_from_response(
        502, b"<!DOCTYPE html><html><body>Bad gateway</body></html>",
        {"content-type": "text/html"}, provider="acme",
    )
    assert isinstance(err, ProtocolError) and "HTML" in str(err) and "/v1" in str(err)


def test_key_never_in_error_text():
    key = "custom-secret-key-1234567"
    remember_secret(key)
    err = http.error_from_response(
        401, ('{"error":{"message":"Incorrect API key provided: ' + key + '"}}').encode(), {},
        provider="acme",
    )
    assert key not in str(err) and key not in repr(err)
    err = http.error_from_response(401, b'{"message":"bad key nvapi-abcdefghijklmnop"}', {},
                                   provider="acme")
    assert "nvapi-abcdefghijklmnop" not in str(err)


@pytest.mark.parametrize("at", [250, 290, 296, 299, 480, 495])
def test_a_key_where_an_error_body_is_cut_is_redacted_first(at):
    key = "zz-cutme-Q7w2e9r4t6y8u1i3"  # a shape no pattern knows: only the registered value
    remember_secret(key)
    body = ("x" * at + f" Authorization: Bearer {key} " + "y" * 5000).encode()
    for status in (400, 500):
        err = http.error_from_response(status, body, {"content-type": "text/plain"},
                                       provider="acme")
        for text in (str(err), repr(err), err.body):
            assert "zz-cut" not in text and "Q7w2e9" not in text and "i3 " not in text


def test_a_key_to_plain_http_off_this_machine_gets_one_warning():
    from nbchat.core.credentials import Secret

    seen: list[str] = []

    def handler(request):
        seen.append(request.headers.get("authorization", ""))
        return httpx.Response(200, json={})

    async def get(url):
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        try:
            await http.request_json(client, "GET", url, provider="acme",
                                    auth=http.bearer_auth(Secret("zz-plain-123456")))
        finally:
            await client.aclose()

    with pytest.warns(UserWarning, match=r"plain http:// to 10\.1\.2\.3") as caught:
        run(get("http://10.1.2.3/v1/models"))
        run(get("http://10.1.2.3/v1/models"))  # once per host
    assert len(caught) == 1 and "zz-plain" not in str(caught[0].message)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these may warn
        for url in ("http://127.0.0.1:9/v1", "http://localhost/v1", "http://[::1]:8/v1",
                    "https://api.example.test/v1"):
            run(get(url))
    assert seen == ["Bearer zz-plain-123456"] * 6


def test_connect_error_is_retried_then_reported(sleeps):
    calls = []

    def handler(request):
        calls.append(request)
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ConnectionFailed, match="could not connect to api.example.test"):
        run(send(httpx.MockTransport(handler)))
    assert len(calls) == 3 and len(sleeps) == 2


def test_transport_error_messages():
    req = httpx.Request("GET", URL)
    stall = http.transport_error(httpx.ReadTimeout("t", request=req), URL, "acme")
    assert "stopped sending data (nothing for 60 s)" in str(stall) and "'idle'" in str(stall)
    drop = http.transport_error(httpx.RemoteProtocolError("x", request=req), URL, "acme")
    assert "dropped" in str(drop)


def test_request_json_html_and_bad_json():
    async def go(resp):
        client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: resp))
        try:
            return await http.request_json(client, "GET", URL, provider="acme")
        finally:
            await client.aclose()

    assert run(go(httpx.Response(200, json={"data": []}))) == {"data": []}
    with pytest.raises(ProtocolError, match="HTML"):
        run(go(httpx.Response(200, text="<html>hello</html>",
                              headers={"content-type": "text/html"})))
    with pytest.raises(ProtocolError, match="not JSON"):
        run(go(httpx.Response(200, text="nope")))


def test_one_client_per_event_loop():
    async def grab():
        return http.get_client(), http.get_client()

    a1, a2 = run(grab())
    b1, _ = run(grab())
    assert a1 is a2  # reused inside one loop
    assert a1 is not b1  # never shared across loops


def test_an_own_pool_block_has_clients_of_its_own_closed_at_its_end():
    async def started_here():
        return http.get_client()

    async def worker():
        async with http.own_pool():
            mine = http.get_client()
            assert http.get_client() is mine
            assert await asyncio.create_task(started_here()) is mine  # a task it starts: same
            assert mine._transport._pool._max_connections == http.OWN_LIMITS.max_connections
            await asyncio.sleep(0)
        return mine

    async def go():
        shared = http.get_client()
        a, b = await asyncio.gather(worker(), worker())
        return shared, a, b, http.get_client()

    shared, a, b, after = run(go())
    assert len({id(shared), id(a), id(b)}) == 3  # one per block, none the shared one
    assert a.is_closed and b.is_closed
    assert after is shared and not shared.is_closed  # outside a block nothing changed


def test_limits_ride_on_each_request_and_transports_get_their_own_clients():
    seen = []

    def handler(request):
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json={})

    transport = httpx.MockTransport(handler)

    async def go():
        first = http.get_client()
        http.configure(first_byte_timeout=0.5, idle_timeout=0.25, connect_timeout=2)
        assert http.get_client() is first  # limits are per request, not per client
        other = http.get_client(transport)
        await http.request_json(other, "GET", URL, provider="acme")
        return first, other

    first, other = run(go())
    assert other is not first
    assert seen == [{"connect": 2.0, "read": 0.5, "write": 30.0, "pool": 30.0}]


def test_configure_timeouts(monkeypatch):
    monkeypatch.setenv("NBCHAT_READ_TIMEOUT", "7")
    assert http.timeouts().first_byte == 7 and http.timeouts().idle == 7
    http.configure(read_timeout=3, connect_timeout=2, max_retries=0)
    assert http.timeouts() == http.Timeouts(connect=2, first_byte=3, idle=3, total=600)
    assert http.retry_policy().max_retries == 0
    http.configure(provider="acme", idle_timeout=9, total_timeout=20)
    assert http.timeouts("acme") == http.Timeouts(connect=2, first_byte=3, idle=9, total=20)
    assert http.timeouts("other").idle == 3
    with pytest.raises(nbchat.errors.BadOption, match="positive number"):
        http.configure(idle_timeout=-1)


def test_409_after_retries_says_the_server_is_busy():
    err = http.error_from_response(409, b'{"detail":"Already running a prediction"}', {},
                                   provider="cog")
    assert "Already running a prediction" in str(err) and "busy" in str(err)


def test_a_gated_request_holds_its_slot_on_the_wire_only():
    # nbchat.map's rows (`http.gated`): a streamed response gives the slot back when it is
    # closed, a request_json exchange (create, then poll) keeps it, a failed send gives it back
    events: list[str] = []

    class Gate:
        held = False

        async def enter(self) -> None:
            if not self.held:
                self.held = True
                events.append("enter")

        async def leave(self) -> None:
            if self.held:
                self.held = False
                events.append("leave")

    async def body():
        yield b"data: 1\n\n"

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/down":
            raise httpx.ConnectError("refused")
        if request.url.path == "/a":
            return httpx.Response(200, content=body())  # streamed: read after the send
        return httpx.Response(200, json={"ok": 1})

    async def scenario() -> None:
        client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
        with http.gated(Gate()):
            response = await http.open_stream(client, "GET", "http://x.test/a", provider="t")
            events.append("sent")
            await response.aread()
            events.append("read")
            await response.aclose()
            await http.request_json(client, "POST", "http://x.test/b", provider="t")
            await http.request_json(client, "GET", "http://x.test/c", provider="t")
            events.append("polled")
            response = await http.open_stream(client, "GET", "http://x.test/d", provider="t")
            await response.aclose()
            with pytest.raises(ConnectionFailed):
                await http.open_stream(client, "GET", "http://x.test/down", provider="t",
                                       policy=http.RetryPolicy(max_retries=0))
        await client.aclose()

    asyncio.run(scenario())
    # (/d's answer is whole before the send returns, so its slot goes back at once)
    # (reading a body to its end closes it: the slot goes back before `aread` returns)
    assert events == ["enter", "sent", "leave", "read", "enter", "polled", "leave", "enter",
                      "leave"]


def test_the_gate_and_an_own_pool_stay_with_their_task_and_loop():
    # a map row's tool runs in another task, or a plain tool in a worker thread with a loop of
    # its own, and sees the row's context: its requests neither take the row's slot nor use
    # the worker's connections (bound to the other loop)
    entered: list[str] = []

    class Gate:
        async def enter(self) -> None:
            entered.append(asyncio.current_task().get_name())

        async def leave(self) -> None:
            pass

    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={}))

    async def send() -> httpx.AsyncClient:
        client = http.get_client(transport)
        response = await http.open_stream(client, "GET", "http://x.test/", provider="t")
        await response.aclose()
        return client

    async def scenario() -> None:
        async with http.own_pool():
            with http.gated(Gate()):
                own = await send()
                assert entered == [asyncio.current_task().get_name()]
                other = await asyncio.create_task(send(), name="a tool's task")
                assert other is own  # same loop: the worker's pool serves its tasks
                threaded = await asyncio.to_thread(lambda: asyncio.run(send()))
                assert threaded is not own
        assert len(entered) == 1  # only the row's own request took the slot

    asyncio.run(scenario())
