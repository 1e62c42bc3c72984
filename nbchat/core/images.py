"""Images in and out: anything a user may hold becomes an ImagePart (bytes + MIME type).

Accepted: a file path, an http(s) URL (fetched later by the async core), a data: URI, bytes,
a PIL image, a matplotlib figure, a NumPy array. Bytes in a format models rarely take (TIFF,
ICO...) are converted to PNG; bytes that are not an image at all are refused up front.
"""

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
    (b"BM", "image/bmp"),
]
_PNG_MODES = ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA")


def known_mime(data: bytes) -> str | None:
    """The MIME type of PNG, JPEG, GIF, WebP or BMP bytes; None for anything else."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def sniff_mime(data: bytes) -> str:
    """The MIME type of image bytes by their magic number (`known_mime`); `image/png` if unknown."""
    return known_mime(data) or "image/png"


def from_bytes(data: bytes, what: str = "the bytes") -> ImagePart:
    """An ImagePart for image bytes; other image formats become PNG, non-images are refused."""
    mime = known_mime(data)
    if mime is not None:
        return ImagePart(data, mime)
    try:
        from PIL import Image

        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception:
        raise BadOption(
            "images", f"{what} are not an image (PNG, JPEG, GIF, WebP or BMP expected)"
        ) from None
    return ImagePart(_png_bytes(img), "image/png")


def parse_data_uri(uri: str) -> ImagePart:
    """An ImagePart from a `data:` URI (RFC 2397), base64 or plain text (not percent-decoded);
    data under a non-image MIME type is sniffed and converted as raw bytes are (`from_bytes`).

    Raises BadOption("images") for a malformed URI, bad base64, or data that is not an image.
    """
    m = _DATA_URI.match(uri)
    if not m:
        raise BadOption("images", "not a valid data: URI")
    raw = m.group("data")
    try:
        data = (base64.b64decode("".join(raw.split()), validate=True) if m.group("b64")
                else raw.encode())
    except ValueError:
        raise BadOption("images", "the data: URI is not valid base64") from None
    mime = m.group("mime") or ""
    return ImagePart(data, mime) if mime.startswith("image/") else from_bytes(data, "the data")


def is_remote_url(value: str) -> bool:
    """Whether `value` is an http:// or https:// URL (to be fetched by the async core)."""
    return value.startswith(("http://", "https://"))


def to_image_part(value: Any) -> ImagePart | str:
    """An ImagePart, or the URL string itself for remote URLs (fetched later, by the async core)."""
    if isinstance(value, ImagePart):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return from_bytes(bytes(value))
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
        return from_bytes(data, f"the contents of {value!r}")
    # PIL image
    if hasattr(value, "save") and hasattr(value, "mode") and hasattr(value, "size"):
        return ImagePart(_png_bytes(value), "image/png")
    # matplotlib figure
    if hasattr(value, "savefig"):
        buf = io.BytesIO()
        value.savefig(buf, format="png", bbox_inches="tight")
        return ImagePart(buf.getvalue(), "image/png")
    # NumPy array (H, W) or (H, W, 3|4)
    if hasattr(value, "__array_interface__") and hasattr(value, "shape"):
        from PIL import Image

        return ImagePart(_png_bytes(Image.fromarray(array_to_uint8(value))), "image/png")
    raise BadOption(
        "images",
        f"cannot use a {type(value).__name__} as an image: give a file path, URL, bytes, "
        "PIL image, matplotlib figure or NumPy array",
    )


def array_to_uint8(value: Any) -> Any:
    """An image array as 8-bit pixels, read the way matplotlib's `imshow` documents arrays.

    Shapes: (H, W) scalar data, (H, W, 3) RGB, (H, W, 4) RGBA ((H, W, 1) counts as (H, W)).
    - bool: False black, True white; uint8: as is;
    - uint16: scaled by its range (0..65535 to 0..255), as 16-bit image files are read;
    - floats in 0..1 and other integers in 0..255: matplotlib's RGB(A) ranges, scaled to 0..255;
    - (H, W) data outside those ranges (floats 0..255, negative values, larger integers):
      stretched from its minimum to its maximum, as `imshow` normalises scalar data;
    - RGB(A) data outside them is refused (matplotlib would clip it, which is how a float
      0..255 photo becomes a two-colour image), and so are NaN and infinite values.
    Raises `BadOption` with the conversion to write."""
    import numpy as np

    arr = np.asarray(value)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise BadOption(
            "images", f"an array image must be (H, W), (H, W, 3) or (H, W, 4), not {arr.shape}"
        )
    kind = arr.dtype.kind
    if kind == "b":
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint8:
        return arr
    if kind not in "uif":
        raise BadOption("images", f"an array image must hold numbers, not {arr.dtype}")
    if arr.dtype == np.uint16:
        return (arr.astype(np.float64) * (255 / 65535)).round().astype(np.uint8)
    if arr.size == 0:
        raise BadOption("images", "the array image is empty")
    if kind == "f" and not np.isfinite(arr).all():
        raise BadOption("images", "the array image holds NaN or infinite values; "
                                  "replace them first (numpy.nan_to_num)")
    lo, hi = float(arr.min()), float(arr.max())
    top = 1.0 if kind == "f" else 255.0
    if lo >= 0 and hi <= top:
        scaled = arr.astype(np.float64) * (255 / top)
    elif arr.ndim == 2:
        scaled = (arr.astype(np.float64) - lo) * (255 / (hi - lo)) if hi > lo else \
            np.zeros(arr.shape)
    else:
        what = "floats" if kind == "f" else f"{arr.dtype} values"
        expected = "0..1" if kind == "f" else "0..255"
        fix = ("divide by 255 (arr / 255) or pass arr.astype('uint8')" if lo >= 0 and hi <= 255
               else "scale it into that range first")
        raise BadOption(
            "images", f"an RGB(A) array of {what} must be in {expected} (as matplotlib reads "
            f"it), but this one spans {lo:g}..{hi:g}: {fix}"
        )
    return scaled.round().clip(0, 255).astype(np.uint8)


def _png_bytes(img: Any) -> bytes:
    if img.mode not in _PNG_MODES:
        img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def to_pil(part: ImagePart) -> Any:
    """The image as a loaded `PIL.Image.Image` (needs Pillow); raises PIL's
    `UnidentifiedImageError` for bytes Pillow cannot read.
    """
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
    out: list[ImagePart] = []
    for v in values:
        part = to_image_part(v)
        if isinstance(part, str):
            part = await fetch_image(part, client)
        out.append(part)
    return tuple(out)


async def fetch_image(url: str, client: Any = None) -> ImagePart:
    """GET an image URL given by the user; errors say which URL and why."""
    import httpx

    from .http import get_client, transport_error

    client = client or get_client()
    try:
        resp = await client.get(url, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise transport_error(exc, url, "image download") from None
    if resp.status_code >= 400:
        raise BadOption("images", f"could not fetch {url} (HTTP {resp.status_code})")
    part = from_bytes(resp.content, f"the contents of {url}")
    return ImagePart(part.data, part.mime, url=url)
