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


def _matplotlib_pixels(arr, **kw) -> np.ndarray:
    """What matplotlib itself makes of an array (imsave, gray for scalar data), as uint8 RGB."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    plt.imsave(buf, arr, format="png", **kw)
    return np.asarray(Image.open(buf).convert("RGB"))


def test_arrays_scale_the_way_matplotlib_reads_them():
    ramp = np.linspace(0, 1, 24).reshape(4, 6)
    rgb01 = np.stack([ramp, ramp[::-1], np.full_like(ramp, 0.5)], axis=-1)
    ours = np.asarray(to_pil(to_image_part(rgb01)).convert("RGB")).astype(int)
    assert np.abs(ours - _matplotlib_pixels(rgb01)).max() <= 1  # floats 0..1
    rgb255 = (rgb01 * 255).round().astype(np.int32)
    ours = np.asarray(to_pil(to_image_part(rgb255)).convert("RGB")).astype(int)
    assert np.abs(ours - _matplotlib_pixels(rgb255.astype(np.uint8))).max() <= 1
    # (H, W) scalar data of any range is stretched from its minimum to its maximum
    for scalar in (ramp * 255, ramp * 1000 - 300, (ramp * 4000).astype(np.int32)):
        ours = np.asarray(to_pil(to_image_part(scalar)).convert("RGB")).astype(int)
        theirs = _matplotlib_pixels(scalar, cmap="gray")
        assert np.abs(ours - theirs).max() <= 2  # matplotlib's colormap has 256 steps


def test_a_float_photo_holding_0_to_255_keeps_its_tones_or_is_refused():
    ramp = np.linspace(0, 255, 64).reshape(8, 8)
    gray = np.asarray(to_pil(to_image_part(ramp)))  # (H, W): stretched, not clipped
    assert len(np.unique(gray)) > 32 and gray.min() == 0 and gray.max() == 255
    rgb = np.stack([ramp] * 3, axis=-1)  # RGB floats outside 0..1: matplotlib would clip
    with pytest.raises(BadOption, match=r"must be in 0\.\.1.*spans 0\.\.255.*arr / 255"):
        to_image_part(rgb)


def test_uint16_arrays_are_scaled_by_their_range():
    ramp = np.linspace(0, 65535, 16).astype(np.uint16).reshape(4, 4)
    gray = np.asarray(to_pil(to_image_part(ramp)))
    assert gray[0, 0] == 0 and gray[-1, -1] == 255 and len(np.unique(gray)) == 16
    rgb = np.stack([ramp, ramp, np.full_like(ramp, 32768)], axis=-1)
    pixels = np.asarray(to_pil(to_image_part(rgb)).convert("RGB"))
    assert pixels[0, 0].tolist() == [0, 0, 128] and pixels[-1, -1].tolist() == [255, 255, 128]


def test_arrays_that_cannot_be_an_image_say_why():
    with pytest.raises(BadOption, match="NaN"):
        to_image_part(np.array([[0.0, np.nan]]))
    with pytest.raises(BadOption, match="int64 values must be in 0..255"):
        to_image_part(np.full((2, 2, 3), 1000, dtype=np.int64))


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


def test_image_url_parts_by_url_are_fetched_like_images_option(fake):
    """`{"type": "image_url", "image_url": {"url": "https://..."}}` (the NVIDIA page's shape)
    is accepted and fetched as `images=[url]` is, from a real loopback server; the history
    keeps the fetched bytes, so later turns do not fetch again."""
    from faultserver import FaultServer, head

    import nbchat

    jpeg = encoded(RED, "JPEG")
    server = FaultServer()
    server.script(head(200, "image/jpeg", length=len(jpeg)) + jpeg)
    url = f"http://127.0.0.1:{server.port}/cat.jpg"
    try:
        conv = nbchat.Conversation(model="fake:echo")
        conv.send([{"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": url}}]}])
        sent = fake.requests[-1].messages[-1]
        assert sent.text == "What is in this image?"
        assert [(p.data, p.mime, p.url) for p in sent.images] == [(jpeg, "image/jpeg", url)]
        conv.send([("user", [{"type": "image_url", "image_url": url}])])  # the plain-string form
        conv.send("And now?")
        assert [r.path for r in server.requests] == ["/cat.jpg", "/cat.jpg"]
        assert fake.requests[-1].messages[0].images[0].data == jpeg  # from the history
        nbchat.chat("Same?", model="fake:echo", images=[url])
        assert fake.requests[-1].messages[-1].images == sent.images  # the same as images=[url]
    finally:
        server.close()


def test_an_image_url_part_that_cannot_be_fetched_says_which(fake):
    import nbchat

    with pytest.raises(nbchat.errors.NbchatError, match="image download: .*127.0.0.1"):
        nbchat.chat([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/none.png"}}]}],
            model="fake:echo")
    assert fake.requests == []
