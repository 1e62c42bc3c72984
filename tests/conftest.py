from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from fakes import FakeProvider  # noqa: E402

from nbchat.core import credentials, registry  # noqa: E402

#: session fixtures for real loopback servers (llama_cpp.server: `llama_server`)
pytest_plugins = ["servers", "faultserver"]


@pytest.fixture
def fake():
    """A scripted provider registered as `fake:` for the duration of a test."""
    provider = FakeProvider()
    registry.register(provider)
    yield provider
    registry.unregister(provider.name)


@pytest.fixture(autouse=True)
def _configured_limits_reset():
    """Limits set with `nbchat.core.http.configure` (and plain-http warnings given) last for
    one test only."""
    from nbchat.core import http, waits

    yield
    waits.reset()
    http._settings.clear()
    http._warned_hosts.clear()


@pytest.fixture(autouse=True)
def _no_cloud_keys(monkeypatch):
    """Tests never see the developer's real keys or base URLs."""
    for var in ("CEREBRAS_API_KEY", "NVIDIA_API_KEY", "REPLICATE_API_TOKEN", "ANYSCALE_API_KEY",
                "OPENAI_API_KEY", "CEREBRAS_BASE_URL", "NVIDIA_BASE_URL", "REPLICATE_BASE_URL",
                "ANYSCALE_BASE_URL", "OPENAI_BASE_URL", "COG_BASE_URL", "NBCHAT_LOCAL_MODEL",
                "NBCHAT_DEFAULT_MODEL", "NBCHAT_LLAMACPP_OPTIONS"):
        monkeypatch.delenv(var, raising=False)
    credentials.configure(api_keys={}, base_urls={})  # nor keys configured by another test
    yield
    credentials.configure(api_keys={}, base_urls={})


@pytest.fixture(scope="session", autouse=True)
def _log_in_a_temp_dir(tmp_path_factory):
    """The suite never writes into the user's data dir: even module and session fixtures (and
    the kernels they start, which inherit the environment) log into a temp folder."""
    before = os.environ.get("NBCHAT_LOG")
    os.environ["NBCHAT_LOG"] = str(tmp_path_factory.mktemp("nbchat-log") / "log.db")
    yield
    if before is None:
        os.environ.pop("NBCHAT_LOG", None)
    else:
        os.environ["NBCHAT_LOG"] = before


@pytest.fixture(autouse=True)
def _fresh_log(tmp_path, monkeypatch):
    """Each test gets its own log file, replay off and an empty usage ledger."""
    from nbchat.core import costs, replay
    from nbchat.core import log as nblog

    monkeypatch.setenv("NBCHAT_LOG", str(tmp_path / "nbchat-log.db"))
    monkeypatch.delenv("NBCHAT_REPLAY", raising=False)
    replay.set_mode(None)
    costs.ledger.clear()
    yield
    replay.set_mode(None)
    current = nblog._current
    if current is not None:
        current.close()
        nblog._current = None
