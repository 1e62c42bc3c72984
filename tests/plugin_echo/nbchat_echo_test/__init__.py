"""An nbchat provider that echoes the prompt, written against nbchat's public interface only.

Models: `echo:plain` gives back the words of the last user message, `echo:upper` the same
upper-cased. A reply is `echo: <words>`, streamed one word per `TextDelta`; `max_tokens` cuts it
after that many words (finish reason `length`); usage counts words in and out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import nbchat
from nbchat import Done, Endpoint, Event, ModelInfo, Provider, Request, TextDelta, Usage

MODELS = {"plain": "echoes the prompt", "upper": "echoes the prompt in capitals"}


class EchoProvider(Provider):
    name = "echo"

    def known_models(self) -> list[ModelInfo]:
        return [ModelInfo(id=f"echo:{m}", provider="echo", key_set=True, description=d)
                for m, d in MODELS.items()]

    def normalize_model(self, model: str) -> str:
        if model not in MODELS:
            raise nbchat.errors.UnknownModel(f"echo:{model}", [f"echo:{m}" for m in MODELS])
        return model

    async def stream(self, request: Request, endpoint: Endpoint) -> AsyncIterator[Event]:
        prompt = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
        words = ["echo:", *prompt.split()]
        if request.model == "upper":
            words = [w.upper() for w in words]
        limit = request.options.max_tokens
        sent = words[:limit] if limit else words
        for i, word in enumerate(sent):
            yield TextDelta(word if i == 0 else f" {word}")
        finish = "length" if len(sent) < len(words) else "stop"
        yield Done(finish, Usage(len(prompt.split()), len(sent)))
