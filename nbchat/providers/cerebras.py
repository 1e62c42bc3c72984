"""`cerebras:` — Cerebras Inference (api.cerebras.ai), the OpenAI-compatible wire at speed.

Cerebras reserves rate-limit budget from `max_completion_tokens`, so a modest one is always
sent; `stop` takes at most 4 strings; image input is limited to PNG/JPEG data URIs.
"""

from __future__ import annotations

from ..core.credentials import Endpoint
from ..core.errors import UnsupportedInput
from ..core.types import ModelInfo, Request
from .protocols.openai_compat import OpenAICompatProvider
from .protocols.openai_wire import Caps

MAX_IMAGES = 5
MAX_IMAGE_BYTES = 10 * 1024 * 1024

#: id -> (tools, json, vision, description)
MODELS: dict[str, tuple[bool, bool, bool, str]] = {
    "llama3.1-70b": (True, True, False, "Llama 3.1 70B"),
    "llama3.1-8b": (True, True, False, "Llama 3.1 8B"),
    "llama-3.3-70b": (True, True, False, "Llama 3.3 70B"),
    "llama-4-scout-17b-16e-instruct": (True, True, False, "Llama 4 Scout"),
    "qwen-3-32b": (True, True, False, "Qwen 3 32B (reasoning)"),
    "gpt-oss-120b": (True, True, False, "gpt-oss 120B (reasoning)"),
}


class CerebrasProvider(OpenAICompatProvider):
    """`cerebras:` — Cerebras Inference at https://api.cerebras.ai/v1, key in `CEREBRAS_API_KEY`.
    Sends `max_completion_tokens` (2048 unless `max_tokens=` is given), at most 4 `stop` strings;
    images: at most 5 per request, PNG or JPEG, up to 10 MB each (`UnsupportedInput` otherwise).
    Wire: https://inference-docs.cerebras.ai/api-reference/chat-completions
    """

    name = "cerebras"
    key_env = "CEREBRAS_API_KEY"
    base_url_env = "CEREBRAS_BASE_URL"
    default_base_url = "https://api.cerebras.ai/v1"
    caps = Caps(max_tokens_field="max_completion_tokens", default_max_tokens=2048, max_stop=4)

    def table(self, endpoint: Endpoint) -> list[ModelInfo]:
        return [
            self.model_entry(m, endpoint, tools=t, json=j, vision=v, description=d)
            for m, (t, j, v, d) in MODELS.items()
        ]

    def live_entry(self, model: str, endpoint: Endpoint) -> ModelInfo:
        # a model the table does not know: whether it takes tools or images is unknown
        return self.model_entry(model, endpoint, tools=None, json=True, vision=None)

    def check_request(self, request: Request) -> None:
        super().check_request(request)
        images = [p for m in request.messages for p in m.images]
        if len(images) > MAX_IMAGES:
            raise UnsupportedInput(f"Cerebras takes at most {MAX_IMAGES} images per request")
        for img in images:
            if img.mime not in ("image/png", "image/jpeg"):
                raise UnsupportedInput(
                    f"Cerebras takes PNG or JPEG images, not {img.mime}; convert it first"
                )
            if len(img.data) > MAX_IMAGE_BYTES:
                raise UnsupportedInput("Cerebras takes images up to 10 MB; make it smaller")
