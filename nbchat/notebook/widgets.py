"""What the anywidget widgets (`ChatPanel`, `CompareView`) share: where their built front end is,
batched text messages to the browser, error lines and image data URLs.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import NbchatError
from ..core.images import png_bytes
from ..core.types import ImagePart

#: the built front end (esbuild bundles of js/, see js/build.mjs): panel.js, compare.js, nbchat.css
STATIC = Path(__file__).parent.parent / "static"
#: how long text waits before it is sent to the front end (one message per interval at most)
BATCH_INTERVAL = 0.05


class Batcher:
    """Collects text per key and flushes it at most once per `interval` (and on demand)."""

    def __init__(self, emit: Callable[[dict[Any, str]], None], interval: float = BATCH_INTERVAL):
        self.emit = emit
        self.interval = interval
        self._pending: dict[Any, list[str]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, key: Any, text: str) -> None:
        """Queue `text` under `key`; the first text after a flush schedules one `interval` seconds
        later on the running event loop (there must be one).
        """
        self._pending.setdefault(key, []).append(text)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)

    def flush(self) -> None:
        """Emit all queued text now as `{key: joined text}` (nothing if none); cancel the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            batch = {k: "".join(v) for k, v in self._pending.items()}
            self._pending = {}
            self.emit(batch)


def short_error(exc: BaseException) -> str:
    """One readable line: nbchat errors already say what to do; others get their type."""
    text = str(exc) if isinstance(exc, NbchatError) else f"{type(exc).__name__}: {exc}"
    text = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def image_data_url(part: ImagePart, max_size: int | None = None) -> str:
    """A PNG data: URL (thumbnailed if `max_size`) for the transcript trait."""
    data = png_bytes(part)
    if max_size is not None:
        from PIL import Image

        img = Image.open(io.BytesIO(data))
        if max(img.size) > max_size:
            img.thumbnail((max_size, max_size))
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            data = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")
