"""How a prediction looks in a notebook: its mime bundle, final or running.

Every final bundle carries `application/vnd.replicate.prediction+json` (= `Prediction.to_json()`)
for the JupyterLab extension, and `text/html`, `image/png` (when there is an image) and
`text/plain` beside it, so any frontend (and a reader of the saved file, with no kernel) sees the
outputs and the cost line. HTML never holds a script, and every string that came from a model
or a user is escaped.

Every renderer is a pure function of what it is given: nothing reads the session or the
kernel's state. A cost line's notebook total is the one the ledger stamped onto the
prediction's metrics when it recorded it; whether a prediction's card already shows in the
running cell is the caller's `current_cell` argument. Nothing here knows which runner ran.

This module puts a bundle together; its parts are next door, and every name they had here
is still importable from here:

    markup.py   escaping, no-maths, sizes, base64
    images.py   PNG bytes, grids, thumbnails
    cards.py    the card's HTML and text, each output's look
    tables.py   tables for the line magics, the ledger, error lines

Live, in-place displays are `live.py`; `renderers.py` hands these functions to IPython.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from replicate_jupyter.cost.text import (
    cost_line,
    forecast_line,
    notebook_total,
    running_line,
    secs,
    summary_line,
    usd,
)
from replicate_jupyter.notebook.cards import LIVE_LOG_TAIL, card_html, card_text, file_html
from replicate_jupyter.notebook.images import THUMB_ABOVE, THUMB_SIDE, compose_grid, images_png, png_bytes
from replicate_jupyter.notebook.markup import NOMATH, b64, escape
from replicate_jupyter.notebook.tables import LEDGER_MIME, error_bundle, ledger_bundle, table_bundle
from replicate_jupyter.prediction.files import FileOutput
from replicate_jupyter.prediction.outputs import FileOutputs
from replicate_jupyter.prediction.prediction import TERMINAL
from replicate_jupyter.prediction.record import record_of

if TYPE_CHECKING:
    from replicate_jupyter.prediction.prediction import Prediction

__all__ = [
    "MIME", "SWEEP_MIME", "LEDGER_MIME", "prediction_bundle", "file_bundle", "files_bundle", "ledger_bundle", "table_bundle",
    "error_bundle", "cost_line", "running_line", "forecast_line", "summary_line", "notebook_total", "usd", "render",
    "compose_grid", "THUMB_ABOVE", "THUMB_SIDE", "LIVE_LOG_TAIL", "REF_KEY", "NOMATH", "cost_bundle",
]

MIME = "application/vnd.replicate.prediction+json"
SWEEP_MIME = "application/vnd.replicate.sweep+json"
#: a file in the payload whose bytes are the bundle's `image/png`: `{"type": "file", "ref":
#: "image/png", name, content_type, size}` with no `url` (the extension reads `data[ref]`)
REF_KEY = "ref"

# the short names live.py, rerun.py and commands.py import from here
_secs = secs
_b64 = b64
_e = escape


def _finished(p: Prediction) -> bool:
    """Final already while its Completed event is being handed to listeners (`p.done` is set
    only after them)."""
    return p.status in TERMINAL


def _ref_single_png(output: Any) -> bool:
    """Point the payload's one PNG file at the bundle's `image/png` (which holds its bytes)
    instead of embedding them a second time; True when it did."""
    found: list[dict[str, Any]] = []

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            if v.get("type") == "file" and v.get("content_type") == "image/png" and isinstance(v.get("url"), str) \
                    and v["url"].startswith("data:"):
                found.append(v)
            else:
                for x in v.values():
                    walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(output)
    if len(found) != 1:
        return False
    del found[0]["url"]
    found[0][REF_KEY] = "image/png"
    return True


def render(p: Prediction, *, final: bool | None = None, preview_uri: Any = ...,
           running: dict[str, Any] | None = None, forecast: dict[str, Any] | None = None,
           refs: bool = True, total: bool = True) -> dict[str, Any]:
    """The bundle of a prediction now. `preview_uri` lets the live display hold back a preview
    that arrived faster than the preview rate. While it runs, the live display passes what it
    has cost so far (`running`: predict_time, cost_usd, hardware, billing) and, before that,
    its `forecast` (cost_usd, basis); both ride in the payload (`running`, `forecast`) so the
    extension's cell line and status bar can show them, and both are gone once it is final.

    A final bundle holds each image once: a single PNG output's bytes are `image/png` and the
    payload points at them (`{"type": "file", "ref": "image/png"}`; `refs=False` for a payload
    that travels in another bundle, as a sweep's); the HTML shows big images as thumbnails.
    `total=False`: its cost line without the notebook total (a sweep's member: its grid says it once).
    A running payload carries only the last `LIVE_LOG_TAIL` characters of the logs
    (`logs_truncated`: how many were left out); the final one carries them all."""
    final = _finished(p) if final is None else final
    data = p.to_json()
    if not final and isinstance(data.get("logs"), str) and len(data["logs"]) > LIVE_LOG_TAIL:
        data["logs_truncated"] = len(data["logs"]) - LIVE_LOG_TAIL
        data["logs"] = data["logs"][-LIVE_LOG_TAIL:]
    if preview_uri is not ...:
        data["preview"] = preview_uri if not final else None
    if final:  # a listener runs before `p.done` is set: make the final payload final
        data["progress"] = None
        data["preview"] = None
        data["record"] = record_of(p)  # enough to run it again (%replicate rerun, replay)
    else:
        if running is not None and p.started_at is not None:
            data["running"] = dict(running)
        if forecast is not None:
            data["forecast"] = dict(forecast)
    text = p.text
    line = cost_line(p, total=total) if final else None
    live = "" if final else (running_line(data.get("running")) or forecast_line(data.get("forecast")))
    png = images_png(p, text) if final else None
    bundle: dict[str, Any] = {MIME: data, "text/html": card_html(p, data, final=final, text=text, line=line,
                                                                 thumb=png is not None),
                              "text/plain": card_text(p, final=final, text=text, line=line, live=live)}
    if png:
        bundle["image/png"] = png
        imgs = [f for f in p.files if f.is_image]
        if refs and len(imgs) == 1 and imgs[0].content_type == "image/png":
            _ref_single_png(data.get("output"))
    return bundle


def prediction_bundle(p: Prediction, current_cell: int | None = None) -> dict[str, Any]:
    """A Prediction as a value. When its live display is in `current_cell` already (a
    `%%replicate` cell whose value is the Prediction: `p.display_cell`), the value shows as
    one text line instead of a second copy of the card."""
    if p.display_cell is not None and p.display_cell == current_cell:
        # no status in it: an --async cell's value is drawn once, at the start, and saved so
        # (its card above is the one that follows the run)
        return {"text/plain": f"<Prediction {p.id} {p.model}>"}
    return render(p)


def cost_bundle(predictions: list[Prediction]) -> dict[str, Any]:
    """The one cost line of a cell whose predictions showed no card (`rj.run`, `rj.stream`, a
    loop of them): one prediction's cost line, or several's summary, with the notebook total."""
    line = cost_line(predictions[0]) if len(predictions) == 1 else summary_line(predictions)
    return {"text/plain": "cost: " + line,
            "text/html": f'<div class="rj-cost rj-cell-cost {NOMATH}" style="opacity:.75;font-size:90%">{escape(line)}</div>'}


def file_bundle(f: FileOutput) -> dict[str, Any]:
    """`FileOutput._repr_mimebundle_`: the image itself, a player, text, or a download link."""
    bundle: dict[str, Any] = {"text/html": file_html(f), "text/plain": repr(f)}
    if f.content_type in ("image/png", "image/jpeg", "image/gif"):
        bundle[f.content_type] = b64(f.read())
    elif f.is_image:
        try:
            bundle["image/png"] = b64(png_bytes(f))
        except Exception:
            pass
    return bundle


def files_bundle(items: FileOutputs) -> dict[str, Any]:
    """A list output holding files (`FileOutputs`) as a cell's value: each file as
    `file_bundle` shows one (an image, a player, text, a link), one after another, and its
    images as one PNG (the one image, or a grid) for frontends that show only `image/png`;
    `text/plain` is the list's repr, as it was."""
    parts = [file_html(x, max_width=512) if isinstance(x, FileOutput) else f"<pre>{escape(repr(x))}</pre>"
             for x in items]
    html = ('<div class="rj-files" style="display:flex;flex-wrap:wrap;gap:4px;align-items:flex-start">'
            + "".join(f"<div>{part}</div>" for part in parts) + "</div>")
    bundle: dict[str, Any] = {"text/html": html, "text/plain": repr(items)}
    imgs = [x for x in items if isinstance(x, FileOutput) and x.is_image]
    if imgs:
        try:
            bundle["image/png"] = b64(png_bytes(imgs[0]) if len(imgs) == 1 else compose_grid(imgs))
        except Exception:  # an image PIL cannot read: the html still has it
            pass
    return bundle
