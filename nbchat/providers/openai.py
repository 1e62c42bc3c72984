"""`openai:` — any OpenAI-compatible endpoint: OpenAI itself, llama.cpp server, vLLM, Ollama,
a self-hosted NIM or an Anyscale deployment.

`OPENAI_BASE_URL` (or `base_url=...`) picks the server; `OPENAI_API_KEY` is needed only for
api.openai.com, since self-hosted servers usually take no key.
"""

from __future__ import annotations

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
    name = "openai"
    key_env = "OPENAI_API_KEY"
    base_url_env = "OPENAI_BASE_URL"
    default_base_url = f"https://{OPENAI_HOST}/v1"
    caps = Caps()

    def needs_key(self, base_url: str | None) -> bool:
        return host_of(base_url or self.default_base_url or "") == OPENAI_HOST

    def caps_for(self, model: str, base_url: str) -> Caps:
        if host_of(base_url) == OPENAI_HOST:
            return Caps(max_tokens_field="max_completion_tokens", strict_schema=False)
        return self.caps

    def known_models(self) -> list[ModelInfo]:
        base = self.base_url() or ""
        if host_of(base) != OPENAI_HOST:
            return []  # a self-hosted server: its models come from GET /models
        return [
            self.model_entry(m, tools=t, json=j, vision=v, description="OpenAI")
            for m, t, j, v in _TABLE
        ]

    def live_entry(self, model: str) -> ModelInfo:
        # a self-hosted OpenAI-compatible server: assume the common features, let it decide
        return self.model_entry(model, tools=True, json=True,
                                description=f"at {self.base_url()}")
