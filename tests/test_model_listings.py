"""What a live model listing says about capabilities it does not know: unknown (None), not no.

A self-hosted NIM or any OpenAI-compatible server lists ids only (`GET /v1/models`); tested
against a real llama_cpp.server on loopback.
"""

from __future__ import annotations

import pytest
from fakes import FakeProvider
from servers import MODEL_ALIAS

import nbchat
from nbchat.core import credentials, registry, replay
from nbchat.core.errors import UnsupportedInput
from nbchat.core.types import ImagePart
from nbchat.notebook.table import model_table

PNG = ImagePart(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)


@pytest.mark.parametrize("provider", ["nvidia", "openai", "cerebras", "anyscale"])
def test_a_listed_model_no_table_knows_has_unknown_tools_and_vision(llama_server, provider):
    key = "k-test" if provider in ("cerebras", "anyscale") else None  # their servers want one
    listed = {m.id: m for m in nbchat.models(provider, base_url=llama_server, api_key=key)}
    info = listed[f"{provider}:{MODEL_ALIAS}"]
    assert info.tools is None and info.vision is None
    assert info.stream


def test_models_table_shows_unknown_as_unknown(llama_server):
    credentials.configure(base_urls={"nvidia": llama_server})
    table = model_table("nvidia")
    row = next(r for r in table.rows() if r[0] == f"nvidia:{MODEL_ALIAS}")
    assert row[2] == "stream, tools?, vision?"
    assert "tools?, vision?" in table._repr_html_() and "tools?, vision?" in repr(table)


def test_unknown_survives_the_log(llama_server):
    nbchat.models("nvidia", base_url=llama_server)  # logged
    replay.set_mode("strict")
    info = {m.id: m for m in nbchat.models("nvidia", base_url=llama_server)}[
        f"nvidia:{MODEL_ALIAS}"]
    assert info.tools is None and info.vision is None


def test_calls_to_a_model_with_unknown_vision_are_sent():
    unknown = FakeProvider("unknownvision", vision=None)  # type: ignore[arg-type]
    blind = FakeProvider("blind", vision=False)
    for p in (unknown, blind):
        registry.register(p)
    try:
        nbchat.chat("What is this?", model="unknownvision:m", images=[PNG])
        assert unknown.requests[-1].messages[-1].images == (PNG,)
        with pytest.raises(UnsupportedInput, match="cannot see images"):
            nbchat.chat("What is this?", model="blind:m", images=[PNG])
        assert blind.requests == []
    finally:
        for p in (unknown, blind):
            registry.unregister(p.name)


def test_calls_with_tools_to_a_self_hosted_nim_are_sent(llama_server):
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    reply = nbchat.chat("What is the weather in Paris?", model=f"nvidia:{MODEL_ALIAS}",
                        base_url=llama_server, tools=[get_weather], tool_choice="get_weather",
                        temperature=0, max_tokens=40)
    assert reply.error is None
    assert [s.call.name for s in reply.steps] == ["get_weather"]  # sent, called and run
