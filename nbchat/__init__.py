"""nbchat: chat with language models from Jupyter.

`%load_ext nbchat` registers `%%chat` and `%models`. The same core is usable from plain Python:
`nbchat.chat`, `nbchat.stream`, `nbchat.Conversation`, `nbchat.models`, `nbchat.count`
(tokens a request would take) and `nbchat.map` (one prompt over every row of a table).
Third-party providers subclass `nbchat.Provider` (its `stream(request, endpoint)` yields
`TextDelta`, `ToolCallEvent`, `ImageEvent`, then `Done`; a turn's `events()` adds
`ReasoningDelta`, `RefusalDelta`, `Status`, `ToolResultEvent` (its `ToolStep`) and `SchemaRetry`)
and are found through the entry-point
group `nbchat.providers`, or added at run time with `nbchat.register`. Every reply is logged
locally (`nbchat.log()`, `NBCHAT_LOG`) and can be replayed offline (`NBCHAT_REPLAY`).
Imports are lazy so that loading the extension stays fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what editors and type checkers see; at run time these load on first use
    from .core import errors as errors
    from .core.api import abatch as abatch
    from .core.api import achat as achat
    from .core.api import acount as acount
    from .core.api import amodels as amodels
    from .core.api import astream as astream
    from .core.api import batch as batch
    from .core.api import chat as chat
    from .core.api import count as count
    from .core.api import models as models
    from .core.api import stream as stream
    from .core.conversation import Conversation as Conversation
    from .core.credentials import Endpoint as Endpoint
    from .core.credentials import Secret as Secret
    from .core.log import log as log
    from .core.mapping import amap as amap
    from .core.mapping import map as map
    from .core.provider import Provider as Provider
    from .core.registry import register as register
    from .core.registry import unregister as unregister
    from .core.types import Done as Done
    from .core.types import ErrorEvent as ErrorEvent
    from .core.types import Event as Event
    from .core.types import ImageEvent as ImageEvent
    from .core.types import Message as Message
    from .core.types import ModelInfo as ModelInfo
    from .core.types import ReasoningDelta as ReasoningDelta
    from .core.types import RefusalDelta as RefusalDelta
    from .core.types import Reply as Reply
    from .core.types import Request as Request
    from .core.types import SchemaRetry as SchemaRetry
    from .core.types import Status as Status
    from .core.types import TextDelta as TextDelta
    from .core.types import ToolCall as ToolCall
    from .core.types import ToolCallEvent as ToolCallEvent
    from .core.types import ToolResultEvent as ToolResultEvent
    from .core.types import ToolStep as ToolStep
    from .core.types import Usage as Usage
    from .notebook.compare import CompareView as CompareView
    from .notebook.compare import acompare as acompare
    from .notebook.compare import compare as compare
    from .notebook.panel import ChatPanel as ChatPanel

    #: the most recent result of `%%chat`, the panel or compare (see `nbchat.notebook.last_result`)
    last: Any

__version__ = "0.1.0"

_LAZY = {
    "chat": "nbchat.core.api",
    "achat": "nbchat.core.api",
    "stream": "nbchat.core.api",
    "astream": "nbchat.core.api",
    "batch": "nbchat.core.api",
    "abatch": "nbchat.core.api",
    "models": "nbchat.core.api",
    "count": "nbchat.core.api",
    "acount": "nbchat.core.api",
    "map": "nbchat.core.mapping",
    "amap": "nbchat.core.mapping",
    "amodels": "nbchat.core.api",
    "Conversation": "nbchat.core.conversation",
    "log": "nbchat.core.log",
    "Reply": "nbchat.core.types",
    "Usage": "nbchat.core.types",
    "ToolCall": "nbchat.core.types",
    "Message": "nbchat.core.types",
    "ModelInfo": "nbchat.core.types",
    "errors": "nbchat.core.errors",
    "local": "nbchat.local",
    "register": "nbchat.core.registry",
    "unregister": "nbchat.core.registry",
    # the provider interface, for third-party providers (entry-point group "nbchat.providers")
    "Provider": "nbchat.core.provider",
    "Request": "nbchat.core.types",
    "Endpoint": "nbchat.core.credentials",
    "Secret": "nbchat.core.credentials",
    "Event": "nbchat.core.types",
    "TextDelta": "nbchat.core.types",
    "ToolCallEvent": "nbchat.core.types",
    "ImageEvent": "nbchat.core.types",
    "Done": "nbchat.core.types",
    "ErrorEvent": "nbchat.core.types",
    "ReasoningDelta": "nbchat.core.types",
    "RefusalDelta": "nbchat.core.types",
    "ToolResultEvent": "nbchat.core.types",
    "ToolStep": "nbchat.core.types",
    "SchemaRetry": "nbchat.core.types",
    "Status": "nbchat.core.types",
    "ChatPanel": "nbchat.notebook.panel",
    "CompareView": "nbchat.notebook.compare",
    "compare": "nbchat.notebook.compare",
    "acompare": "nbchat.notebook.compare",
}

__all__ = [*_LAZY, "last", "load_ipython_extension", "__version__"]

def __getattr__(name: str) -> Any:
    if name == "last":  # the most recent reply of `%%chat`, the panel or compare
        from .notebook import last_result

        return last_result.get()
    if name in _LAZY:
        _notebook_context()
        module = importlib.import_module(_LAZY[name])
        value = module if name in ("errors", "local") else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nbchat' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


def _notebook_context() -> None:
    """Inside IPython, let the log know the notebook and cell of each request."""
    if "IPython" in sys.modules:  # already loaded: importing the notebook layer costs nothing
        from .notebook import context

        context.install()


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext nbchat`: register `%%chat`, `%models`, `%chat_log`, `%chat_replay` and
    `%chat_usage` on the IPython shell, and `%config LlamaCpp.options` (the local model)."""
    from .local import register
    from .notebook.magics import ChatMagics

    ipython.register_magics(ChatMagics(shell=ipython))
    register(ipython)  # %config LlamaCpp.options
