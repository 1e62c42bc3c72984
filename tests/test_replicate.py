"""Replicate's cloud API through httpx.MockTransport, fed with recorded wire data (tests/wire/)."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import httpx
import pytest
from PIL import Image

from nbchat.core import registry
from nbchat.core.bridge import iterate_sync, run_sync
from nbchat.core.errors import (
    AuthenticationError,
    ProtocolError,
    ProviderError,
    RateLimited,
    UnknownModel,
    UnsupportedInput,
)
from nbchat.core.options import parse_settings
from nbchat.core.turn import Turn, build_request
from nbchat.core.types import ImagePart, Message, Options, Request
from nbchat.providers import replicate
from nbchat.providers.protocols.cog_prediction import (
    StopCutter,
    build_input,
    flatten_messages,
    input_properties,
    streams_text,
)
from nbchat.providers.replicate import ReplicateProvider

WIRE = Path(__file__).parent / "wire"
TOKEN = "r8_TestToken0123456789abcdef"
API = "https://api.replicate.com/v1"
PID = "gm3qorzdhgbfurvjtvhg6dckhu"
STREAM_PATH = "/v1/files/bcwr-3okdfv3o2ka2e6vd6rvwgwkgbvpcxcqb6zfkvgvlmazbvsxsggya"
SDXL = "stability-ai/sdxl:39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"


def wire(name: str) -> dict:
    return json.loads((WIRE / name).read_text())


def png_bytes(color=(10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


class Cloud:
    """A scripted Replicate: routes by method and path, records every request."""

    def __init__(self) -> None:
        self.routes: dict[str, list[httpx.Response]] = {}
        self.seen: list[httpx.Request] = []

    def on(self, method: str, url: str, *responses: httpx.Response) -> None:
        self.routes.setdefault(f"{method} {url}", []).extend(responses)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        key = f"{request.method} {request.url.copy_with(query=None)}"
        queue = self.routes.get(key)
        if not queue:
            return httpx.Response(404, json={"detail": f"no route for {key}"})
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def calls(self, method: str | None = None) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.seen if method in (None, r.method)]

    def body(self, i: int) -> dict:
        return json.loads(self.seen[i].content)


@pytest.fixture
def cloud(monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    monkeypatch.setattr(replicate, "POLL_FIRST", 0.0)
    c = Cloud()
    provider = ReplicateProvider(httpx.MockTransport(c.handler))
    registry.register(provider)
    c.provider = provider  # type: ignore[attr-defined]
    yield c
    registry.unregister("replicate")


def llama(cloud: Cloud, sse: str = "replicate_stream_llama3.txt") -> None:
    cloud.on("GET", f"{API}/models/meta/meta-llama-3-8b-instruct",
             httpx.Response(200, json=wire("replicate_model_llama3.json")))
    cloud.on("POST", f"{API}/models/meta/meta-llama-3-8b-instruct/predictions",
             httpx.Response(201, json=wire("replicate_prediction_starting.json")))
    cloud.on("GET", f"https://stream.replicate.com{STREAM_PATH}",
             httpx.Response(200, headers={"content-type": "text/event-stream"},
                            content=(WIRE / sse).read_bytes()))
    cloud.on("POST", f"{API}/predictions/{PID}/cancel",
             httpx.Response(200, json=wire("replicate_prediction_sdxl_canceled.json")))


def sdxl(cloud: Cloud, *created: str, polls: tuple[str, ...] = ()) -> None:
    cloud.on("GET", f"{API}/models/stability-ai/sdxl/versions/{SDXL.split(':')[1]}",
             httpx.Response(200, json=wire("replicate_version_sdxl.json")))
    cloud.on("POST", f"{API}/predictions",
             *[httpx.Response(201, json=wire(name)) for name in created])
    if polls:
        cloud.on("GET", f"{API}/predictions/{PID}",
                 *[httpx.Response(200, json=wire(name)) for name in polls])
    cloud.on("GET", "https://replicate.delivery/pbxt/f4nlztv3uz1iFC4AEf2wBYQGTezdVeysvtZUtwfsvZOJDN6AC/out-0.png",
             httpx.Response(200, headers={"content-type": "image/png"}, content=png_bytes()))


def turn(model: str, prompt: str = "Tell me a joke", **options) -> Turn:
    provider, local = registry.resolve(model)
    settings = parse_settings(options)
    request = build_request(local, [], [Message.of("user", prompt)], settings, settings.system)
    return Turn(provider, request, model, images=settings.images, timeouts=settings.timeout)


def collect(model: str, prompt: str = "Tell me a joke", **options):
    return run_sync(turn(model, prompt, **options).collect())


# ---- pure functions --------------------------------------------------------------------------


def test_schema_mapping_uses_the_models_own_names():
    schema = wire("replicate_model_llama3.json")["latest_version"]["openapi_schema"]
    props = input_properties(schema)
    request = Request("meta/x", (Message.of("system", "Be terse."), Message.of("user", "Hi")),
                      Options(temperature=0.2, top_p=0.8, max_tokens=64, seed=3,
                              stop=["\n\n", "User:"], extra={"top_k": 5}))
    assert build_input(request, props) == {
        "system_prompt": "Be terse.", "prompt": "Hi", "max_tokens": 64, "temperature": 0.2,
        "top_p": 0.8, "seed": 3, "stop_sequences": "\n\n,User:", "top_k": 5,
    }


def test_max_tokens_goes_under_the_name_the_model_has():
    request = Request("x/y", (Message.of("user", "Hi"),), Options(max_tokens=9, temperature=1.0))
    props = {"prompt": {}, "max_new_tokens": {}}
    assert build_input(request, props) == {"prompt": "Hi", "max_new_tokens": 9}
    assert build_input(request, {"prompt": {}, "max_length": {}})["max_length"] == 9


def test_system_leads_the_prompt_when_the_model_has_no_system_input():
    request = Request("x/y", (Message.of("system", "S"), Message.of("user", "Q")))
    assert build_input(request, {"prompt": {}}) == {"prompt": "S\n\nQ"}


def test_history_flattening():
    msgs = (Message.of("user", "a"), Message.of("assistant", "b"), Message.of("user", "c"))
    assert flatten_messages(msgs)[0] == "User: a\nAssistant: b\nUser: c\nAssistant:"


def test_images_go_into_the_schemas_image_input():
    schema = wire("replicate_version_sdxl.json")["openapi_schema"]
    img = ImagePart(png_bytes(), "image/png")
    request = Request("s/x", (Message("user", (Message.of("user", "cat").parts[0], img)),))
    got = build_input(request, input_properties(schema))
    assert got["image"].startswith("data:image/png;base64,") and got["prompt"] == "cat"
    with pytest.raises(UnsupportedInput, match="takes no image input"):
        build_input(request, {"prompt": {}})


def test_stop_cutter_holds_back_a_possible_start():
    cut = StopCutter(["END"])
    assert [cut.feed(t) for t in ["ab", "cE", "N", "Dxyz"]] == ["", "ab", "c", ""]
    assert cut.stopped
    free = StopCutter(["END"])
    assert free.feed("abcE") == "ab" and free.flush() == "cE"


def test_streaming_is_read_from_the_output_schema():
    assert streams_text(wire("replicate_model_llama3.json")["latest_version"]["openapi_schema"])
    assert not streams_text(wire("replicate_version_sdxl.json")["openapi_schema"])


def test_model_ids():
    assert ReplicateProvider().normalize_model(SDXL) == SDXL
    with pytest.raises(UnknownModel):
        ReplicateProvider().normalize_model("just-a-name")


# ---- streaming text ----------------------------------------------------------------------------


def test_create_via_model_then_stream_with_multiline_tokens(cloud):
    llama(cloud)
    reply = collect("replicate:meta/meta-llama-3-8b-instruct", max_tokens=100, temperature=0.5,
                    system="You are funny.")
    assert reply.text == "Why did the\n\ntomato blush?"
    assert reply.finish_reason == "stop"
    assert cloud.calls() == [
        "GET /v1/models/meta/meta-llama-3-8b-instruct",
        "POST /v1/models/meta/meta-llama-3-8b-instruct/predictions",
        f"GET {STREAM_PATH}",
    ]
    create = cloud.seen[1]
    assert create.headers["authorization"] == f"Bearer {TOKEN}"
    assert "prefer" not in create.headers
    assert cloud.body(1) == {
        "input": {"prompt": "Tell me a joke", "system_prompt": "You are funny.",
                  "max_tokens": 100, "temperature": 0.5},
        "stream": True,
    }
    assert cloud.seen[2].headers["accept"] == "text/event-stream"
    # the stream host is an https host of Replicate's own domain: it gets the token
    assert cloud.seen[2].headers["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize("elsewhere", ["https://evil.example", "http://stream.replicate.com",
                                       "https://replicate.com.evil.example"])
def test_the_token_goes_only_to_replicates_own_hosts(cloud, elsewhere):
    created = wire("replicate_prediction_starting.json")
    created["urls"] = {k: v.replace("https://api.replicate.com", elsewhere)
                       .replace("https://stream.replicate.com", elsewhere)
                       for k, v in created["urls"].items()}
    llama(cloud)
    cloud.routes[f"POST {API}/models/meta/meta-llama-3-8b-instruct/predictions"] = [
        httpx.Response(201, json=created)]
    done = {**created, "status": "succeeded", "output": ["Why", " not?"]}
    cloud.on("GET", f"{API}/predictions/{PID}", httpx.Response(200, json=done))
    reply = collect("replicate:meta/meta-llama-3-8b-instruct")
    assert reply.text == "Why not?"  # polled on the API's own host instead
    hosts = {r.url.host for r in cloud.seen}
    assert hosts == {"api.replicate.com"}  # a host the answer named is not contacted at all
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in cloud.seen)


def test_chunks_arrive_one_by_one(cloud):
    llama(cloud)
    chunks = list(iterate_sync(turn("replicate:meta/meta-llama-3-8b-instruct").text_chunks()))
    assert chunks == ["Why", " did", " the\n", "\ntomato", " blush?"]


def test_error_event_raises_with_the_detail_and_keeps_partial_text(cloud):
    llama(cloud, "replicate_stream_error.txt")
    t = turn("replicate:meta/meta-llama-3-8b-instruct")
    with pytest.raises(ProviderError, match=r"Prediction interrupted; please retry \(code: PA\)"):
        run_sync(t.collect())
    assert t.reply.text == "Once upon"


def test_stop_sequence_cuts_and_cancels(cloud):
    llama(cloud)
    reply = collect("replicate:meta/meta-llama-3-8b-instruct", stop=["tomato"])
    assert reply.text == "Why did the\n\n"
    assert reply.finish_reason == "stop"
    assert cloud.body(1)["input"]["stop_sequences"] == "tomato"
    assert cloud.calls()[-1] == f"POST /v1/predictions/{PID}/cancel"


def test_interrupt_cancels_the_prediction(cloud):
    llama(cloud)
    recorded = (WIRE / "replicate_stream_llama3.txt").read_bytes()
    first = recorded[: recorded.index(b"\n\n") + 2]

    async def still_running():  # the first output event, then a prediction that goes on
        yield first
        await asyncio.Event().wait()

    cloud.routes[f"GET https://stream.replicate.com{STREAM_PATH}"] = [httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=still_running())]
    it = iterate_sync(turn("replicate:meta/meta-llama-3-8b-instruct").text_chunks())
    assert next(it) == "Why"
    it.close()
    assert cloud.calls()[-1] == f"POST /v1/predictions/{PID}/cancel"


def test_a_finished_stream_is_not_cancelled(cloud):
    llama(cloud)
    collect("replicate:meta/meta-llama-3-8b-instruct")
    assert not [c for c in cloud.calls() if c.endswith("/cancel")]


# ---- non-streaming models: Prefer: wait and polling ------------------------------------------


def test_create_via_version_with_prefer_wait_and_image_url_output(cloud):
    sdxl(cloud, "replicate_prediction_sdxl_succeeded.json")
    reply = collect(f"replicate:{SDXL}", "an astronaut riding a unicorn", seed=1234,
                    input={"width": 768, "height": 768})
    create = cloud.seen[1]
    # Replicate answers within 55 s, before our own 60 s first-byte limit runs out
    assert create.url.path == "/v1/predictions" and create.headers["prefer"] == "wait=55"
    assert cloud.body(1) == {"input": {"prompt": "an astronaut riding a unicorn", "seed": 1234,
                                       "width": 768, "height": 768},
                             "version": SDXL.split(":")[1]}
    fetch = cloud.seen[2]
    assert fetch.url.host == "replicate.delivery"
    assert "authorization" not in fetch.headers  # the token stays with api.replicate.com
    assert reply.images[0].getpixel((0, 0)) == (10, 200, 30)
    assert reply.image_parts[0].url.startswith("https://replicate.delivery/")
    assert reply.text == ""


def test_prefer_wait_follows_the_first_byte_limit(cloud):
    sdxl(cloud, "replicate_prediction_sdxl_succeeded.json")
    collect(f"replicate:{SDXL}", "cat", timeout={"first_byte": 20})
    assert cloud.seen[1].headers["prefer"] == "wait=15"
    collect(f"replicate:{SDXL}", "cat", timeout={"first_byte": 300})
    assert cloud.seen[-2].headers["prefer"] == "wait"


def test_prefer_wait_answered_processing_with_output_is_the_result(cloud):
    # the wait ran out as the model finished: status "processing", output already there
    sdxl(cloud, "replicate_prediction_sdxl_processing_with_output.json",
         polls=("replicate_prediction_sdxl_failed.json",))  # polling again would fail
    reply = collect(f"replicate:{SDXL}", "cat")
    assert f"GET /v1/predictions/{PID}" not in cloud.calls("GET")
    assert len(reply.images) == 1 and reply.error is None and reply.finish_reason == "stop"
    assert not [c for c in cloud.calls() if c.endswith("/cancel")]


def test_polls_until_succeeded(cloud):
    sdxl(cloud, "replicate_prediction_sdxl_processing.json",
         polls=("replicate_prediction_sdxl_processing.json",
                "replicate_prediction_sdxl_succeeded.json"))
    reply = collect(f"replicate:{SDXL}", "cat")
    assert cloud.calls("GET").count(f"GET /v1/predictions/{PID}") == 2
    assert len(reply.images) == 1


def test_interrupt_while_polling_cancels_the_prediction(cloud):
    sdxl(cloud, "replicate_prediction_sdxl_processing.json",
         polls=("replicate_prediction_sdxl_processing.json",))  # never finishes
    cloud.on("POST", f"{API}/predictions/{PID}/cancel",
             httpx.Response(200, json=wire("replicate_prediction_sdxl_canceled.json")))
    poll = f"GET /v1/predictions/{PID}"

    async def interrupt_after_two_polls():
        task = asyncio.ensure_future(turn(f"replicate:{SDXL}", "cat").collect())
        while cloud.calls("GET").count(poll) < 2:
            await asyncio.sleep(0)
        task.cancel()  # what the bridge does on KeyboardInterrupt
        await asyncio.gather(task, return_exceptions=True)

    run_sync(interrupt_after_two_polls())
    assert cloud.calls()[-1] == f"POST /v1/predictions/{PID}/cancel"
    assert cloud.calls("POST").count("POST /v1/predictions") == 1


def test_failed_prediction_raises_with_its_error(cloud):
    sdxl(cloud, "replicate_prediction_sdxl_processing.json",
         polls=("replicate_prediction_sdxl_failed.json",))
    with pytest.raises(ProviderError, match="CUDA out of memory") as info:
        collect(f"replicate:{SDXL}", "cat")
    assert "OutOfMemoryError" in str(info.value)  # the last log line
    assert not [c for c in cloud.calls() if c.endswith("/cancel")]


def test_canceled_prediction_finishes_as_canceled(cloud):
    sdxl(cloud, "replicate_prediction_sdxl_processing.json",
         polls=("replicate_prediction_sdxl_canceled.json",))
    reply = collect(f"replicate:{SDXL}", "cat")
    assert reply.finish_reason == "canceled" and reply.images == []


def test_data_uri_outputs_become_images(cloud):
    import base64

    done = wire("replicate_prediction_sdxl_succeeded.json")
    done["output"] = ["data:image/png;base64," + base64.b64encode(png_bytes((1, 2, 3))).decode()]
    sdxl(cloud)
    cloud.routes[f"POST {API}/predictions"] = [httpx.Response(201, json=done)]
    reply = collect(f"replicate:{SDXL}", "cat")
    assert reply.images[0].getpixel((3, 3)) == (1, 2, 3)
    assert len(cloud.seen) == 2  # no fetch


def test_file_outputs_that_are_not_images(cloud):
    import base64

    done = wire("replicate_prediction_sdxl_succeeded.json")
    wav = "https://replicate.delivery/pbxt/abc/out-0.wav"
    done["output"] = [wav]
    sdxl(cloud)
    cloud.routes[f"POST {API}/predictions"] = [httpx.Response(201, json=done)]
    cloud.on("GET", wav, httpx.Response(200, headers={"content-type": "audio/wav"},
                                        content=b"RIFF\x00\x00\x00\x00WAVEfmt "))
    reply = collect(f"replicate:{SDXL}", "a bell")
    assert reply.images == [] and reply.text == wav + "\n"  # the link, to fetch yourself
    done["output"] = ["data:audio/wav;base64," + base64.b64encode(b"RIFF....WAVE").decode()]
    cloud.routes[f"POST {API}/predictions"] = [httpx.Response(201, json=done)]
    with pytest.raises(ProviderError, match=r"not an image \(audio/wav\)"):
        collect(f"replicate:{SDXL}", "a bell")


def test_image_prompt_reaches_an_image_input(cloud):
    sdxl(cloud, "replicate_prediction_sdxl_succeeded.json")
    collect(f"replicate:{SDXL}", "make it blue", images=[png_bytes()])
    assert cloud.body(1)["input"]["image"].startswith("data:image/png;base64,")


def test_images_to_a_known_text_model_are_refused_before_any_request(cloud):
    with pytest.raises(UnsupportedInput, match="cannot see images"):
        collect("replicate:meta/meta-llama-3-8b-instruct", images=[png_bytes()])
    assert cloud.seen == []


# ---- errors: create is never resent ------------------------------------------------------------


def test_429_on_create_is_reported_with_retry_after_and_not_resent(cloud):
    sdxl(cloud)
    cloud.routes[f"POST {API}/predictions"] = [httpx.Response(429, json=wire("replicate_429.json"))]
    with pytest.raises(RateLimited) as info:
        collect(f"replicate:{SDXL}", "cat")
    assert info.value.retry_after == 2
    assert "throttled" in str(info.value)
    assert cloud.calls("POST") == ["POST /v1/predictions"]


def test_5xx_on_create_is_not_resent(cloud):
    sdxl(cloud)
    cloud.routes[f"POST {API}/predictions"] = [httpx.Response(502, text="bad gateway")]
    with pytest.raises(ProviderError):
        collect(f"replicate:{SDXL}", "cat")
    assert cloud.calls("POST") == ["POST /v1/predictions"]


def test_bad_token_error_never_shows_the_token(cloud):
    body = wire("replicate_401.json")
    body["detail"] += f" ({TOKEN})"
    cloud.on("GET", f"{API}/models/meta/meta-llama-3-8b-instruct", httpx.Response(401, json=body))
    with pytest.raises(AuthenticationError) as info:
        collect("replicate:meta/meta-llama-3-8b-instruct")
    assert TOKEN not in str(info.value) and "REPLICATE_API_TOKEN" in str(info.value)


def test_stream_without_done_is_a_protocol_error(cloud):
    llama(cloud)
    cloud.routes[f"GET https://stream.replicate.com{STREAM_PATH}"] = [
        httpx.Response(200, headers={"content-type": "text/event-stream"},
                       content=b"event: output\ndata: Hi\n\n")]
    with pytest.raises(ProtocolError, match="done"):
        collect("replicate:meta/meta-llama-3-8b-instruct")


# ---- listing ------------------------------------------------------------------------------


def test_models_lists_both_collections_with_capabilities(cloud):
    cloud.routes[f"GET {API}/collections/language-models"] = [
        httpx.Response(200, json=wire("replicate_collection_language_models.json")),
        httpx.Response(200, json=wire("replicate_collection_language_models_page2.json")),
    ]
    cloud.on("GET", f"{API}/collections/text-to-image",
             httpx.Response(200, json=wire("replicate_collection_text_to_image.json")))
    import nbchat

    models = {m.id: m for m in nbchat.models("replicate")}
    arctic = models["replicate:snowflake/snowflake-arctic-instruct"]
    assert arctic.stream and not arctic.image_generation and arctic.key_set
    assert models["replicate:yorickvp/llava-13b"].vision  # page 2, vision from the table
    lightning = models["replicate:bytedance/sdxl-lightning-4step"]
    assert lightning.image_generation and not lightning.stream
    assert "replicate:meta/meta-llama-3-8b-instruct" in models  # the table fills in
    assert cloud.seen[1].url.params["cursor"] == "cD0y"


def test_models_without_a_token_is_the_table(monkeypatch):
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    models = run_sync(ReplicateProvider().list_models())
    assert any(m.image_generation for m in models) and not any(m.key_set for m in models)
