"""ChatPanel's message actions, model catalog, static copy and help (issue 16), in the kernel:
Regenerate, Edit and Delete change `panel.messages` as the transcript shows; New chat is undone
once; the picker's rows carry key status (never the key) and capabilities; displayed, the panel
is the widget view (never redrawn) and a sanitized copy of the transcript that follows each
turn; the Markdown export keeps images."""

from __future__ import annotations

import asyncio
import base64
import io

import pytest
from fakes import FakeProvider
from htmlcheck import problems

from nbchat.core import registry
from nbchat.core.errors import ProviderError
from nbchat.notebook.panel import VIEW_TEXT, WIDGET_VIEW, ChatPanel, model_catalog


def run(coro):
    return asyncio.run(coro)


def front_end(panel: ChatPanel, content: dict, buffers: list | None = None) -> None:
    panel._on_front_end_msg(panel, content, buffers or [])


def quiet(panel: ChatPanel) -> list[dict]:
    sent: list[dict] = []
    panel.send = lambda content, buffers=None: sent.append(content)  # type: ignore[method-assign]
    return sent


def png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buf, format="PNG")
    return buf.getvalue()


def chat(panel: ChatPanel, *turns: tuple[str, str], fake: FakeProvider) -> None:
    async def main():
        for prompt, answer in turns:
            fake.enqueue(answer)
            panel.submit(prompt)
            await panel.wait()

    run(main())


def talk(panel: ChatPanel) -> list[tuple[str, str]]:
    return [(m.role, m.text) for m in panel.messages]


def shown(panel: ChatPanel) -> list[tuple[str, str]]:
    return [(e["role"], e["text"]) for e in panel.transcript]


def test_regenerate_replaces_the_last_reply_with_the_same_message(fake):
    panel = ChatPanel("fake:echo")
    quiet(panel)
    chat(panel, ("one", "A1"), ("two", "A2"), fake=fake)
    other = FakeProvider("other")
    registry.register(other)
    try:
        other.enqueue("B2")

        async def main():
            front_end(panel, {"type": "regenerate", "model": "other:echo"})
            await panel.wait()

        run(main())
    finally:
        registry.unregister("other")
    assert talk(panel) == [("user", "one"), ("assistant", "A1"), ("user", "two"),
                           ("assistant", "B2")]
    assert shown(panel) == talk(panel)
    assert panel.transcript[-1]["model"] == "other:echo"
    assert panel.model == "fake:echo"  # the panel's model stays
    # what went to the other model: the history before the last turn, then the same message
    assert [(m.role, m.text) for m in other.requests[0].messages] == talk(panel)[:3]
    assert [r.text for r in panel.replies] == ["A1", "B2"]


def test_regenerate_keeps_the_message_images(fake):
    panel = ChatPanel("fake:echo")
    quiet(panel)

    async def main():
        fake.enqueue("red")
        panel.submit("colour?", [png()])
        await panel.wait()
        fake.enqueue("blue")
        panel.regenerate()
        await panel.wait()

    run(main())
    assert len(fake.requests[1].messages[-1].images) == 1
    assert talk(panel) == [("user", "colour?"), ("assistant", "blue")]


def test_edit_resends_from_the_edited_message(fake):
    panel = ChatPanel("fake:echo")
    quiet(panel)
    chat(panel, ("one", "A1"), ("two", "A2"), ("three", "A3"), fake=fake)
    fake.enqueue("E2")

    async def main():
        front_end(panel, {"type": "edit", "index": 1, "text": "two, edited"})
        await panel.wait()

    run(main())
    assert talk(panel) == [("user", "one"), ("assistant", "A1"), ("user", "two, edited"),
                           ("assistant", "E2")]
    assert shown(panel) == talk(panel)
    assert [(m.role, m.text) for m in fake.requests[-1].messages] == talk(panel)[:3]


