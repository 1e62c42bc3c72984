"""The cog provider against a real Cog server (coglet) on loopback, with the tests' predictors."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from cogserver import CogServer
from PIL import Image

import nbchat
from nbchat.core import registry
from nbchat.core.errors import ProviderError, UnsupportedInput, UsageError
from nbchat.core.turn import Turn
from nbchat.core.types import Message, Request
from nbchat.providers.cog import CogProvider, cog_streams, health_problem

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def text_server():
    with CogServer("text", concurrency=1) as server:
        yield server


@pytest.fixture(scope="module")
def image_server():
    with CogServer("image") as server:
        yield server


@pytest.fixture(scope="module")
def instant_server():
    with CogServer("instant", concurrency=4) as server:
        yield server


def wait_for_file(path, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    return None


def test_streams_text_tokens_as_they_come(text_server):
    chunks = list(nbchat.stream("hello there", model="cog:text", base_url=text_server.url,
                                max_tokens=5))
    assert chunks[:3] == ["You said:", " hello", " there"]
    assert "".join(chunks) == "You said: hello there.\ncount 1\n"


def test_options_map_onto_the_models_input_schema(text_server):
    reply = nbchat.chat("ECHO-INPUTS please", model="cog:text", base_url=text_server.url,
                        system="be brief", max_tokens=77, temperature=0.25, top_p=0.5, seed=7,
                        stop=["Q1", "Z2"])
    got = reply.json
    assert got == {
        "prompt": "ECHO-INPUTS please", "system_prompt": "be brief", "max_new_tokens": 77,
        "temperature": 0.25, "top_p": 0.5, "seed": 7, "stop_sequences": "2Z,1Q",  # reversed
    }


def test_history_is_flattened_into_the_prompt(text_server):
    conv = nbchat.Conversation(model="cog:text", base_url=text_server.url)
    conv.send("Name a company")
    reply = conv.send("ECHO-INPUTS of that")
    assert json.loads(reply.text)["prompt"] == (
        "User: Name a company\nAssistant: Acme Rocket Co.\nUser: ECHO-INPUTS of that\nAssistant:"
    )


def test_stop_sequence_is_cut_here_and_the_prediction_cancelled(text_server, tmp_path):
    marker = tmp_path / "cancelled.txt"
    reply = nbchat.chat("one two", model="cog:text", base_url=text_server.url,
                        max_tokens=100000, stop=["count 3"],
                        input={"delay": 0.05, "marker": str(marker)})
    assert reply.text == "You said: one two.\ncount 1\ncount 2\n"
    assert reply.finish_reason == "stop"
    assert wait_for_file(marker) is not None, "the server never saw the cancel"


def test_stop_sequence_split_across_chunks(text_server):
    reply = nbchat.chat("alpha beta", model="cog:text", base_url=text_server.url,
                        max_tokens=6, stop=["a.\ncou"])
    assert reply.text == "You said: alpha bet"


def test_interrupting_the_stream_cancels_the_prediction(text_server, tmp_path):
    marker = tmp_path / "cancelled.txt"
    it = nbchat.stream("go", model="cog:text", base_url=text_server.url, max_tokens=100000,
                       input={"delay": 0.05, "marker": str(marker)})
    got = [next(it) for _ in range(4)]
    it.close()
    assert got[0] == "You said:"
    text = wait_for_file(marker)
    assert text is not None and text.startswith("cancelled after")
    # the single slot is free again: a new prediction runs
    assert nbchat.chat("again", model="cog:text", base_url=text_server.url,
                       max_tokens=3).text.startswith("You said: again")


def test_image_output_becomes_a_pil_image(image_server):
    reply = nbchat.chat("a red circle next to a blue square", model="cog:draw",
                        base_url=image_server.url)
    assert len(reply.image_parts) == 1 and reply.image_parts[0].mime == "image/png"
    img = reply.images[0]
    assert img.size == (128, 128)
    assert img.convert("RGB").getpixel((32, 64)) == (220, 30, 30)
    assert img.convert("RGB").getpixel((96, 64)) == (30, 60, 220)
    assert reply.text == ""


def test_image_models_draw_the_last_prompt_only(image_server):
    conv = nbchat.Conversation(model="cog:draw", base_url=image_server.url)
    conv.send("a red circle")
    img = conv.send("a blue square").images[0].convert("RGB")
    assert img.getpixel((64, 64)) == (30, 60, 220)  # one shape, not the earlier red circle too


def test_image_in_the_prompt_goes_as_a_data_uri(image_server):
    yellow = Image.new("RGB", (40, 40), (240, 210, 20))
    reply = nbchat.chat("a green triangle", model="cog:draw", base_url=image_server.url,
                        images=[yellow], input={"width": 64, "height": 64})
    img = reply.images[0].convert("RGB")
    assert img.size == (64, 64)
    assert img.getpixel((1, 1)) == (240, 210, 20)  # the input image is the canvas


def test_images_to_a_model_without_image_input_are_refused(text_server):
    with pytest.raises(UnsupportedInput, match="takes no image input"):
        nbchat.chat("see this", model="cog:text", base_url=text_server.url,
                    images=[Image.new("RGB", (4, 4))])


def test_non_streaming_model(instant_server):
    reply = nbchat.chat("hi", model="cog:instant", base_url=instant_server.url, max_tokens=3)
    assert reply.text == "ok: hi"
    assert reply.finish_reason == "stop"
    # no stop_sequences input in its schema: the stop sequence is cut here
    cut = nbchat.chat("hi there", model="cog:instant", base_url=instant_server.url,
                      stop=[" there"])
    assert cut.text == "ok: hi" and cut.finish_reason == "stop"


def test_bad_input_reports_the_servers_validation_error(text_server):
    with pytest.raises(ProviderError) as info:
        nbchat.chat("x", model="cog:text", base_url=text_server.url,
                    input={"max_new_tokens": 0})
    assert info.value.status == 422
    assert "cog" in str(info.value)


def test_models_lists_the_configured_server(text_server, monkeypatch):
    monkeypatch.setenv("COG_BASE_URL", text_server.url)
    models = nbchat.models("cog")
    assert [m.id for m in models] == ["cog:model"]
    assert models[0].stream is True and models[0].image_generation is False


def test_cog_base_url_from_the_environment(instant_server, monkeypatch):
    monkeypatch.setenv("COG_BASE_URL", instant_server.url)
    assert nbchat.chat("env", model="cog:anything").text == "ok: env"


def test_a_server_that_is_not_running_says_so():
    from cogserver import free_port

    from nbchat.core.errors import ConnectionFailed

    with pytest.raises(ConnectionFailed, match="could not connect"):
        nbchat.chat("x", model="cog:gone", base_url=f"http://127.0.0.1:{free_port()}")


def test_no_server_configured_says_what_to_do():
    with pytest.raises(UsageError, match="COG_BASE_URL"):
        nbchat.chat("x", model="cog:thing")


# ---- health check, with the states a real server shows while booting ------------------------


def test_health_messages():
    assert health_problem("http://h:5000", {"status": "READY"}) is None
    assert health_problem("http://h:5000", {"status": "BUSY"}) is None
    msg = health_problem("http://h:5000", {"status": "STARTING"})
    assert msg == ("the Cog model at http://h:5000 is still starting (status STARTING); "
                   "try again in a few seconds")
    failed = health_problem("u", {"status": "SETUP_FAILED", "setup": {"logs": "a\nboom"}})
    assert "SETUP_FAILED" in failed and "boom" in failed


@pytest.mark.parametrize("status", ["STARTING", "SETUP_FAILED"])
def test_no_prediction_is_sent_before_the_model_is_ready(status):
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.url.path == "/health-check":
            return httpx.Response(200, json={"status": status})
        return httpx.Response(500)

    provider = CogProvider(httpx.MockTransport(handler))
    turn = Turn(provider, Request("m", (Message.of("user", "hi"),)), "cog:m",
                base_url="http://127.0.0.1:5999")
    with pytest.raises(ProviderError, match=status):
        nbchat.core.bridge.run_sync(turn.collect())
    assert seen == ["GET /health-check"]


def test_streaming_flag_is_read_from_the_schema():
    assert cog_streams({"paths": {"/predictions": {"post": {"x-cog-streaming": True}}}})
    assert not cog_streams({"paths": {"/predictions": {"post": {}}}})
    assert not cog_streams(None)


def test_registry_maps_cog_ids():
    provider, local = registry.resolve("cog:my-model")
    assert isinstance(provider, CogProvider) and local == "my-model"
