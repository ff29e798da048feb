"""The few HTML and text helpers every renderer shares: escaping, no-maths, sizes, base64.

Kept apart so the card, table and image renderers can share them without importing one
another (or `display.py`, which gathers them all).
"""
from __future__ import annotations

import base64
import html

__all__ = ["escape", "escape_text", "NOMATH", "size_text", "b64"]

#: every string from a model or a user goes through this before it is put into HTML
escape = html.escape


def escape_text(text: str) -> str:
    """`text` safe as an element's content (`<pre>…</pre>`): `&`, `<` and `>` escaped. Quotes
    only matter inside an attribute (use `escape` there); skipping them makes two fewer passes
    over a long output, which the final draw of a 2,000-token stream makes on the cell's thread."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


#: JupyterLab typesets `$…$` in HTML outputs as maths; dollar amounts must not turn into formulas.
NOMATH = "tex2jax_ignore mathjax_ignore"


def size_text(n: int) -> str:
    """A byte count as people read it (`512 B`, `1.5 MB`), for a file's line in a card."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def b64(data: bytes) -> str:
    """Bytes as the base64 text a mime bundle's `image/png` (or a data URI) holds."""
    return base64.b64encode(data).decode("ascii")