def test_delete_removes_a_turn_from_history_and_transcript(fake):
    panel = ChatPanel("fake:echo", system="be brief")
    quiet(panel)
    chat(panel, ("one", "A1"), ("two", "A2"), ("three", "A3"), fake=fake)
    front_end(panel, {"type": "delete", "index": 1})
    assert talk(panel) == [("system", "be brief"), ("user", "one"), ("assistant", "A1"),
                           ("user", "three"), ("assistant", "A3")]
    assert shown(panel) == talk(panel)[1:]
    front_end(panel, {"type": "delete", "index": 0})
    assert talk(panel)[1:] == [("user", "three"), ("assistant", "A3")]
    # the next turn is sent with what is left, and a later delete still finds its turn
    chat(panel, ("four", "A4"), fake=fake)
    assert [m.text for m in fake.requests[-1].messages] == ["be brief", "three", "A3", "four"]
    front_end(panel, {"type": "delete", "index": 1})
    assert talk(panel)[1:] == [("user", "three"), ("assistant", "A3")]


def test_delete_takes_the_error_of_its_turn_along(fake):
    panel = ChatPanel("fake:echo")
    quiet(panel)
    fake.enqueue("partial", error=ProviderError("dropped", status=502, provider="fake"))

    async def main():
        panel.submit("one")
        await panel.wait()

    run(main())
    assert [e["role"] for e in panel.transcript] == ["user", "assistant", "error"]
    panel.delete(0)
    assert panel.transcript == [] and panel.messages == []


def test_actions_on_a_turn_that_does_not_exist_say_so_inline(fake):
    panel = ChatPanel("fake:echo")
    quiet(panel)
    chat(panel, ("one", "A1"), fake=fake)
    front_end(panel, {"type": "delete", "index": 3})
    assert panel.transcript[-1] == {"role": "error", "text": "IndexError: no message 3: the "
                                    "chat has 1"}
    with pytest.raises(IndexError):
        ChatPanel("fake:echo").regenerate()


def test_regenerate_with_an_unknown_model_keeps_the_reply(fake):
    panel = ChatPanel("fake:echo")
    quiet(panel)
    chat(panel, ("one", "A1"), fake=fake)
    front_end(panel, {"type": "regenerate", "model": "nosuch:thing"})
    assert talk(panel) == [("user", "one"), ("assistant", "A1")]
    assert panel.transcript[-1]["role"] == "error" and "nosuch" in panel.transcript[-1]["text"]


def test_new_chat_can_be_undone_once_until_the_next_message(fake):
    panel = ChatPanel("fake:echo")
    quiet(panel)
    chat(panel, ("one", "A1"), fake=fake)
    before = (talk(panel), list(panel.transcript))
    front_end(panel, {"type": "new"})
    assert panel.messages == [] and panel.transcript == [] and panel.can_undo
    front_end(panel, {"type": "undo_new"})
    assert (talk(panel), panel.transcript) == before and not panel.can_undo
    with pytest.raises(RuntimeError, match="nothing to undo"):
        panel.undo_new_chat()
    panel.new_chat()
    chat(panel, ("fresh", "F"), fake=fake)
    assert not panel.can_undo
    with pytest.raises(RuntimeError):
        panel.undo_new_chat()
    assert talk(panel) == [("user", "fresh"), ("assistant", "F")]


def test_an_error_keeps_nothing_of_the_failed_turn_and_actions_still_line_up(fake):
    panel = ChatPanel("fake:echo")
    quiet(panel)
    chat(panel, ("one", "A1"), fake=fake)
    fake.enqueue(error=ProviderError("overloaded", status=503, provider="fake"))

    async def main():
        panel.submit("two")
        await panel.wait()

    run(main())
    chat(panel, ("two", "A2"), fake=fake)
    panel.delete(0)
    assert talk(panel) == [("user", "two"), ("assistant", "A2")]


# ---- the model picker's rows -------------------------------------------------------------


