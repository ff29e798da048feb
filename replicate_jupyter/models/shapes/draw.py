"""Procedural training images for `local/shapes`: one coloured shape on a plain background.

The vocabulary lives here (and only here) so the drawer, the prompt parser, the trainer and
the quality benchmark can never disagree about what "orange" or "ring" means. Images are drawn
4× larger with PIL and box-downsampled, so edges are anti-aliased like a real picture.

No torch import: the benchmark's analyser validates itself on these images without a model.
"""
from __future__ import annotations

import math
import random

from PIL import Image, ImageDraw

__all__ = ["COLORS", "SHAPES", "BACKGROUNDS", "SIZE", "draw", "random_spec", "prompt_for"]

SIZE = 32
_SS = 4  # supersampling factor

# Saturated foreground colours with hues at least 25° apart (HSV hue in degrees, for reference).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),        # 0°
    "orange": (255, 140, 0),     # 33°
    "yellow": (245, 215, 0),     # 53°
    "green": (30, 180, 40),      # 124°
    "cyan": (0, 200, 220),       # 185°
    "blue": (30, 70, 240),       # 227°
    "purple": (140, 40, 210),    # 275°
    "pink": (255, 80, 180),      # 323°
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "ring", "star")
# Backgrounds are unsaturated, so "saturated pixel" == foreground for every pair.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250),
    "black": (10, 10, 10),
    "gray": (128, 128, 128),
    "cream": (238, 230, 205),
}


def prompt_for(color: str, shape: str, background: str) -> str:
    return f"a {color} {shape} on a {background} background"


def random_spec(rng: random.Random) -> tuple[str, str, str]:
    """A uniformly random (colour, shape, background)."""
    return rng.choice(list(COLORS)), rng.choice(SHAPES), rng.choice(list(BACKGROUNDS))


def _regular(cx: float, cy: float, r: float, n: int, rot: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(rot + 2 * math.pi * k / n), cy + r * math.sin(rot + 2 * math.pi * k / n)) for k in range(n)]


def _star(cx: float, cy: float, r: float, rot: float, inner: float = 0.45) -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        rr = r if k % 2 == 0 else r * inner
        a = rot + math.pi * k / 5
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def draw(color: str, shape: str, background: str, rng: random.Random | None = None, size: int = SIZE) -> Image.Image:
    """Draw one `size`×`size` RGB image; position, size and rotation come from `rng`."""
    rng = rng or random.Random()
    big = size * _SS
    img = Image.new("RGB", (big, big), BACKGROUNDS[background])
    d = ImageDraw.Draw(img)
    fg = COLORS[color]
    # circumradius between 25% and 40% of the image side, fully inside with a 1-px margin
    r = rng.uniform(0.25, 0.40) * size * _SS
    margin = _SS
    cx = rng.uniform(r + margin, big - r - margin)
    cy = rng.uniform(r + margin, big - r - margin)
    rot = rng.uniform(0, 2 * math.pi)
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    elif shape == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
        ri = r * 0.5
        d.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=BACKGROUNDS[background])
    elif shape == "square":
        d.polygon(_regular(cx, cy, r, 4, rot), fill=fg)
    elif shape == "triangle":
        d.polygon(_regular(cx, cy, r, 3, rot), fill=fg)
    elif shape == "star":
        d.polygon(_star(cx, cy, r, rot), fill=fg)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return img.resize((size, size), Image.Resampling.BOX)
