"""Third-party providers through the entry-point group `nbchat.providers`.

The real path: tests/plugin_echo (a provider package written against `nbchat`'s public names
only) is pip-installed into this environment, offline, and a fresh Python with a real IPython
shell lists it in `%models` and chats with it through `%%chat -m echo:...`. The registry's
handling of odd entry points is checked in process with `importlib.metadata.EntryPoint`s.
"""

from __future__ import annotations

import importlib.metadata
import json
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

import nbchat
from nbchat.core import registry
from nbchat.core.errors import ProviderUnavailable, UnknownModel

PLUGIN = pathlib.Path(__file__).parent / "plugin_echo"
GROUP = "nbchat.providers"


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", *args, "--disable-pip-version-check",
                           "-q"], capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """tests/plugin_echo installed into this environment for the module's tests, then removed."""
    src = tmp_path_factory.mktemp("plugin") / "plugin_echo"
    shutil.copytree(PLUGIN, src)
    done = pip("install", "--no-deps", "--no-build-isolation", "--no-index", str(src))
    assert done.returncode == 0, done.stderr
    try:
        yield
    finally:
        pip("uninstall", "-y", "nbchat-echo-test")
        registry.plugins(refresh=True)


SHELL = textwrap.dedent("""
    import json, sys
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    shown = []
    ip.display_pub.publish = lambda data, metadata=None, **kw: shown.append(data)
    ip.run_line_magic("load_ext", "nbchat")
    from nbchat.core import registry
    lazy = registry._plugins is None and "nbchat_echo_test" not in sys.modules
    models = ip.run_cell("%models")
    table = shown[-1]["text/html"]
    chat = ip.run_cell("%%chat -m echo:upper --max-tokens 3\\nhello plugin world")  # kept
    import nbchat
    reply = nbchat.last
    again = ip.run_cell("%%chat -m echo:plain --new\\nand once more")  # the thread kept it
    typo = ip.run_cell("%%chat -m echo:loud\\nhi")
    broken = ip.run_cell("%%chat -m echobroken:x\\nhi")
    print(json.dumps({
        "lazy": lazy, "table": table, "errors": [repr(r.error_in_exec) for r in (models, chat)],
        "text": reply.text, "finish": reply.finish_reason, "model": reply.model,
        "usage": [reply.usage.input_tokens, reply.usage.output_tokens],
        "again": nbchat.last.text, "typo": str(typo.error_in_exec),
        "broken": str(broken.error_in_exec),
    }))
""")


def test_an_installed_plugin_shows_in_models_and_answers_chat(installed):
    names = {ep.name for ep in importlib.metadata.entry_points(group=GROUP)}
    assert {"echo", "echobroken"} <= names
    out = subprocess.run([sys.executable, "-c", SHELL], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["lazy"]  # %load_ext read no entry points and imported no plugin
    assert got["errors"] == ["None", "None"]
    assert "<td>echo:plain</td>" in got["table"] and "<td>echo:upper</td>" in got["table"]
    assert "<td>llamacpp:smollm2</td>" in got["table"]  # the others are still there
    # the broken plugin has its row in "Not listed", saying why
    assert "echobroken" in got["table"] and "nbchat_echo_test_dependency" in got["table"]
    assert got["text"] == "ECHO: HELLO PLUGIN" and got["finish"] == "length"
    assert got["model"] == "echo:upper" and got["usage"] == [3, 3]
    assert got["again"] == "echo: and once more"
    assert "echo:plain" in got["typo"]  # its own "did you mean"
    assert "cannot be loaded" in got["broken"] and "nbchat-echo-test 0.1.0" in got["broken"]


# ---- the registry with entry points of every kind, in process -------------------------------


@pytest.fixture
def entry_points(monkeypatch):
    """Make `importlib.metadata.entry_points(group=...)` return the given entry points."""
    monkeypatch.syspath_prepend(str(PLUGIN))
    points: list[importlib.metadata.EntryPoint] = []

    def fake(**kw):
        assert kw == {"group": GROUP}
        return list(points)

    def add(name: str, value: str) -> None:
        points.append(importlib.metadata.EntryPoint(name, value, GROUP))
        registry.unregister(name)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    monkeypatch.setattr(registry, "_plugins", None)
    yield add
    for ep in points:
        registry.unregister(ep.name)
    registry._plugins = None


def test_entry_points_are_read_on_first_need_only(entry_points):
    entry_points("echo", "nbchat_echo_test:EchoProvider")
    nbchat.Conversation(model="local")  # a built-in id does not read them
    assert registry._plugins is None
    reply = nbchat.chat("two words", model="echo:plain")
    assert reply.text == "echo: two words" and registry._plugins is not None
    assert reply.usage.input_tokens == 2 and reply.finish_reason == "stop"
    assert "echo" in registry.provider_names()
    assert [m.id for m in nbchat.models("echo")] == ["echo:plain", "echo:upper"]


@pytest.mark.parametrize("value, why", [
    ("nbchat_echo_test_nowhere:EchoProvider", "ModuleNotFoundError"),
    ("nbchat_echo_test:MODELS", "is not a nbchat.Provider subclass"),
    ("nbchat_echo_test.broken:BrokenProvider", "nbchat_echo_test_dependency"),
])
def test_a_broken_plugin_fails_alone_with_its_reason(entry_points, value, why):
    entry_points("bad", value)
    entry_points("echo", "nbchat_echo_test:EchoProvider")
    with pytest.raises(ProviderUnavailable) as err:
        nbchat.chat("hi", model="bad:x")
    assert why in str(err.value) and value in str(err.value)
    assert nbchat.chat("still here", model="echo:plain").text == "echo: still here"
    listed = nbchat.models()  # listing every provider skips the broken one
    assert "echo:upper" in [m.id for m in listed]


def test_a_plugin_must_use_its_entry_point_name(entry_points):
    entry_points("other", "nbchat_echo_test:EchoProvider")  # the class calls itself "echo"
    with pytest.raises(ProviderUnavailable, match="calls itself 'echo'"):
        registry.get_provider("other")


def test_a_plugin_cannot_replace_a_builtin(entry_points):
    entry_points("llamacpp", "nbchat_echo_test:EchoProvider")
    assert "llamacpp" not in registry.plugins()
    assert type(registry.get_provider("llamacpp")).__name__ == "LlamaCppProvider"


def test_a_plugin_installed_later_is_found_without_a_restart(entry_points):
    with pytest.raises(UnknownModel):
        registry.resolve("echo:plain")
    entry_points("echo", "nbchat_echo_test:EchoProvider")  # e.g. %pip install in the kernel
    provider, local = registry.resolve("echo:plain")
    assert provider.name == "echo" and local == "plain"