def test_catalog_rows_say_what_to_set_and_never_hold_the_key(monkeypatch):
    monkeypatch.delenv("CEREBRAS_API_KEY", raising=False)
    rows = {r["id"]: r for r in model_catalog("llamacpp:smollm2")}
    first = model_catalog("llamacpp:smollm2")[0]
    assert first["id"] == "llamacpp:smollm2" and first["ready"] and first["hint"] == \
        "no key needed"
    cerebras = rows["cerebras:llama3.1-8b"]
    assert not cerebras["ready"] and cerebras["key"] == "missing"
    assert "CEREBRAS_API_KEY" in cerebras["hint"]
    assert cerebras["tools"] is True and cerebras["vision"] is False
    providers = [r["provider"] for r in model_catalog("llamacpp:smollm2")]
    assert providers == sorted(providers, key=lambda p: (p != "llamacpp", p))  # grouped

    secret = "csk-" + "k" * 40
    monkeypatch.setenv("CEREBRAS_API_KEY", secret)
    rows = {r["id"]: r for r in model_catalog("llamacpp:smollm2")}
    assert rows["cerebras:llama3.1-8b"]["ready"]
    assert rows["cerebras:llama3.1-8b"]["hint"] == "key set"
    assert secret not in repr(model_catalog("llamacpp:smollm2"))


def test_a_model_no_table_knows_has_unknown_capabilities(fake):
    rows = model_catalog("fake:custom-model")
    assert rows[0]["id"] == "fake:custom-model"
    assert rows[0]["vision"] is None and rows[0]["tools"] is None


def test_opening_the_picker_refreshes_key_status(fake, monkeypatch):
    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    panel = ChatPanel("fake:echo")
    nvidia = [r for r in panel.catalog if r["provider"] == "nvidia"]
    assert nvidia and not nvidia[0]["ready"]
    monkeypatch.setenv("NVIDIA_API_KEY", "nvapi-" + "x" * 40)
    front_end(panel, {"type": "catalog"})
    assert [r for r in panel.catalog if r["provider"] == "nvidia"][0]["ready"]


# ---- the static copy and the export ----------------------------------------------------------


def test_the_output_carries_a_sanitized_transcript_beside_the_widget(fake):
    panel = ChatPanel("fake:echo")
    quiet(panel)
    chat(panel, ("<img src=x onerror=alert(1)> **hi**", "**bold** <script>alert(2)</script>"),
         fake=fake)
    bundle, _ = panel._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    page = bundle["text/html"]
    assert "<strong>bold</strong>" in page and "&lt;script&gt;" in page
    assert problems(page) == []
    assert "fake:echo: **bold** <script>alert(2)</script>" in bundle["text/plain"]
    assert "object at 0x" not in bundle["text/plain"]


def test_displayed_the_view_is_left_alone_and_the_copy_is_updated_after_each_turn(
        fake, monkeypatch):
    import IPython.display

    shown_: list[tuple[str, dict, dict]] = []
    monkeypatch.setattr(IPython.display, "display",
                        lambda data, **kw: shown_.append(("display", data, kw)))
    monkeypatch.setattr(IPython.display, "update_display",
                        lambda data, **kw: shown_.append(("update", data, kw)))
    panel = ChatPanel("fake:echo")
    quiet(panel)
    panel._ipython_display_()
    chat(panel, ("one", "A1"), ("two", "A2"), fake=fake)
    (_, view, view_kw), (_, copy, copy_kw), *updates = shown_
    # the widget view: an output of its own, no display id, so nothing can redraw it
    assert set(view) == {WIDGET_VIEW, "text/plain"} and view["text/plain"] == VIEW_TEXT
    assert view[WIDGET_VIEW]["model_id"] == panel.model_id
    assert view_kw.get("display_id") is None
    # the static copy: displayed after it, then updated (only it) after each turn
    assert set(copy) == {"text/html", "text/plain"} and copy_kw["display_id"]
    assert [k for k, _, _ in updates] == ["update"] * len(updates) and len(updates) >= 2
    assert {kw["display_id"] for _, _, kw in updates} == {copy_kw["display_id"]}
    assert all(WIDGET_VIEW not in data for _, data, _ in updates)
    last = updates[-1][1]
    assert "A1" in last["text/html"] and "A2" in last["text/html"]
    assert last["text/html"].startswith("<div class='nbchat-transcript'>")
    assert problems(last["text/html"]) == []


