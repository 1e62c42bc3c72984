"""`nvidia:` — the NVIDIA API catalog (integrate.api.nvidia.com) and self-hosted NIM.

Hosted calls need `NVIDIA_API_KEY` (nvapi-...); any other host is a self-hosted NIM, which
needs no key and whose base URL is normalised to end in /v1. What differs from plain OpenAI:
- a capability table per model (`model_type` chat / vlm / nv-vlm, tools, structured output);
- deprecated `playground_` / `ai-` ids map to current ids with a warning;
- nv-vlm models take `image_url` as a plain string and no `stream_options`;
- the length limit goes as `max_tokens` everywhere: not every hosted model takes
  `max_completion_tokens` (langchain-nvidia sends `max_tokens` on the wire for that reason);
- images too large to inline (about 180 KB of base64) go through the NVCF asset upload;
- a request may answer 202 with `NVCF-REQID`: poll the status URL until it is done;
- self-hosted NIM takes a JSON schema as top-level `guided_json`;
- text-to-image models go through the GenAI wire in `protocols.nvidia_genai`;
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from ..core import http
from ..core.credentials import Endpoint
from ..core.errors import ProtocolError, UnknownModel
from ..core.types import Event, ImagePart, ModelInfo, Request
from .protocols import nvidia_genai
from .protocols.nvcf import NVCF_ASSETS, open_polled
from .protocols.openai_compat import OpenAICompatProvider, host_of
from .protocols.openai_wire import Caps, build_body

HOSTED_HOSTS = frozenset({"integrate.api.nvidia.com", "ai.api.nvidia.com",
                          "api.nvcf.nvidia.com"})
INLINE_LIMIT = 180_000  # characters of base64 an inline image may take
ASSET_DESCRIPTION = "nbchat input image"


@dataclass(frozen=True)
class NvModel:
    """One row of the NVIDIA capability table: `model_type` (`chat`, `vlm`, or `nv-vlm`: a
    vision model whose `image_url` is a plain string), tool and structured-output support, and
    the model-specific hosted URL when it has one (vision models on ai.api.nvidia.com).
    """

    model_type: str = "chat"  # chat | vlm | nv-vlm
    tools: bool = False
    structured: bool = False
    endpoint: str | None = None  # a model-specific URL on the hosted catalog
    description: str = ""


_AI = "https://ai.api.nvidia.com/v1"

MODELS: dict[str, NvModel] = {
    "meta/llama-3.1-8b-instruct": NvModel("chat", True, True, description="Llama 3.1 8B"),
    "meta/llama-3.1-70b-instruct": NvModel("chat", True, True, description="Llama 3.1 70B"),
    "meta/llama-3.1-405b-instruct": NvModel("chat", True, True, description="Llama 3.1 405B"),
    "meta/llama-3.3-70b-instruct": NvModel("chat", True, True, description="Llama 3.3 70B"),
    "meta/llama3-70b-instruct": NvModel("chat", False, True, description="Llama 3 70B"),
    "meta/llama2-70b": NvModel("chat", description="Llama 2 70B"),
    "mistralai/mixtral-8x7b-instruct-v0.1": NvModel("chat", False, True,
                                                    description="Mixtral 8x7B"),
    "mistralai/mistral-large-2-instruct": NvModel("chat", True, True,
                                                  description="Mistral Large 2"),
    "nvidia/llama-3.1-nemotron-70b-instruct": NvModel("chat", True, True,
                                                      description="Nemotron 70B"),
    "google/gemma-2-9b-it": NvModel("chat", description="Gemma 2 9B"),
    "meta/llama-3.2-11b-vision-instruct": NvModel(
        "vlm", endpoint=f"{_AI}/gr/meta/llama-3.2-11b-vision-instruct/chat/completions",
        description="Llama 3.2 11B Vision"),
    "meta/llama-3.2-90b-vision-instruct": NvModel(
        "vlm", endpoint=f"{_AI}/gr/meta/llama-3.2-90b-vision-instruct/chat/completions",
        description="Llama 3.2 90B Vision"),
    "microsoft/phi-3-vision-128k-instruct": NvModel(
        "nv-vlm", endpoint=f"{_AI}/vlm/microsoft/phi-3-vision-128k-instruct",
        description="Phi-3 Vision"),
    "nvidia/neva-22b": NvModel("nv-vlm", endpoint=f"{_AI}/vlm/nvidia/neva-22b",
                               description="NeVA 22B"),
}

#: deprecated ids of the old playground -> current ids
DEPRECATED: dict[str, str] = {
    "playground_llama2_70b": "meta/llama2-70b",
    "ai-llama2-70b": "meta/llama2-70b",
    "playground_mixtral_8x7b": "mistralai/mixtral-8x7b-instruct-v0.1",
    "ai-mixtral-8x7b-instruct": "mistralai/mixtral-8x7b-instruct-v0.1",
    "ai-llama3-70b": "meta/llama3-70b-instruct",
    "playground_neva_22b": "nvidia/neva-22b",
    "ai-neva-22b": "nvidia/neva-22b",
    "ai-phi-3-vision-128k-instruct": "microsoft/phi-3-vision-128k-instruct",
    "playground_gemma_2_9b": "google/gemma-2-9b-it",
}


def normalize_base_url(url: str) -> str:
    """NIM base URLs end in /v1 (`http://localhost:8000` -> `http://localhost:8000/v1`)."""
    url = url.rstrip("/")
    url = url.removesuffix("/chat/completions")
    return url if url.endswith("/v1") else f"{url}/v1"


def is_hosted(base_url: str) -> bool:
    """Whether `base_url` is one of NVIDIA's hosts (`HOSTED_HOSTS`), not a self-hosted NIM."""
    return host_of(base_url) in HOSTED_HOSTS


