"""Endpoints and keys resolved by the core (nbchat/core/credentials.py), checked on the wire.

Cloud hosts are MockTransports that record what reaches them (PROVIDERS.md shapes); the
self-hosted case is a real llama_cpp.server in tests/test_llama_server.py.
"""

from __future__ import annotations

import pathlib
import re
import traceback

import httpx
import pytest

import nbchat
from nbchat.core import credentials, registry
from nbchat.core.credentials import Endpoint, Secret
from nbchat.core.errors import AuthenticationError, BadOption, MissingKey, UsageError
from nbchat.providers.cerebras import CerebrasProvider
from nbchat.providers.nvidia import NvidiaProvider
from nbchat.providers.openai import OpenAIProvider
from nbchat.providers.replicate import ReplicateProvider

WIRE = pathlib.Path(__file__).parent / "wire"
PACKAGE = pathlib.Path(nbchat.__file__).parent
MODEL = "cerebras:llama3.1-8b"


class Host:
    """A MockTransport handler for any host: records requests, answers chat and /models."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[httpx.Request] = []
        self.status = status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.status != 200:
            return httpx.Response(self.status, json={"error": {"message": "Invalid API key"}})
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [
                {"id": "llama3.1-8b", "object": "model", "created": 0, "owned_by": "x"},
                {"id": "their-own-model", "object": "model", "created": 0, "owned_by": "x"}]})
        return httpx.Response(200, content=(WIRE / "cerebras_stream.sse").read_bytes(),
                              headers={"content-type": "text/event-stream"})

    def seen(self) -> tuple[str, str | None]:
        """(URL, Authorization header) of the last request."""
        last = self.requests[-1]
        return str(last.url), last.headers.get("authorization")


@pytest.fixture
def host():
    h = Host()
    registry.register(CerebrasProvider(transport=httpx.MockTransport(h)))
    yield h
    registry.unregister("cerebras")


# ---- the order: explicit, then %config (configure), then environment, then default ----------


def test_explicit_then_configured_then_environment_then_default(host, monkeypatch):
    chat = "/chat/completions"
    monkeypatch.setenv("CEREBRAS_API_KEY", "csk-fromenvironment1")
    monkeypatch.setenv("CEREBRAS_BASE_URL", "https://env.example/v1/")
    nbchat.chat("hi", model=MODEL)
    assert host.seen() == (f"https://env.example/v1{chat}", "Bearer csk-fromenvironment1")

    credentials.configure(api_keys={"cerebras": "csk-fromconfig2"},
                          base_urls={"cerebras": "https://config.example/v1"})
    nbchat.chat("hi", model=MODEL)
    assert host.seen() == (f"https://config.example/v1{chat}", "Bearer csk-fromconfig2")

    nbchat.chat("hi", model=MODEL, api_key="csk-explicit3", base_url="https://arg.example/v1")
    assert host.seen() == (f"https://arg.example/v1{chat}", "Bearer csk-explicit3")

    credentials.configure(api_keys={}, base_urls={})
    monkeypatch.delenv("CEREBRAS_API_KEY")
    monkeypatch.delenv("CEREBRAS_BASE_URL")
    nbchat.chat("hi", model=MODEL, api_key="csk-explicit4")
    assert host.seen() == (f"https://api.cerebras.ai/v1{chat}", "Bearer csk-explicit4")


def test_missing_key_is_raised_before_any_request(host):
    with pytest.raises(MissingKey) as err:
        nbchat.chat("hi", model=MODEL)
    assert "CEREBRAS_API_KEY" in str(err.value)
    assert host.requests == []


def test_resolve_gives_a_frozen_endpoint_per_provider(monkeypatch):
    monkeypatch.setenv("NVIDIA_BASE_URL", "http://localhost:8000")
    nim = NvidiaProvider().endpoint()
    assert nim == Endpoint("nvidia", "http://localhost:8000/v1", None, "NVIDIA_API_KEY", False)
    assert nim.key_set  # a self-hosted NIM takes no key
    hosted = NvidiaProvider().endpoint(base_url="https://integrate.api.nvidia.com/v1")
    assert hosted.key_required and not hosted.key_set
    with pytest.raises(MissingKey, match="NVIDIA_API_KEY"):
        hosted.require_key()
    monkeypatch.setenv("ANYSCALE_API_BASE", "http://anyscale.local/v1")  # LangChain's name
    assert registry.get_provider("anyscale").endpoint().base_url == "http://anyscale.local/v1"
    with pytest.raises(AttributeError):
        hosted.base_url = "http://elsewhere"


@pytest.mark.parametrize("where, setup", [
    ("in CEREBRAS_API_KEY", lambda mp: mp.setenv("CEREBRAS_API_KEY", "csk-abc def")),
    ("in nbchat.core.credentials.configure",
     lambda mp: credentials.configure(api_keys={"cerebras": "csk-abc\u00e9"})),
    ("passed as api_key=", None),
])
def test_a_malformed_key_says_where_it_came_from(host, monkeypatch, where, setup):
    kwargs = {}
    if setup is None:
        kwargs["api_key"] = "csk-abc\ndef"
    with pytest.raises(UsageError) as err:
        if setup is not None:
            setup(monkeypatch)
        nbchat.chat("hi", model=MODEL, **kwargs)
    assert where in str(err.value) and "copy it again" in str(err.value)
    assert "abc" not in str(err.value) and host.requests == []


def test_a_key_read_from_a_file_loses_its_newline(host, monkeypatch):
    monkeypatch.setenv("CEREBRAS_API_KEY", "csk-fromafile5\n")
    nbchat.chat("hi", model=MODEL)
    assert host.seen()[1] == "Bearer csk-fromafile5"


# ---- keys never show ----------------------------------------------------------------------


def test_secret_and_endpoint_reprs_hide_the_key():
    secret = Secret("sk-verysecretvalue42")
    endpoint = Endpoint("openai", "https://api.openai.com/v1", secret, "OPENAI_API_KEY", True)
    for text in (repr(secret), str(secret), f"{secret}", repr(endpoint), str(endpoint),
                 repr(nbchat.core.http.bearer_auth(secret))):
        assert "verysecret" not in text
    assert secret.get() == "sk-verysecretvalue42" and secret == Secret("sk-verysecretvalue42")
    assert secret != Secret("sk-othervalue") and bool(secret) and not Secret("")
    assert "verysecret" not in nbchat.core.errors.redact("got sk-verysecretvalue42 back")


def explicit_chat(key: str) -> None:
    nbchat.chat("hi", model=MODEL, api_key=key)


def explicit_conversation(key: str) -> None:
    nbchat.Conversation(MODEL).send("hi", api_key=key)


def explicit_listing(key: str) -> None:
    nbchat.models("cerebras", api_key=key)


def configured(key: str) -> None:
    credentials.configure(api_keys={"cerebras": key})
    nbchat.chat("hi", model=MODEL)


@pytest.mark.parametrize("call", [configured, explicit_chat, explicit_conversation,
                                  explicit_listing])
def test_a_401_traceback_with_locals_never_holds_the_key(call):
    """What `%xmode Verbose` or `pytest -l` print: every local of every frame, repr'd."""
    key = "csk-tracebacklocals6789"
    h = Host(status=401)
    registry.register(CerebrasProvider(transport=httpx.MockTransport(h)))
    try:
        with pytest.raises(AuthenticationError) as err:
            call(key)
    finally:
        registry.unregister("cerebras")
    assert h.seen()[1] == f"Bearer {key}"  # it was sent, and only on the wire
    stack = traceback.StackSummary.extract(traceback.walk_tb(err.value.__traceback__),
                                           capture_locals=True)
    ours = [f for f in stack if f.filename.startswith(str(PACKAGE))]
    assert {"open_stream", "run_sync"} <= {f.name for f in ours}  # down to the wire
    # the key is a local shown redacted, or the provider's frames that held it lost their
    # locals before its error reached the caller (nbchat.core.turn clears them)
    wire = [f for f in ours if f.name == "open_stream"]
    assert "Secret('***')" in "".join(stack.format()) or not any(f.locals for f in wire)
    for frame in ours:
        for name, value in (frame.locals or {}).items():
            assert key[4:] not in value, (frame.name, name)


