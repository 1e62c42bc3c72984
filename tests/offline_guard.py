"""An IPython startup file for kernels that must not reach any model: copied into
`$IPYTHONDIR/profile_default/startup/` by tests/test_replay_notebooks.py.

Every way out fails and is written to `$NBCHAT_GUARD_LOG` (the test reads it, since a notebook
may catch the error): a TCP/UDP connect, an httpx request (any transport), and a provider's
`stream` or `list_models` (the in-process llama.cpp model is reached only through `stream`).
Each kernel that loads this file writes "armed" first, so a guard that never loaded cannot
pass for a clean run.
"""

import os
import socket

import httpx

from nbchat.core import registry

_LOG = os.environ["NBCHAT_GUARD_LOG"]


def _used(what: str) -> None:
    with open(_LOG, "a") as fh:
        fh.write(what + "\n")


_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _guarded_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _used(f"connect {address}")
        raise OSError("offline guard: a network connection was attempted")
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _used(f"connect {address}")
        raise OSError("offline guard: a network connection was attempted")
    return _connect_ex(self, address)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex


def _sync_request(self, request):
    _used(f"httpx {request.method} {request.url}")
    raise httpx.ConnectError("offline guard: an HTTP request was attempted", request=request)


async def _async_request(self, request):
    _sync_request(self, request)


httpx.HTTPTransport.handle_request = _sync_request
httpx.AsyncHTTPTransport.handle_async_request = _async_request
httpx.MockTransport.handle_request = _sync_request
httpx.MockTransport.handle_async_request = _async_request

_get_provider = registry.get_provider


def _guarded_provider(name):
    provider = _get_provider(name)
    if not getattr(provider, "_offline_guard", False):

        def stream(request, *args, **kwargs):
            _used(f"{name}.stream {request.model}")
            raise RuntimeError(f"offline guard: the {name} provider was asked for a reply")

        async def list_models(**kwargs):
            _used(f"{name}.list_models")
            raise RuntimeError(f"offline guard: the {name} provider was asked for its models")

        provider.stream = stream
        provider.list_models = list_models
        provider._offline_guard = True
    return provider


registry.get_provider = _guarded_provider
_used("armed")