def test_markdown_export_includes_images(fake):
    panel = ChatPanel("fake:echo")
    quiet(panel)
    from nbchat.core.images import from_bytes

    fake.enqueue("here", images=[from_bytes(png())])

    async def main():
        panel.submit("draw", [png()])
        await panel.wait()

    run(main())
    md = panel.to_markdown()
    srcs = md.count("src=\"data:image/png;base64,")
    assert srcs == 2, md  # the sent image's thumbnail and the generated one
    b64 = md.split('src="data:image/png;base64,')[2].split('"')[0]
    assert base64.b64decode(b64).startswith(b"\x89PNG")


# ---- help -----------------------------------------------------------------------------------


def test_help_says_what_each_does_with_options_examples_and_keys():
    from IPython.core.oinspect import Inspector

    import nbchat
    from nbchat.notebook.magics import ChatMagics

    info = Inspector(theme_name="nocolor").info(ChatPanel)
    assert "Public constructor" not in (info["init_docstring"] or "")
    doc = info["docstring"]
    for needed in ("temperature", "regenerate", "Example", "CEREBRAS_API_KEY",
                   "%config ChatMagics.api_keys", "Shift+Enter"):
        assert needed in doc, needed
    chat_doc = ChatMagics.chat.__doc__  # what `%%chat?` shows
    assert chat_doc.split("\n", 3)[2].strip().startswith("%%chat [-m MODEL]")
    assert "Examples" in chat_doc and "CEREBRAS_API_KEY" in chat_doc
    compare_doc = nbchat.compare.__doc__
    for needed in ("side by side", "temperature", "Example", "NVIDIA_API_KEY", "CompareResult"):
        assert needed in compare_doc, needed


def test_an_interrupted_local_reply_counts_its_prompt_tokens():
    """The local model measures the prompt before it generates: Stop after a few tokens still
    gives the reply its input tokens (the footer said "? in")."""
    panel = ChatPanel("local", temperature=0, max_tokens=400)
    sent: list[dict] = []
    panel.send = lambda content, buffers=None: sent.append(content)  # type: ignore[method-assign]

    async def main():
        task = panel.submit("Write a long story about a dragon.")
        while sum(m["type"] == "delta" for m in sent) < 3:
            await asyncio.sleep(0.02)
        panel.stop()
        return await task

    reply = run(main())
    assert reply.interrupted
    assert reply.usage.input_tokens is not None and reply.usage.input_tokens > 5
    assert "? in" not in panel.transcript[-1]["badge"]
    assert f"{reply.usage.input_tokens} in" in panel.transcript[-1]["badge"]


# ---- tool steps and refusals in the static copy and the exports ------------------------------


def test_static_copy_and_exports_keep_tool_steps_and_refusals(fake):
    """What the live panel shows collapsed (each tool call and its result) and the refusal line
    are in the saved output's `text/html` and `text/plain`, and in the Markdown export; the
    call's arguments and the result come from the model and a tool, so they stay text."""
    from nbchat.core.types import ToolCall
    from nbchat.notebook.panel import transcript_html, transcript_text

    hostile = '<img src=x onerror="alert(1)">'

    def lookup(q: str) -> str:
        """Look something up.

        Args:
            q: what to look up
        """
        return f"found {hostile}"

    panel = ChatPanel("fake:echo", tools=[lookup])
    fake.enqueue(tool_calls=[ToolCall("lookup", {"q": hostile}, "c1")], finish_reason="tool_calls")
    fake.enqueue("The answer.")
    quiet(panel)
    run(_submit(panel, "find it"))
    entry = panel.transcript[-1]
    entry_refused = {**entry, "refusal": f"no {hostile}", "steps": entry["steps"]}
    for fragment in (transcript_html([entry_refused]), panel.to_markdown()):
        assert "nbchat-tool-step" in fragment and "lookup(" in fragment, fragment
        assert "found &lt;img" in fragment and not problems(fragment)
    static = transcript_html([entry_refused])
    assert "Refused: no &lt;img" in static and static.index("lookup(") < static.index("answer")
    text = transcript_text("fake:echo", [panel.transcript[0], entry_refused])
    assert '[tool] lookup({"q": "<img' in text and f"refused: no {hostile}" in text


async def _submit(panel: ChatPanel, text: str):
    panel.submit(text)
    return await panel.wait()
