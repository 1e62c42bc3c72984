"""Images in and out: anything a user may hold becomes an ImagePart (bytes + MIME type)."""

from __future__ import annotations

import base64
import io
import os
import re
from typing import Any

from .errors import BadOption
from .types import ImagePart

_DATA_URI = re.compile(r"^data:(?P<mime>[\w/+.-]+)?(?P<b64>;base64)?,(?P<data>.*)$", re.S)

_MAGIC = [
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"RIFF", "image/webp"),
    (b"BM", "image/bmp"),
]


def sniff_mime(data: bytes) -> str:
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    return "image/png"


def parse_data_uri(uri: str) -> ImagePart:
    m = _DATA_URI.match(uri)
    if not m:
        raise BadOption("images", "not a valid data: URI")
    raw = m.group("data")
    data = base64.b64decode(raw) if m.group("b64") else raw.encode()
    return ImagePart(data, m.group("mime") or sniff_mime(data))


def is_remote_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def to_image_part(value: Any) -> ImagePart | str:
    """An ImagePart, or the URL string itself for remote URLs (fetched later, by the async core)."""
    if isinstance(value, ImagePart):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return ImagePart(data, sniff_mime(data))
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        if value.startswith("data:"):
            return parse_data_uri(value)
        if is_remote_url(value):
            return value
        if not os.path.exists(value):
            raise BadOption("images", f"no such file: {value!r}")
        with open(value, "rb") as fh:
            data = fh.read()
        return ImagePart(data, sniff_mime(data))
    # PIL image
    if hasattr(value, "save") and hasattr(value, "mode") and hasattr(value, "size"):
        return ImagePart(_png_bytes(value), "image/png")
    # matplotlib figure
    if hasattr(value, "savefig"):
        buf = io.BytesIO()
        value.savefig(buf, format="png", bbox_inches="tight")
        return ImagePart(buf.getvalue(), "image/png")
    # NumPy array (H, W) or (H, W, 3|4), floats in 0..1 or integers 0..255
    if hasattr(value, "__array_interface__") and hasattr(value, "shape"):
        import numpy as np
        from PIL import Image

        arr = np.asarray(value)
        if arr.dtype.kind == "f":
            arr = (np.clip(arr, 0, 1) * 255).round()
        arr = arr.astype("uint8")
        return ImagePart(_png_bytes(Image.fromarray(arr)), "image/png")
    raise BadOption(
        "images",
        f"cannot use a {type(value).__name__} as an image: give a file path, URL, bytes, "
        "PIL image, matplotlib figure or NumPy array",
    )


def _png_bytes(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def to_pil(part: ImagePart) -> Any:
    from PIL import Image

    img = Image.open(io.BytesIO(part.data))
    img.load()
    return img


def png_bytes(part: ImagePart) -> bytes:
    """The image as PNG (for notebook outputs, which every front end renders)."""
    if part.mime == "image/png":
        return part.data
    return _png_bytes(to_pil(part))


async def resolve_images(values: tuple[Any, ...], client: Any = None) -> tuple[ImagePart, ...]:
    """Coerce every image; remote URLs are fetched with httpx (the caller's client if given)."""
    import httpx

    out: list[ImagePart] = []
    for v in values:
        part = to_image_part(v)
        if isinstance(part, str):
            if client is None:
                async with httpx.AsyncClient(follow_redirects=True, timeout=30) as c:
                    resp = await c.get(part)
            else:
                resp = await client.get(part)
            resp.raise_for_status()
            mime = resp.headers.get("content-type", "").split(";")[0] or sniff_mime(resp.content)
            part = ImagePart(resp.content, mime, url=str(v))
        out.append(part)
    return tuple(out)
