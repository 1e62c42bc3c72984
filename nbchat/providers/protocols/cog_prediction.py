"""The Cog prediction protocol, spoken by Replicate's API and by a self-hosted Cog server.

A Cog model describes its inputs and output in an OpenAPI schema (`components.schemas.Input`
and `Output`; https://cog.run/http/ and https://replicate.com/docs/reference/http). This module
holds what both providers share, pure except for image fetches and cancels:
- `input_properties` / `output_schema` / `streams_text` / `outputs_files`: read that schema;
- `flatten_messages` / `build_input`: a chat `Request` as a prediction's `input`, on the model's
  own field names (Llama-style names when the schema is unknown);
- `StopCutter`, `Outputs`, `final_events`: output items as events, text cut at stop sequences,
  images fetched or decoded from data URIs;
- `failure`, `cancel_quietly`, `finish_reason`: a failed, cancelled or finished prediction.

History is flattened into one prompt, since these models take a single string:

    User: first question
    Assistant: first answer
    User: the new prompt
    Assistant:

A single user message is sent as it is. System messages go to `system_prompt` when the model
takes one, else they lead the prompt. Models whose output is a file (image models) get only
the last user message: they draw a prompt, they do not converse.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from ...core import http
from ...core.errors import BadOption, ProviderError, UnsupportedInput
from ...core.images import from_bytes, parse_data_uri
from ...core.types import Done, Event, ImageEvent, ImagePart, Message, Request, TextDelta

TERMINAL = frozenset({"succeeded", "failed", "canceled"})
PROMPT_KEYS = ("prompt", "text", "input", "question", "message")
SYSTEM_KEYS = ("system_prompt", "system_message", "system")
MAX_TOKEN_KEYS = ("max_tokens", "max_new_tokens", "max_length", "max_completion_tokens")
IMAGE_KEYS = ("image", "input_image", "image_input", "image_url", "img", "images",
              "input_images")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")
CANCEL_TIMEOUT = 5.0


# ---- the model's schema ---------------------------------------------------------------------


def input_properties(openapi: dict[str, Any] | None) -> dict[str, dict[str, Any]] | None:
    """The model's input fields, or None when the schema is unknown."""
    if not isinstance(openapi, dict):
        return None
    schema = (openapi.get("components") or {}).get("schemas", {}).get("Input")
    if not isinstance(schema, dict):
        return None
    return dict(schema.get("properties") or {})


def output_schema(openapi: dict[str, Any] | None) -> dict[str, Any]:
    """The model's `components.schemas.Output` schema; {} when it is unknown."""
    if not isinstance(openapi, dict):
        return {}
    out = (openapi.get("components") or {}).get("schemas", {}).get("Output")
    return out if isinstance(out, dict) else {}


def streams_text(openapi: dict[str, Any] | None) -> bool:
    """Replicate streams a model whose Output is an iterator array."""
    out = output_schema(openapi)
    return out.get("type") == "array" and out.get("x-cog-array-type") == "iterator"


def outputs_files(openapi: dict[str, Any] | None) -> bool:
    """Whether the model's output (or each item of an array output) is a `format: uri` string,
    i.e. a file such as an image (as in tests/wire/replicate_version_sdxl.json).
    """
    out = output_schema(openapi)
    item = out.get("items") if out.get("type") == "array" else out
    return isinstance(item, dict) and item.get("format") == "uri"


def _first(keys: Sequence[str], props: dict[str, Any]) -> str | None:
    return next((k for k in keys if k in props), None)


# ---- messages and options -> model input ---------------------------------------------------


