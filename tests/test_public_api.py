import subprocess
import sys

import nbchat


def test_all_is_complete_and_importable():
    for name in nbchat.__all__:
        if name in ("ChatPanel", "CompareView", "compare", "acompare"):
            continue  # widget names: covered by their own tests
        assert getattr(nbchat, name) is not None or name == "last", name


def test_import_is_light():
    """Importing nbchat (what %load_ext does first) pulls in no HTTP, model or widget library."""
    code = ("import sys, nbchat; heavy = [m for m in ('httpx', 'llama_cpp', 'ipywidgets', "
            "'anywidget', 'PIL', 'nest_asyncio') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_models_lists_the_local_default_without_a_key():
    infos = nbchat.models("llamacpp")
    local = next(m for m in infos if m.id == "llamacpp:smollm2")
    assert local.key_set and local.stream and local.json and not local.vision
    assert "key" not in repr(local).lower() or "key_set=True" in repr(local)


def test_reply_repr_never_runs_html(fake):
    fake.enqueue("<script>alert(1)</script> ", "![x](http://evil/x.png)")
    reply = nbchat.chat("x", model="fake:echo")
    bundle = reply._repr_mimebundle_()
    assert "<script>" not in bundle["text/markdown"]
    assert "![x](http" not in bundle["text/markdown"]
    assert bundle["text/plain"] == reply.text
