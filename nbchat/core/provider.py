"""The provider interface: one async streaming method, plus model listing and key handling.

A provider knows nothing about notebooks. It turns a `Request` into a stream of events
(`TextDelta`, `ToolCallEvent`, `ImageEvent`, then one `Done`) and raises errors from
`nbchat.core.errors` when something goes wrong.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import ClassVar

from .errors import MissingKey, UnsupportedInput, UsageError, remember_secret
from .types import Event, ModelInfo, Request


class Provider:
    #: the prefix in "provider:model"
    name: ClassVar[str] = ""
    #: environment variable holding the key; None for providers that never need one
    key_env: ClassVar[str | None] = None
    #: environment variable holding the base URL
    base_url_env: ClassVar[str | None] = None
    default_base_url: ClassVar[str | None] = None

    # ---- configuration ----------------------------------------------------------------

    def base_url(self, explicit: str | None = None) -> str | None:
        url = explicit or (os.environ.get(self.base_url_env) if self.base_url_env else None)
        return (url or self.default_base_url or "").rstrip("/") or None

    def needs_key(self, base_url: str | None) -> bool:
        """Whether a request to this base URL needs a key (self-hosted endpoints often do not)."""
        return self.key_env is not None

    def key_set(self) -> bool:
        return bool(self.key_env and os.environ.get(self.key_env))

    def api_key(self, explicit: str | None = None, base_url: str | None = None) -> str | None:
        key = explicit or (os.environ.get(self.key_env) if self.key_env else None)
        if key:
            remember_secret(key)
            key = key.strip()  # a key read from a file often ends in a newline
            remember_secret(key)
            if not (key.isascii() and key.isprintable()) or " " in key:
                # httpx would refuse the header with the key's text in its message
                where = f"in {self.key_env} " if self.key_env and not explicit else ""
                raise UsageError(
                    f"the {self.name} API key {where}has spaces, line breaks or non-ASCII "
                    "characters inside; copy it again"
                )
            return key
        if self.key_env and self.needs_key(base_url):
            raise MissingKey(self.name, self.key_env)
        return None

    # ---- models -----------------------------------------------------------------------

    def known_models(self) -> list[ModelInfo]:
        """The capability table: models known without asking the network."""
        return []

    async def list_models(
        self, *, api_key: str | None = None, base_url: str | None = None
    ) -> list[ModelInfo]:
        """Live listing merged with the capability table; the table alone by default."""
        return self.known_models()

    def model_info(self, model: str) -> ModelInfo | None:
        for info in self.known_models():
            if info.name == model:
                return info
        return None

    def normalize_model(self, model: str) -> str:
        """Map aliases or deprecated ids to the current id (may warn); raise UnknownModel."""
        return model

    def check_request(self, request: Request) -> None:
        """Refuse what the model cannot take (images to a text-only model), before any I/O."""
        info = self.model_info(request.model)
        if info is not None and not info.vision and any(m.images for m in request.messages):
            raise UnsupportedInput(
                f"{info.id} cannot see images; pick a vision model (see %models) "
                "or leave out images=..."
            )

    # ---- the one streaming method --------------------------------------------------------

    def stream(self, request: Request) -> AsyncIterator[Event]:
        """Run one request: an async iterator of events.

        Yields `TextDelta`s (text in order), `ToolCallEvent`s, `ImageEvent`s, then exactly one
        `Done` (finish reason, `Usage` in tokens) last. Raises `nbchat.core.errors` types
        (`ProviderError`, `ConnectionFailed`, `ProtocolError`, `MissingKey`, `UsageError`);
        never `ErrorEvent` (the `Turn` turns errors into events for front ends that want them).
        Closing the iterator must stop the work (cancel the HTTP stream or the generation).
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