def flatten_messages(
    messages: Sequence[Message], history: bool = True
) -> tuple[str, str, tuple[ImagePart, ...]]:
    """(prompt, system text, images); see the module docstring."""
    system = "\n\n".join(m.text for m in messages if m.role == "system" and m.text)
    turns = [m for m in messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user":
        raise UnsupportedInput("the conversation must end with a user message")
    if not history:
        return turns[-1].text, "", turns[-1].images
    images = turns[-1].images
    if any(m.images for m in turns[:-1]):
        images = tuple(i for m in turns for i in m.images)
    if len(turns) == 1:
        return turns[0].text, system, images
    lines = [f"{'User' if m.role == 'user' else 'Assistant'}: {m.text}" for m in turns]
    return "\n".join(lines) + "\nAssistant:", system, images


def build_input(
    request: Request, props: dict[str, dict[str, Any]] | None, *, history: bool = True
) -> dict[str, Any]:
    """The prediction's `input`, mapped onto the model's own field names.

    With no schema (None) the usual Llama-style names are used. `history=False` (image
    models) sends the last user message alone.
    """
    prompt, system, images = flatten_messages(request.messages, history)
    o = request.options
    known = props if props is not None else {
        k: {} for k in ("prompt", "system_prompt", "max_tokens", "temperature", "top_p", "seed",
                        "stop_sequences")
    }
    inp: dict[str, Any] = {}
    sys_key = _first(SYSTEM_KEYS, known)
    if system and sys_key is None:
        prompt = f"{system}\n\n{prompt}"
    elif system and sys_key:
        inp[sys_key] = system
    inp[_first(PROMPT_KEYS, known) or "prompt"] = prompt
    if o.max_tokens is not None and (key := _first(MAX_TOKEN_KEYS, known)):
        inp[key] = o.max_tokens
    for name, value in (("temperature", o.temperature), ("top_p", o.top_p), ("seed", o.seed)):
        if value is not None and name in known:
            inp[name] = value
    if o.stop and "stop_sequences" in known:
        inp["stop_sequences"] = ",".join(o.stop)
    if images:
        key = _first(IMAGE_KEYS, known) if props is not None else None
        if key is None:
            raise UnsupportedInput(
                f"this model takes no image input (its inputs: {', '.join(known) or 'unknown'}); "
                "leave out images=..., or pass the image yourself with input={'<name>': ...}"
            )
        if known[key].get("type") == "array":
            inp[key] = [i.data_uri() for i in images]
        elif len(images) > 1:
            raise UnsupportedInput(f"this model takes one image ({key!r}); give only one")
        else:
            inp[key] = images[0].data_uri()
    inp.update(o.extra)
    return inp


# ---- outputs -> events ----------------------------------------------------------------------


class StopCutter:
    """Cuts text at the first stop sequence, even one split across chunks.

    Text that could be the start of a stop sequence is held back until the next chunk.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.buf = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The part of the text so far that is safe to show: all of it up to the first stop
        sequence (then `stopped` is set and the rest discarded; callers stop feeding), or all
        but the last `len(longest stop) - 1` characters, held back for the next call. With no
        stop sequences, `text` itself.
        """
        if not self.stops:
            return text
        self.buf += text
        hits = [i for i in (self.buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            out = self.buf[: min(hits)]
            self.buf = ""
            self.stopped = True
            return out
        cut = len(self.buf) - self.hold
        if cut <= 0:
            return ""
        out, self.buf = self.buf[:cut], self.buf[cut:]
        return out

    def flush(self) -> str:
        """The held-back text, at the end of the output; the cutter is empty afterwards."""
        out, self.buf = self.buf, ""
        return out


def is_image_ref(value: Any, files: bool) -> bool:
    """Whether an output item is an image: a data URI, or a URL of a file output."""
    if not isinstance(value, str):
        return False
    if value.startswith("data:"):
        return value.startswith("data:image/") or files
    if value.startswith(("http://", "https://")) and "\n" not in value:
        return files or value.split("?", 1)[0].lower().endswith(IMAGE_EXTENSIONS)
    return False


def output_items(output: Any) -> list[Any]:
    """A prediction's `output` as a list of items: [] for None, a list as is, else `[output]`."""
    if output is None:
        return []
    return list(output) if isinstance(output, list) else [output]


class Outputs:
    """Turns output items into events: text through the stop cutter, images fetched."""

    def __init__(self, client: httpx.AsyncClient, stops: Sequence[str], files: bool,
                 provider: str, auth: httpx.Auth | None = None,
                 auth_host: str | None = None) -> None:
        """`auth` is sent only with image fetches from `auth_host` (the API's own host)."""
        self.client = client
        self.cutter = StopCutter(stops)
        self.files = files
        self.provider = provider
        self.auth = auth
        self.auth_host = auth_host

    @property
    def stopped(self) -> bool:
        """Whether a stop sequence has been seen; later items give no events."""
        return self.cutter.stopped

    async def events(self, item: Any) -> list[Event]:
        """The events of one output item: an `ImageEvent` for an image (a data URI, or a URL of a
        file output, fetched), the URL as text for a file that is not an image, else a `TextDelta`
        (non-strings as JSON) cut at stop sequences; [] after a stop.

        Raises ProviderError for a `data:` file that is not an image or an image URL answering
        HTTP >= 400 (Replicate's delivery URLs expire), ConnectionFailed when the fetch fails.
        """
        if self.stopped:
            return []
        if is_image_ref(item, self.files):
            part = await self.image(item)
            if part is not None:
                return [ImageEvent(part)]
            return [TextDelta(f"{item}\n")]  # a file that is not an image: its URL, as text
        if not isinstance(item, str):
            item = json.dumps(item)
        text = self.cutter.feed(item)
        return [TextDelta(text)] if text else []

    def flush(self) -> list[Event]:
        """The held-back text as a last `TextDelta` ([] after a stop or when nothing is held)."""
        text = self.cutter.flush()
        return [TextDelta(text)] if text and not self.stopped else []

    async def image(self, ref: str) -> ImagePart | None:
        """The image a data URI or URL holds; None for a URL of a file that is not an image."""
        if ref.startswith("data:"):
            try:
                return parse_data_uri(ref)
            except BadOption:
                kind = ref[5:].split(";", 1)[0].split(",", 1)[0] or "of unknown type"
                raise ProviderError(
                    f"the model returned a file that is not an image ({kind}); nbchat shows "
                    "text and images only", provider=self.provider) from None
        url = httpx.URL(ref)
        auth = self.auth if self.auth_host and url.host == self.auth_host else None
        try:
            resp = await self.client.get(url, auth=auth, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise http.transport_error(exc, url, self.provider) from None
        if resp.status_code >= 400:
            raise ProviderError(
                f"could not fetch the output image {url.host}{url.path} "
                f"(HTTP {resp.status_code}); it may have expired: run the prediction again",
                provider=self.provider,
            )
        try:
            part = from_bytes(resp.content)
        except BadOption:
            return None
        return ImagePart(part.data, part.mime, url=ref)


def finish_reason(status: str) -> str:
    """The `Done` finish reason for a prediction status: `succeeded` -> `stop`, `canceled` ->
    `canceled`, any other status as it is (https://replicate.com/docs/reference/http).
    """
    return {"succeeded": "stop", "canceled": "canceled"}.get(status, status)


async def final_events(pred: dict[str, Any], outputs: Outputs,
                       provider: str) -> AsyncIterator[Event]:
    """The events of a finished prediction: its outputs, then Done; a failed one raises."""
    if pred.get("status") == "failed":
        raise failure(pred, provider)
    for item in output_items(pred.get("output")):
        for ev in await outputs.events(item):
            yield ev
    for ev in outputs.flush():
        yield ev
    yield Done("stop" if outputs.stopped else finish_reason(str(pred.get("status"))))


def failure(pred: dict[str, Any], provider: str) -> ProviderError:
    """The ProviderError for a failed prediction: its `error` (a dict's `detail`, or the dict
    as JSON) and the last line of its `logs` (200 characters at most) as a hint
    (tests/wire/replicate_prediction_sdxl_failed.json).
    """
    err = pred.get("error") or "the prediction failed"
    if isinstance(err, dict):
        err = err.get("detail") or json.dumps(err)
    logs = (pred.get("logs") or "").strip().splitlines()
    hint = f" (last log line: {logs[-1][:200]})" if logs else ""
    return ProviderError(f"{err}{hint}", provider=provider)


async def cancel_quietly(client: httpx.AsyncClient, url: str,
                         auth: httpx.Auth | None = None) -> bool:
    """POST a cancel, best effort and bounded in time (`CANCEL_TIMEOUT` seconds); whether
    the server took it. Never raises."""
    try:
        request = client.post(url, auth=auth or httpx.USE_CLIENT_DEFAULT)  # the client has none
        resp = await asyncio.wait_for(request, CANCEL_TIMEOUT)
        return resp.status_code < 400
    except (Exception, asyncio.CancelledError):  # nothing more to do: the user already stopped
        return False
