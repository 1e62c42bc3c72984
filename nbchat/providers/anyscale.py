"""`anyscale:` — an Anyscale deployment (an OpenAI-compatible endpoint the user runs).

The shared Anyscale Endpoints service ended on 2024-08-01; its old URL now answers with an
HTML page, which is reported as `ServiceGone` with what to do, not as a JSON error.
"""

from __future__ import annotations

from ..core.credentials import Endpoint
from ..core.errors import NbchatError, ProtocolError, ServiceGone
from ..core.types import ModelInfo
from .protocols.openai_compat import OpenAICompatProvider, host_of
from .protocols.openai_wire import Caps

SHARED_HOST = "api.endpoints.anyscale.com"
GONE = (
    "the shared Anyscale Endpoints service has shut down; "
    "set ANYSCALE_BASE_URL to your deployment"
)

#: the former shared models: id -> (tools, description)
MODELS: dict[str, tuple[bool, str]] = {
    "meta-llama/Llama-2-7b-chat-hf": (False, "Llama 2 7B chat"),
    "meta-llama/Llama-2-13b-chat-hf": (False, "Llama 2 13B chat"),
    "meta-llama/Llama-2-70b-chat-hf": (False, "Llama 2 70B chat"),
    "meta-llama/Meta-Llama-3-8B-Instruct": (False, "Llama 3 8B instruct"),
    "mistralai/Mixtral-8x7B-Instruct-v0.1": (True, "Mixtral 8x7B instruct"),
}


class AnyscaleProvider(OpenAICompatProvider):
    """`anyscale:` — an Anyscale deployment at `ANYSCALE_BASE_URL` (or LangChain's
    `ANYSCALE_API_BASE`), OpenAI-compatible; a key (`ANYSCALE_API_KEY`) is required only by the
    former shared host. JSON schemas go as `{"type": "json_object", "schema": ...}`.
    """

    name = "anyscale"
    key_env = "ANYSCALE_API_KEY"
    base_url_env = "ANYSCALE_BASE_URL"
    base_url_env_aliases = ("ANYSCALE_API_BASE",)  # LangChain's name for the same setting
    default_base_url = f"https://{SHARED_HOST}/v1"
    # its JSON mode took {"type": "json_object", "schema": {...}}
    caps = Caps(schema_style="json_object")

    def needs_key(self, base_url: str | None) -> bool:
        return host_of(base_url or self.default_base_url or "") == SHARED_HOST

    def html_error(self, status: int, body: bytes, url: str = "") -> NbchatError:
        """`ServiceGone` (saying to set ANYSCALE_BASE_URL) when the former shared host answers with
        its HTML notice; for any other host a ProtocolError saying to check ANYSCALE_BASE_URL.
        """
        if host_of(url) == SHARED_HOST:
            return ServiceGone(GONE, status=status, provider=self.name)
        return ProtocolError(
            f"anyscale answered with an HTML page instead of JSON (HTTP {status}); check "
            "ANYSCALE_BASE_URL: it should be your deployment's API root, usually ending in /v1"
        )

    def table(self, endpoint: Endpoint) -> list[ModelInfo]:
        return [
            self.model_entry(m, endpoint, tools=t, json=True, description=d)
            for m, (t, d) in MODELS.items()
        ]

    def live_entry(self, model: str, endpoint: Endpoint) -> ModelInfo:
        # a model the table does not know: whether it takes tools or images is unknown
        return self.model_entry(model, endpoint, tools=None, json=True, vision=None,
                                description=f"at {endpoint.base_url}")
