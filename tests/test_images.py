"""Anything a user may hold becomes an ImagePart; replies give PIL images back."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from nbchat.core.bridge import run_sync
from nbchat.core.errors import BadOption
from nbchat.core.images import (
    parse_data_uri,
    png_bytes,
    resolve_images,
    sniff_mime,
    to_image_part,
    to_pil,
)
from nbchat.core.types import ImagePart, Reply


def encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


RED = Image.new("RGB", (6, 4), (255, 0, 0))


@pytest.mark.parametrize("fmt,mime", [("PNG", "image/png"), ("JPEG", "image/jpeg"),
                                      ("GIF", "image/gif"), ("WEBP", "image/webp"),
                                      ("BMP", "image/bmp")])
def test_bytes_keep_their_format(fmt, mime):
    part = to_image_part(encoded(RED, fmt))
    assert isinstance(part, ImagePart) and part.mime == mime and sniff_mime(part.data) == mime


def test_other_formats_become_png():
    part = to_image_part(encoded(RED, "TIFF"))
    assert part.mime == "image/png"
    assert to_pil(part).size == (6, 4)


def test_bytes_that_are_not_an_image_are_refused():
    with pytest.raises(BadOption, match="not an image"):
        to_image_part(b"hello, I am text")


def test_file_path_str_and_pathlib(tmp_path):
    path = tmp_path / "red.jpg"
    RED.save(path)
    for value in (path, str(path)):
        part = to_image_part(value)
        assert part.mime == "image/jpeg" and to_pil(part).size == (6, 4)
    with pytest.raises(BadOption, match="no such file"):
        to_image_part(str(tmp_path / "missing.png"))
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(BadOption, match="notes.txt"):
        to_image_part(text)


def test_pil_images_of_any_mode():
    for img in (RED, RED.convert("RGBA"), RED.convert("L"), RED.convert("CMYK")):
        part = to_image_part(img)
        assert part.mime == "image/png"
        want = img.convert("RGB").getpixel((0, 0))
        assert to_pil(part).convert("RGB").getpixel((0, 0)) == want


def test_matplotlib_figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1), dpi=50)
    ax.plot([0, 1], [0, 1])
    part = to_image_part(fig)
    plt.close(fig)
    assert part.mime == "image/png" and to_pil(part).size[0] > 10


def test_numpy_arrays():
    floats = np.zeros((3, 5, 3))
    floats[..., 1] = 1.0
    assert to_pil(to_image_part(floats)).getpixel((0, 0)) == (0, 255, 0)
    gray = np.full((2, 2), 128, dtype=np.uint8)
    assert to_pil(to_image_part(gray)).getpixel((1, 1)) == 128
    mask = np.array([[True, False]])
    assert to_pil(to_image_part(mask)).getpixel((0, 0)) == 255
    single = np.full((2, 2, 1), 7, dtype=np.uint8)
    assert to_pil(to_image_part(single)).getpixel((0, 0)) == 7
    with pytest.raises(BadOption, match=r"\(H, W\)"):
        to_image_part(np.zeros((2, 2, 2)))


def test_data_uris():
    uri = "data:image/png;base64," + base64.b64encode(encoded(RED, "PNG")).decode()
    assert to_image_part(uri) == parse_data_uri(uri)
    assert parse_data_uri(uri).mime == "image/png"
    untyped = "data:;base64," + base64.b64encode(encoded(RED, "JPEG")).decode()
    assert parse_data_uri(untyped).mime == "image/jpeg"
    with pytest.raises(BadOption):
        parse_data_uri("data:image/png;base64,@@@")


def test_remote_urls_are_left_for_the_async_core():
    assert to_image_part("https://example.org/cat.png") == "https://example.org/cat.png"


def test_unsupported_things_say_what_works():
    with pytest.raises(BadOption, match="file path, URL, bytes, PIL image"):
        to_image_part(42)


def test_resolve_fetches_urls_through_the_given_client():
    jpeg = encoded(RED, "JPEG")
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path == "/cat.jpg":
            return httpx.Response(200, content=jpeg, headers={"content-type": "image/jpeg"})
        if request.url.path == "/page":
            return httpx.Response(200, text="<html>not an image</html>")
        return httpx.Response(404)

    async def go(values):
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await resolve_images(values, client)

    parts = run_sync(go((RED, "https://img.example/cat.jpg")))
    assert parts[1].mime == "image/jpeg" and parts[1].url == "https://img.example/cat.jpg"
    assert parts[0].mime == "image/png"
    with pytest.raises(BadOption, match="HTTP 404"):
        run_sync(go(("https://img.example/gone.png",)))
    with pytest.raises(BadOption, match="not an image"):
        run_sync(go(("https://img.example/page",)))


def test_reply_images_are_pil_and_png_bytes_convert():
    jpeg = ImagePart(encoded(RED, "JPEG"), "image/jpeg")
    reply = Reply(image_parts=[jpeg])
    assert reply.images[0].size == (6, 4)
    assert png_bytes(jpeg).startswith(b"\x89PNG")
    png = ImagePart(encoded(RED, "PNG"))
    assert png_bytes(png) is png.data
    assert "bytes" in repr(png) and "base64" not in repr(png)