def needs_upload(part: ImagePart) -> bool:
    """Whether the image's base64 form exceeds `INLINE_LIMIT` (180 000 characters, about 180 KB),
    above which the hosted API wants an NVCF asset instead of an inline data URI
    (https://docs.api.nvidia.com/nim/reference/ model pages).
    """
    return (len(part.data) + 2) // 3 * 4 > INLINE_LIMIT


def asset_ref(part: ImagePart, asset_id: str) -> str:
    """The URL that refers to an uploaded NVCF asset: `data:<mime>;asset_id,<asset_id>`."""
    return f"data:{part.mime};asset_id,{asset_id}"


class NvidiaProvider(OpenAICompatProvider):
    """`nvidia:` — the NVIDIA API catalog (hosted at https://integrate.api.nvidia.com/v1, key in
    `NVIDIA_API_KEY`) or a self-hosted NIM (any other base URL, e.g. `NVIDIA_BASE_URL`; no key).
    Text-to-image models go to `protocols.nvidia_genai`; the module docstring says what else
    differs from plain OpenAI.
    """

    name = "nvidia"
    key_env = "NVIDIA_API_KEY"
    base_url_env = "NVIDIA_BASE_URL"
    default_base_url = "https://integrate.api.nvidia.com/v1"

    def normalize_base_url(self, url: str) -> str:
        return normalize_base_url(url)

    def needs_key(self, base_url: str | None) -> bool:
        return is_hosted(base_url or self.default_base_url or "")

    # ---- models --------------------------------------------------------------------------

    def normalize_model(self, model: str) -> str:
        if model in DEPRECATED or model.startswith(("playground_", "ai-")):
            new = DEPRECATED.get(model)
            if new is None:
                raise UnknownModel(f"nvidia:{model}", [m.id for m in self.known_models()])
            warnings.warn(
                f"nvidia:{model} is a deprecated id; using nvidia:{new} (write that instead)",
                FutureWarning, stacklevel=2,
            )
            return new
        return model

    def table(self, endpoint: Endpoint) -> list[ModelInfo]:
        table = [self._entry(m, spec, endpoint) for m, spec in MODELS.items()]
        return table + nvidia_genai.known_models(key_set=endpoint.key_set)

    def _entry(self, model: str, spec: NvModel, endpoint: Endpoint) -> ModelInfo:
        return self.model_entry(
            model, endpoint, tools=spec.tools, json=spec.structured,
            vision=spec.model_type in ("vlm", "nv-vlm"),
            description=f"{spec.description} ({spec.model_type})",
        )

    async def list_models(self, endpoint: Endpoint | None = None) -> list[ModelInfo]:
        """`GET {base}/models`, plus the text-to-image models on the hosted catalog (its
        listing leaves them out)."""
        endpoint = endpoint or self.endpoint()
        models = await super().list_models(endpoint)
        if is_hosted(self.base_of(endpoint)):
            have = {m.id for m in models}
            models += [m for m in nvidia_genai.known_models(key_set=endpoint.key_set)
                       if m.id not in have]
        return models

    # ---- wire ----------------------------------------------------------------------------

    def caps_for(self, model: str, base_url: str) -> Caps:
        """The wire form for `model` at `base_url`: `max_tokens` everywhere; a JSON schema as a
        `json_schema` response format when hosted, as top-level `guided_json` for a NIM; nv-vlm
        models take `image_url` as a plain string and no `stream_options`.
        """
        spec = MODELS.get(model, NvModel())
        hosted = is_hosted(base_url)
        nv_vlm = spec.model_type == "nv-vlm"
        return Caps(
            include_usage=not nv_vlm,
            # hosted and self-hosted alike: not every hosted model takes max_completion_tokens,
            # and langchain-nvidia (NVIDIA's own client) sends max_tokens for every model
            max_tokens_field="max_tokens",
            schema_style="json_schema" if hosted else "guided_json",
            image_url_string=nv_vlm,
        )

    def chat_url(self, model: str, base_url: str) -> str:
        """The model's own hosted endpoint when it has one and the base URL is the default one;
        else `{base_url}/chat/completions`.
        """
        spec = MODELS.get(model)
        if spec is not None and spec.endpoint and base_url == self.default_base_url:
            # the hosted catalog serves this model at its own URL
            return spec.endpoint
        return f"{base_url}/chat/completions"

    async def prepare(
        self, client: httpx.AsyncClient, request: Request, caps: Caps, endpoint: Endpoint
    ) -> tuple[dict[str, Any], dict[str, str]]:
        headers = self.headers()
        big = [p for m in request.messages for p in m.images if needs_upload(p)]
        if not big or endpoint.api_key is None:  # a self-hosted NIM takes any size inline
            return build_body(request, caps), headers
        refs: dict[int, str] = {}
        ids: list[str] = []
        for part in big:
            asset_id = await self.upload_asset(client, part, endpoint)
            refs[id(part)] = asset_ref(part, asset_id)
            ids.append(asset_id)
        headers["NVCF-INPUT-ASSET-REFERENCES"] = ",".join(ids)
        return build_body(request, caps, image_url=lambda p: refs.get(id(p))), headers

    async def upload_asset(
        self, client: httpx.AsyncClient, part: ImagePart, endpoint: Endpoint
    ) -> str:
        """Create an NVCF asset (`POST {NVCF_ASSETS}` with the key), PUT the bytes to its
        presigned upload URL (no key), return the asset id. Wire:
        https://docs.api.nvidia.com/cloud-functions/reference/createasset (the upload steps are
        unconfirmed in vendor docs)."""
        data = await http.request_json(
            client, "POST", NVCF_ASSETS, provider=self.name, key_env=self.key_env,
            json_body={"contentType": part.mime, "description": ASSET_DESCRIPTION},
            headers={"Accept": "application/json"}, auth=http.bearer_auth(endpoint.api_key),
        )
        try:
            upload_url, asset_id = data["uploadUrl"], str(data["assetId"])
        except (TypeError, KeyError):
            raise ProtocolError("NVIDIA's asset service answered without uploadUrl/assetId") \
                from None
        response = await http.open_stream(
            client, "PUT", upload_url, provider=self.name, content=part.data,
            headers={"Content-Type": part.mime,
                     "x-amz-meta-nvcf-asset-description": ASSET_DESCRIPTION},
        )
        await response.aclose()
        return asset_id

    async def open_response(
        self,
        client: httpx.AsyncClient,
        url: str,
        body: dict[str, Any],
        headers: dict[str, str],
        endpoint: Endpoint,
    ) -> httpx.Response:
        """POST with retries; a `202` + `NVCF-REQID` answer is polled until done
        (`protocols.nvcf.open_polled`). The response's body is unread; the caller closes it.
        """
        return await open_polled(
            client, url, body, headers, auth=http.bearer_auth(endpoint.api_key),
            html_error=lambda s, b: self.html_error(s, b, url),
        )

    # ---- streaming -------------------------------------------------------------------------

    async def stream(self, request: Request, endpoint: Endpoint) -> AsyncIterator[Event]:
        """Chat models as in `OpenAICompatProvider.stream`; text-to-image models through
        `nvidia_genai.stream_image` (one `ImageEvent` per image, then `Done`)."""
        event: Event
        if nvidia_genai.is_image_model(request.model):
            client = http.get_client(self.transport)
            auth = http.bearer_auth(endpoint.api_key)
            async for event in nvidia_genai.stream_image(client, request, auth):
                yield event
            return
        async for event in super().stream(request, endpoint):
            yield event
