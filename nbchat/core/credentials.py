"""Endpoints and API keys, resolved in one place for every provider.

A provider declares where its settings live (`Provider.key_env`, `base_url_env`,
`base_url_env_aliases`, `default_base_url`, `needs_key`, `normalize_base_url`). `resolve()`
picks the base URL and the key, each from the first of:

1. the explicit value of the call (`base_url=...`, `api_key=...`);
2. the configured value, per provider name: `configure(api_keys={...}, base_urls={...})`, which
   a notebook reaches through `%config ChatMagics.api_keys = {...}` and
   `%config ChatMagics.base_urls = {...}`;
3. the environment variable (`CEREBRAS_API_KEY`, `CEREBRAS_BASE_URL`, ...);
4. for the base URL only, the provider's default (`https://api.cerebras.ai/v1`, ...).

The result is a frozen `Endpoint` handed to `Provider.stream` and `Provider.list_models`. Its
key is a `Secret`: `repr()` and `str()` show `***`, so a traceback that prints locals, a log
line or a saved repr never holds the key. The plain value is read by `Secret.get()` in one
place only: `nbchat.core.http.BearerAuth`, which writes the `Authorization: Bearer <key>`
header (the OpenAI wire's auth header, also used by Cerebras, NVIDIA and Replicate) onto the
outgoing request.

Nothing here imports httpx or IPython: the notebook layer calls `configure()` when the user
changes `%config`, at `%load_ext` time included.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import MissingKey, UsageError, remember_secret

if TYPE_CHECKING:  # pragma: no cover
    from .provider import Provider

__all__ = ["Endpoint", "Secret", "checked_key", "configure", "hide_key", "resolve"]


class Secret:
    """An API key whose `repr()` is `Secret('***')` and whose `str()` is `***`.

    `get()` returns the plain value; only the code that writes the HTTP header calls it.
    Equal when the values are equal (compared in constant time). Constructing one registers
    the value with `nbchat.core.errors.redact`, so it is scrubbed from every error message.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"a Secret holds a string, not {type(value).__name__}")
        self._value = value
        remember_secret(value)

    def get(self) -> str:
        """The plain key."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


@dataclass(frozen=True)
class Endpoint:
    """Where one provider's requests go and with which key, as resolved for one call.

    - `provider`: the provider's name (the prefix in `provider:model`);
    - `base_url`: the API root without a trailing slash (e.g. `https://api.cerebras.ai/v1`),
      or None for a provider that has no default and was given none (Cog, the local model);
    - `api_key`: the key as a `Secret`, or None;
    - `key_env`: the environment variable that would hold the key (for messages), if any;
    - `key_required`: whether requests to `base_url` need a key (hosted APIs do; a
      self-hosted OpenAI-compatible server or NIM usually does not).
    """

    provider: str
    base_url: str | None = None
    api_key: Secret | None = None
    key_env: str | None = None
    key_required: bool = False

    @property
    def key_set(self) -> bool:
        """Whether a request can go out: a key is present or none is needed."""
        return self.api_key is not None or not self.key_required

    def require_key(self) -> None:
        """Raise `MissingKey` (saying where to set the key) if a needed key is absent."""
        if self.api_key is None and self.key_required and self.key_env:
            raise MissingKey(self.provider, self.key_env)


def hide_key(options: dict[str, object]) -> None:
    """Replace a plain `api_key` in a call's keyword dict by a `Secret`, in place.

    Each public entry point calls it first, so that from there on even its own `**options`
    local (what a traceback with locals prints) holds the key redacted."""
    key = options.get("api_key")
    if isinstance(key, str):
        options["api_key"] = Secret(key)


# ---- the configured values (`%config ChatMagics.api_keys / base_urls`) ----------------------

_keys: dict[str, Secret] = {}
_base_urls: dict[str, str] = {}


def configure(
    *,
    api_keys: Mapping[str, str | Secret | None] | None = None,
    base_urls: Mapping[str, str | None] | None = None,
    source: str = "nbchat.core.credentials.configure",
) -> None:
    """Replace the configured keys and/or base URLs, each a mapping of provider name to value.

    A mapping that is passed replaces the previous one whole (as `%config` assignments do);
    one that is None is left alone; empty or None values are dropped. Configured values come
    after explicit arguments and before environment variables.

    `source` names the setting in error messages (the notebook passes
    `%config ChatMagics.api_keys`). Raises `UsageError` for a key with spaces, line breaks or
    non-ASCII characters inside, or a base URL that is not a string.
    """
    if api_keys is not None:
        keys: dict[str, Secret] = {}
        for name, value in api_keys.items():
            if value:
                keys[str(name)] = checked_key(value, str(name), f"in {source}")
        _keys.clear()
        _keys.update(keys)
    if base_urls is not None:
        urls: dict[str, str] = {}
        for name, url in base_urls.items():
            if url is None or url == "":
                continue
            if not isinstance(url, str):
                raise UsageError(
                    f"the {name} base URL in {source} must be a string like "
                    f"'http://localhost:8000/v1', not {type(url).__name__}"
                )
            urls[str(name)] = url.strip()
        _base_urls.clear()
        _base_urls.update(urls)


def checked_key(value: str | Secret, provider: str, where: str) -> Secret:
    """The key as a Secret, stripped of surrounding whitespace (a key read from a file often
    ends in a newline). Raises `UsageError` if it still holds spaces, line breaks or non-ASCII
    characters, which httpx would refuse with the key's text in its message."""
    secret = value if isinstance(value, Secret) else Secret(value)
    if secret.get() != secret.get().strip():
        secret = Secret(secret.get().strip())
    if not (secret.get().isascii() and secret.get().isprintable()) or " " in secret.get():
        raise UsageError(
            f"the {provider} API key {where} has spaces, line breaks or non-ASCII characters "
            "inside; copy it again"
        )
    return secret


# ---- resolution ----------------------------------------------------------------------------


def resolve(
    provider: Provider, *, base_url: str | None = None, api_key: str | Secret | None = None
) -> Endpoint:
    """The endpoint for `provider`: explicit argument, then configured value, then environment
    variable (then, for the base URL, the provider's default). See the module docstring.

    Raises `UsageError` for a malformed key. A missing key is not an error here (listing a
    keyless server is fine): `Endpoint.require_key()` raises `MissingKey` where one is needed.
    """
    name = provider.name
    url = base_url or _base_urls.get(name) or _env_base_url(provider) or provider.default_base_url
    url = url.strip().rstrip("/") if url else None
    if url:
        url = provider.normalize_base_url(url)
    secret: Secret | None
    if api_key:
        secret = checked_key(api_key, name, "passed as api_key=")
    elif name in _keys:
        secret = _keys[name]
    elif provider.key_env and os.environ.get(provider.key_env):
        secret = checked_key(Secret(os.environ[provider.key_env]), name, f"in {provider.key_env}")
    else:
        secret = None
    return Endpoint(
        provider=name,
        base_url=url or None,
        api_key=secret,
        key_env=provider.key_env,
        key_required=provider.key_env is not None and provider.needs_key(url or None),
    )


def _env_base_url(provider: Provider) -> str | None:
    for var in (provider.base_url_env, *provider.base_url_env_aliases):
        if var and os.environ.get(var):
            return os.environ[var]
    return None
