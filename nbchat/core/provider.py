"""The provider interface: one async streaming method, plus model listing.

A provider knows nothing about notebooks. It turns a `Request` into a stream of events
(`TextDelta`, `ToolCallEvent`, `ImageEvent`, then one `Done`) and raises errors from
`nbchat.core.errors` when something goes wrong. Where to send the request and with which key
is resolved by the core (`nbchat.core.credentials`) and handed to `stream` and `list_models`
as an `Endpoint`; a provider only declares where its settings live.

Third-party packages add a provider through the entry-point group `nbchat.providers`, whose
entry name is the provider's name and whose value is a `Provider` subclass::

    [project.entry-points."nbchat.providers"]
    echo = "nbchat_echo:EchoProvider"

nbchat instantiates it with no arguments the first time a model id of that name is used.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

from .credentials import Endpoint, Secret, resolve
from .errors import UnsupportedInput
from .types import Event, ModelInfo, Request


class Provider:
    """Base class of every provider. Subclasses set `name` and implement `stream`.

    Class attributes that tell the core where settings live (all optional):
    - `key_env`: environment variable holding the key, e.g. `"CEREBRAS_API_KEY"`; None for a
      provider that never takes one;
    - `base_url_env`: environment variable holding the base URL, e.g. `"CEREBRAS_BASE_URL"`;
      `base_url_env_aliases`: other variables read after it;
    - `default_base_url`: the API root used when nothing else is set.
    """

    #: the prefix in "provider:model"
    name: ClassVar[str] = ""
    #: environment variable holding the key; None for providers that never need one
    key_env: ClassVar[str | None] = None
    #: environment variable holding the base URL
    base_url_env: ClassVar[str | None] = None
    #: further environment variables for the base URL, read after `base_url_env`
    base_url_env_aliases: ClassVar[tuple[str, ...]] = ()
    default_base_url: ClassVar[str | None] = None
    #: True when every request goes through `nbchat.core.http` (`open_stream`,
    #: `request_json`), which takes a slot of a `gated()` block's gate itself, just before the
    #: request goes on the wire: `nbchat.map` then builds the next row's request and handles a
    #: finished reply outside the slots. False: a map row holds its slot for the whole turn
    wire_gated: ClassVar[bool] = False

    # ---- configuration ----------------------------------------------------------------

    def needs_key(self, base_url: str | None) -> bool:
        """Whether a request to this base URL needs a key (self-hosted endpoints often do not).

        Only asked when `key_env` is set; the default says yes."""
        return True

    def normalize_base_url(self, url: str) -> str:
        """The API root for a URL the user gave (no trailing slash); e.g. NVIDIA adds `/v1`."""
        return url

    def endpoint(
        self, base_url: str | None = None, api_key: str | Secret | None = None
    ) -> Endpoint:
        """The endpoint this provider uses: explicit values, then `%config`, then environment
        (`nbchat.core.credentials.resolve`). Raises `UsageError` for a malformed key."""
        return resolve(self, base_url=base_url, api_key=api_key)

    def key_set(self) -> bool:
        """Whether requests can go out with the current settings (a key, or none needed)."""
        return self.endpoint().key_set

    # ---- models -----------------------------------------------------------------------

    def known_models(self) -> list[ModelInfo]:
        """The capability table: models known without asking the network."""
        return []

    async def list_models(self, endpoint: Endpoint | None = None) -> list[ModelInfo]:
        """The models at `endpoint` (default: `self.endpoint()`): a live listing merged with the
        capability table where the provider can list, else the table. Raises the provider's
        errors (`MissingKey`, `ProviderError`, `ConnectionFailed`, ...)."""
        return self.known_models()

    def model_info(self, model: str) -> ModelInfo | None:
        """The table entry of a provider-local model id, or None if the table does not know it."""
        for info in self.known_models():
            if info.name == model:
                return info
        return None

    def prompt_tokens(self, request: Request) -> int | None:
        """How many tokens the prompt of `request` took, if this provider measured it while
        streaming; None when unknown (the default). A stream's usage comes with its end, so a
        reply cut off early has none: the turn asks here for interrupted replies only."""
        return None

    def normalize_model(self, model: str) -> str:
        """Map aliases or deprecated ids to the current id (may warn); raise UnknownModel."""
        return model

    def check_request(self, request: Request) -> None:
        """Refuse what the model cannot take (images to a text-only model), before any I/O."""
        if not any(m.images for m in request.messages):
            return  # nothing to check: the capability table is not consulted
        info = self.model_info(request.model)
        # vision None (unknown): sent, and the server decides
        if info is not None and info.vision is False and any(m.images for m in request.messages):
            raise UnsupportedInput(
                f"{info.id} cannot see images; pick a vision model (see %models) "
                "or leave out images=..."
            )

    async def count_tokens(self, request: Request) -> int | None:
        """The request's prompt size in the model's own tokens, or None when this provider
        cannot count without sending it (callers then estimate: nbchat.core.preview)."""
        return None

    # ---- the one streaming method --------------------------------------------------------

    def stream(self, request: Request, endpoint: Endpoint) -> AsyncIterator[Event]:
        """Run `request` against `endpoint`: an async iterator of events as they arrive.

        Yields `TextDelta`s (text fragments in order), `ToolCallEvent`s (one per complete tool
        call), `ImageEvent`s (one per image), then exactly one `Done` (finish reason such as
        `"stop"`, `"length"`, `"tool_calls"`; `Usage` in tokens if the server reported it)
        last. The core has already checked the request (`check_request`) and that a needed key
        is present (`MissingKey` otherwise). Raises `nbchat.core.errors` types
        (`ProviderError`, `ConnectionFailed`, `ProtocolError`, `UsageError`); never yields
        `ErrorEvent` (the `Turn` turns errors into events for front ends that want them).
        Closing the iterator must stop the work (cancel the HTTP stream, the generation or the
        remote prediction).
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