def test_the_bearer_header_is_written_in_one_place():
    """Only http.BearerAuth builds `Authorization: Bearer`, and only it and the credentials
    module read a Secret's plain value."""
    builders, readers = [], []
    for path in PACKAGE.rglob("*.py"):
        src = path.read_text()
        rel = path.relative_to(PACKAGE).as_posix()
        builders += [rel for line in src.splitlines() if re.search(r"[\"']Bearer ", line)]
        if re.search(r"(secret|api_key)\.get\(\)", src):
            readers.append(rel)
    assert builders == ["core/http.py"]
    assert sorted(readers) == ["core/credentials.py", "core/http.py"]


# ---- listing a server given by URL ------------------------------------------------------


def test_models_lists_a_keyed_host_given_by_url_and_key():
    h = Host()
    registry.register(OpenAIProvider(transport=httpx.MockTransport(h)))
    try:
        listed = nbchat.models("openai", base_url="https://llm.example.com/v1/",
                               api_key="sk-listingkey77")
        assert h.seen() == ("https://llm.example.com/v1/models", "Bearer sk-listingkey77")
        assert [m.id for m in listed] == ["openai:llama3.1-8b", "openai:their-own-model"]
        assert all(m.key_set and m.description == "at https://llm.example.com/v1"
                   for m in listed)
        # no key for api.openai.com: said before anything is sent
        with pytest.raises(MissingKey, match="OPENAI_API_KEY"):
            nbchat.models("openai", base_url="https://api.openai.com/v1")
        assert len(h.requests) == 1
        again = nbchat.core.bridge.run_sync(
            nbchat.amodels("openai", base_url="https://other.example/v1"))
        assert h.seen() == ("https://other.example/v1/models", None) and len(again) == 2
    finally:
        registry.unregister("openai")


def test_models_with_a_url_but_no_provider_is_a_clear_error():
    with pytest.raises(BadOption, match="nbchat.models\\('openai', base_url=...\\)"):
        nbchat.models(base_url="http://127.0.0.1:8080/v1")


def test_replicate_lists_its_collections_only_with_a_key():
    h = Host()

    def handler(request: httpx.Request) -> httpx.Response:
        h.requests.append(request)
        return httpx.Response(200, json={"results": [{"owner": "acme", "name": "tiny"}],
                                         "next": None})

    registry.register(ReplicateProvider(httpx.MockTransport(handler)))
    try:
        table = nbchat.models("replicate")
        assert h.requests == [] and not any(m.key_set for m in table)
        credentials.configure(api_keys={"replicate": "r8_configuredtoken1"})
        live = nbchat.models("replicate")
        assert "replicate:acme/tiny" in [m.id for m in live]
        assert {r.headers["authorization"] for r in h.requests} == {"Bearer r8_configuredtoken1"}
    finally:
        registry.unregister("replicate")
