"""Free text → (colour, shape, background) for `local/shapes`, plus a line saying what was understood.

The model only knows a small vocabulary, so the parser is forgiving: synonyms and plurals map
onto it, unknown words are ignored (and named, so the user sees why "lovely" changed nothing),
and a missing part stays `None` — the model then draws any colour/shape/background.

A colour word that follows "on" or precedes "background" is the background; "white", "black",
"gray" and "cream" are background-only, so "a red circle on white" reads naturally.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

try:  # inside the package
    from replicate_jupyter.models.shapes import draw
except ImportError:  # predict.py loaded by path (e.g. under cog), folder on sys.path
    import draw  # type: ignore[no-redef]

__all__ = ["Parsed", "parse"]

_COLOR_SYNONYMS = {
    "violet": "purple", "magenta": "pink", "rose": "pink", "teal": "cyan", "turquoise": "cyan",
    "aqua": "cyan", "gold": "yellow", "golden": "yellow", "lime": "green", "navy": "blue",
    "scarlet": "red", "crimson": "red", "amber": "orange",
}
_BG_SYNONYMS = {"grey": "gray", "beige": "cream", "ivory": "cream", "dark": "black", "light": "white"}
_SHAPE_SYNONYMS = {
    "disc": "circle", "disk": "circle", "dot": "circle", "ball": "circle", "round": "circle",
    "box": "square", "rectangle": "square", "diamond": "square", "donut": "ring", "doughnut": "ring",
    "annulus": "ring", "hoop": "ring", "pentagram": "star",
}
_FILLER = {"a", "an", "the", "on", "of", "with", "in", "and", "background", "backdrop", "picture",
           "image", "photo", "drawing", "shape", "colored", "coloured", "plain", "some", "one", "over"}


@dataclass
class Parsed:
    color: str | None = None
    shape: str | None = None
    background: str | None = None
    ignored: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """E.g. 'understood: colour=red shape=circle background=(any); ignored: lovely'."""
        parts = [f"colour={self.color or '(any)'}", f"shape={self.shape or '(any)'}",
                 f"background={self.background or '(any)'}"]
        line = "understood: " + " ".join(parts)
        if self.ignored:
            line += "; ignored: " + ", ".join(self.ignored)
        return line


def _norm(word: str) -> str:
    return re.sub(r"[^a-z]", "", word.lower())


def _singular(word: str) -> str:
    return word[:-1] if word.endswith("s") and not word.endswith("ss") and len(word) > 3 else word


def parse(text: str) -> Parsed:
    words = [w for w in (_norm(w) for w in re.split(r"[\s,.;:!?/\-]+", text or "")) if w]
    out = Parsed()
    for i, raw in enumerate(words):
        w = _singular(raw)
        prev = words[i - 1] if i else ""
        nxt = words[i + 1 : i + 3]
        color = w if w in draw.COLORS else _COLOR_SYNONYMS.get(w)
        bg = w if w in draw.BACKGROUNDS else _BG_SYNONYMS.get(w)
        shape = w if w in draw.SHAPES else _SHAPE_SYNONYMS.get(w)
        says_background = prev == "on" or "background" in nxt or "backdrop" in nxt
        if bg and out.background is None and (says_background or not color):
            out.background = bg
        elif color and out.color is None and not says_background:
            out.color = color
        elif shape and out.shape is None:
            out.shape = shape
        elif raw not in _FILLER and w not in _FILLER:
            out.ignored.append(raw)
    return out
