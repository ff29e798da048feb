"""Images for a bundle: PNG bytes, one grid of several images, small thumbnails.

Frontends that show only `image/png` (and a saved notebook read with no extension) must still
see every image a prediction made, so several images become one PNG grid; a big image shows in
the HTML as a small JPEG thumbnail, since its full bytes are in the bundle's `image/png`
already (each image once per bundle, not three times).
"""
from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Sequence

from replicate_jupyter.notebook.markup import b64
from replicate_jupyter.prediction.files import FileOutput

if TYPE_CHECKING:
    from replicate_jupyter.prediction.prediction import Prediction

__all__ = ["png_bytes", "compose_grid", "thumbnail_uri", "images_png", "THUMB_ABOVE", "THUMB_SIDE"]

#: an image file up to this many bytes is embedded whole in a final card's HTML; a bigger one
#: shows there as a small JPEG thumbnail, its bytes being in the bundle's `image/png` already
THUMB_ABOVE = 32 * 1024
#: the thumbnail's longest side in px (the card shows images at most 512 px wide)
THUMB_SIDE = 256


def png_bytes(f: FileOutput) -> bytes:
    """The file as PNG bytes: its own when it is a PNG, else converted (PIL must read it)."""
    if f.content_type == "image/png":
        return f.read()
    buf = io.BytesIO()
    f.image().convert("RGBA").save(buf, format="PNG")
    return buf.getvalue()


def compose_grid(images: Sequence[Any], labels: Sequence[str] | None = None, cols: int | None = None) -> bytes:
    """Several images → one PNG grid (with a caption under each when labels are given), so
    frontends that only show `image/png` still see every image."""
    from PIL import Image, ImageDraw

    pics = [Image.open(io.BytesIO(png_bytes(x))).convert("RGB") if isinstance(x, FileOutput) else x.convert("RGB")
            for x in images]
    n = len(pics)
    cols = cols or min(n, 4)
    rows = (n + cols - 1) // cols
    w = max(p.width for p in pics)
    h = max(p.height for p in pics)
    cap = 14 if labels else 0
    pad = 4
    grid = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + cap + pad) + pad), "white")
    draw = ImageDraw.Draw(grid)
    for i, pic in enumerate(pics):
        x = pad + (i % cols) * (w + pad)
        y = pad + (i // cols) * (h + cap + pad)
        grid.paste(pic, (x, y))
        if labels:
            draw.text((x, y + h + 1), labels[i][: max(4, w // 6)], fill="black")
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    return buf.getvalue()


def thumbnail_uri(f: FileOutput) -> str:
    """The no-extension view's look at a big image, at ~3 % of its bytes (a 512 px PNG of
    788 KB → a 24 KB JPEG), so the saved notebook holds the image once, not three times."""
    from PIL import Image

    img = f.image()
    img.thumbnail((THUMB_SIDE, THUMB_SIDE))
    if img.mode not in ("RGB", "L"):
        rgba = img.convert("RGBA")
        img = Image.new("RGB", rgba.size, "white")
        img.paste(rgba, mask=rgba.getchannel("A"))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=75)
    return "data:image/jpeg;base64," + b64(buf.getvalue())


def images_png(p: Prediction, text: str | None = None) -> str | None:
    """The bundle's `image/png` (base64): the one image, or a grid of them; None when the
    prediction made none, or made text (`text`: no image to look for among its tokens)."""
    if text is not None:
        return None
    imgs = [f for f in p.files if f.is_image]
    if not imgs:
        return None
    try:
        return b64(png_bytes(imgs[0]) if len(imgs) == 1 else compose_grid(imgs))
    except Exception:  # an image PIL cannot read: the html still has it
        return None
