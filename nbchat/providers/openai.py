"""`openai:` — any OpenAI-compatible endpoint: OpenAI itself, llama.cpp server, vLLM, Ollama,
a self-hosted NIM or an Anyscale deployment.

`base_url=...`, `%config ChatMagics.base_urls = {"openai": ...}` or `OPENAI_BASE_URL` picks the
server; a key (`api_key=...`, `%config ChatMagics.api_keys`, `OPENAI_API_KEY`) is needed only for
api.openai.com, since self-hosted servers usually take none (one given is sent all the same).
"""

from __future__ import annotations

from ..core.credentials import Endpoint
from ..core.types import ModelInfo
from .protocols.openai_compat import OpenAICompatProvider, host_of
from .protocols.openai_wire import Caps

OPENAI_HOST = "api.openai.com"

#: (id, tools, json, vision) of OpenAI's own models; other servers' models come from GET /models
_TABLE = [
    ("gpt-4o-mini", True, True, True),
    ("gpt-4o", True, True, True),
    ("gpt-4.1-mini", True, True, True),
    ("gpt-4.1", True, True, True),
]


class OpenAIProvider(OpenAICompatProvider):
    """`openai:` — api.openai.com (`OPENAI_API_KEY`) or any OpenAI-compatible server set by
    `OPENAI_BASE_URL` / `base_url=` (keyless unless the host is api.openai.com).
    Wire: https://platform.openai.com/docs/api-reference/chat/create
    """

    name = "openai"
    key_env = "OPENAI_API_KEY"
    base_url_env = "OPENAI_BASE_URL"
    default_base_url = f"https://{OPENAI_HOST}/v1"
    caps = Caps()

    def needs_key(self, base_url: str | None) -> bool:
        return host_of(base_url or self.default_base_url or "") == OPENAI_HOST

    def caps_for(self, model: str, base_url: str) -> Caps:
        """api.openai.com takes `max_completion_tokens` (`max_tokens` is deprecated there); other
        servers get the common OpenAI-compatible form (`max_tokens`).
        """
        if host_of(base_url) == OPENAI_HOST:
            return Caps(max_tokens_field="max_completion_tokens", strict_schema=False)
        return self.caps

    def table(self, endpoint: Endpoint) -> list[ModelInfo]:
        if host_of(endpoint.base_url or "") != OPENAI_HOST:
            return []  # a self-hosted server: its models come from GET /models
        return [
            self.model_entry(m, endpoint, tools=t, json=j, vision=v, description="OpenAI")
            for m, t, j, v in _TABLE
        ]

    def live_entry(self, model: str, endpoint: Endpoint) -> ModelInfo:
        # a self-hosted OpenAI-compatible server: JSON mode is common; tools and vision depend
        # on the model it loaded, which its listing does not say (unknown, the server decides)
        return self.model_entry(model, endpoint, tools=None, json=True, vision=None,
                                description=f"at {endpoint.base_url}")
