"""How a prediction looks in a notebook: mime bundles, and a live display updated in place.

Every final bundle carries `application/vnd.replicate.prediction+json` (= `Prediction.to_json()`)
for the JupyterLab extension, and `text/html`, `image/png` (when there is an image) and
`text/plain` beside it, so any frontend (and a reader of the saved file, with no kernel) sees the
outputs and the cost line. HTML never holds a script, and every string that came from a model
or a user is escaped.

Every renderer here is a pure function of what it is given: nothing reads the session or the
kernel's state. A cost line's notebook total is the one the ledger stamped onto the
prediction's metrics when it recorded it; whether a prediction's card already shows in the
running cell is the caller's `current_cell` argument. Nothing here knows which runner ran.
Live, in-place displays are `live.py`; `renderers.py` hands these functions to IPython.
"""
from __future__ import annotations

import base64
import html
import io
import json
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from replicate_jupyter.cost.billing import BILLING_KEY
from replicate_jupyter.cost.ledger import GROUPS, Ledger
from replicate_jupyter.cost.text import (
    assumptions_of,
    cost_line,
    forecast_line,
    money,
    notebook_total,
    running_line,
    secs,
    summary_line,
    usd,
)
from replicate_jupyter.prediction.files import FileOutput
from replicate_jupyter.prediction.jsonable import jsonable
from replicate_jupyter.prediction.prediction import TERMINAL
from replicate_jupyter.prediction.record import record_of

if TYPE_CHECKING:
    from replicate_jupyter.prediction.prediction import Prediction

__all__ = [
    "MIME", "SWEEP_MIME", "LEDGER_MIME", "prediction_bundle", "file_bundle", "ledger_bundle", "table_bundle",
    "error_bundle", "cost_line", "running_line", "forecast_line", "summary_line", "notebook_total", "usd", "render",
    "compose_grid", "THUMB_ABOVE", "THUMB_SIDE", "LIVE_LOG_TAIL", "REF_KEY",
]

MIME = "application/vnd.replicate.prediction+json"
SWEEP_MIME = "application/vnd.replicate.sweep+json"
#: the ledger's machine data: our own type, so JupyterLab shows the HTML table (application/json
#: would outrank text/html there and show a JSON tree instead)
LEDGER_MIME = "application/vnd.replicate.ledger+json"
_e = html.escape
#: JupyterLab typesets `$…$` in HTML outputs as maths; dollar amounts must not turn into formulas.
NOMATH = "tex2jax_ignore mathjax_ignore"

_STATUS_COLOR = {"starting": "#888", "processing": "#1f6feb", "succeeded": "#1a7f37",
                 "failed": "#cf222e", "canceled": "#9a6700"}


# ----- small formatters (the cost ones live in cost/text.py, shared with the ledger's CSV) -------
_secs = secs


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def _finished(p: Prediction) -> bool:
    """Final already while its Completed event is being handed to listeners (`p.done` is set
    only after them)."""
    return p.status in TERMINAL


def _cost_details_html(p: Prediction) -> str:
    """The card's fold under the cost line: how the figure was reached and what was assumed."""
    b = p.metrics.get(BILLING_KEY)
    if not b:
        return ""
    rows = [("billed", "per unit" if b.get("mode") == "per-unit" else f"per second of {b.get('sku') or '?'}")]
    for unit, qty in (b.get("units") or {}).items():
        rows.append((unit, f"{qty:g} × ${float((b.get('prices') or {}).get(unit, 0)):g}"))
    if b.get("source"):
        rows.append(("price source", f"{b['source']}" + (f" ({b['date']})" if b.get("date") else "")))
    for a in assumptions_of(b):
        rows.append(("assumed", a))
    body = "".join(f"<tr><th style='text-align:left'>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    label = "Cost details (estimate)" if b.get("estimate") else "Cost details"
    return f'<details class="rj-cost-details"><summary>{label}</summary><table>{body}</table></details>'


# ----- images ------------------------------------------------------------------------------------
def _png_bytes(f: FileOutput) -> bytes:
    if f.content_type == "image/png":
        return f.read()
    buf = io.BytesIO()
    f.image().convert("RGBA").save(buf, format="PNG")
    return buf.getvalue()


def compose_grid(images: Sequence[Any], labels: Sequence[str] | None = None, cols: int | None = None) -> bytes:
    """Several images → one PNG grid (with a caption under each when labels are given), so
    frontends that only show `image/png` still see every image."""
    from PIL import Image, ImageDraw

    pics = [Image.open(io.BytesIO(_png_bytes(x))).convert("RGB") if isinstance(x, FileOutput) else x.convert("RGB")
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


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


#: an image file up to this many bytes is embedded whole in a final card's HTML; a bigger one
#: shows there as a small JPEG thumbnail, its bytes being in the bundle's `image/png` already
THUMB_ABOVE = 32 * 1024
#: the thumbnail's longest side in px (the card shows images at most 512 px wide)
THUMB_SIDE = 256
#: a running card's payload carries only the tail of the logs (the final one carries them all)
LIVE_LOG_TAIL = 4000


def _thumbnail_uri(f: FileOutput) -> str:
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
    return "data:image/jpeg;base64," + _b64(buf.getvalue())


# ----- outputs as HTML -------------------------------------------------------------------------
def _file_html(f: FileOutput, max_width: int = 512, thumb: bool = False) -> str:
    """`thumb`: a big image shows as its thumbnail (its full bytes are elsewhere in the bundle)."""
    ct = f.content_type
    name = _e(f.name)
    if ct.startswith("image/") and thumb and f.size > THUMB_ABOVE:
        try:
            return (f'<img class="rj-image rj-thumb" src="{_e(_thumbnail_uri(f))}" alt="{name}" '
                    f'title="{name} ({_size(f.size)}; full size in the output\'s image/png)" '
                    f'style="max-width:{max_width}px;width:{max_width}px;image-rendering:auto"/>')
        except Exception:  # PIL cannot read it: embed it whole, as before
            pass
    src = _e(f.url if f.url.startswith("data:") else f.to_json()["url"])
    if ct.startswith("image/"):
        return (f'<img class="rj-image" src="{src}" alt="{name}" title="{name}" '
                f'style="max-width:{max_width}px;image-rendering:auto"/>')
    if ct.startswith("audio/"):
        return f'<audio class="rj-audio" controls src="{src}" title="{name}"></audio>'
    if ct.startswith("video/"):
        return f'<video class="rj-video" controls src="{src}" title="{name}" style="max-width:{max_width}px"></video>'
    if ct.startswith("text/") or ct in ("application/json",):
        body = f.read()[:20000].decode("utf-8", "replace")
        return f'<pre class="rj-text" title="{name}">{_e(body)}</pre>'
    return f'<a class="rj-file" download="{name}" href="{src}">{name}</a> ({_e(ct)}, {_size(f.size)})'


def _value_html(value: Any, p: Prediction | None = None, text: str | None = None, thumb: bool = False) -> str:
    if value is None:
        return ""
    if text is not None:
        return f'<pre class="rj-text" style="white-space:pre-wrap">{_e(text)}</pre>'
    if isinstance(value, FileOutput):
        return _file_html(value, thumb=thumb)
    if isinstance(value, str):
        return f'<pre class="rj-text" style="white-space:pre-wrap">{_e(value)}</pre>'
    if isinstance(value, list):
        if value and all(isinstance(v, FileOutput) and v.is_image for v in value):
            cells = "".join(f'<div>{_file_html(v, 256, thumb=thumb)}</div>' for v in value)
            return f'<div class="rj-grid" style="display:flex;flex-wrap:wrap;gap:4px">{cells}</div>'
        return "".join(f'<div class="rj-item">{_value_html(v, thumb=thumb)}</div>' for v in value)
    return f'<pre class="rj-json">{_e(json.dumps(jsonable(value), indent=2, default=str))}</pre>'


def _value_text(value: Any, p: Prediction | None = None, text: str | None = None) -> str:
    if value is None:
        return ""
    if text is not None:
        return text
    if isinstance(value, FileOutput):
        return f"{value.name} ({value.content_type}, {_size(value.size)})"
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, FileOutput) for v in value):
        return "\n".join(_value_text(v) for v in value)
    return json.dumps(jsonable(value), indent=2, default=str)


# ----- one prediction -------------------------------------------------------------------------
def _progress_html(prog: dict | None) -> str:
    if not prog:
        return ""
    step, total, eta = prog.get("step"), prog.get("total"), prog.get("eta_s")
    bar = f'<progress value="{int(step or 0)}" max="{int(total)}" style="width:240px"></progress> ' if total else ""
    label = f"step {step}/{total}" if total else f"step {step}"
    if eta is not None:
        label += f" · ETA {_secs(eta)}"
    return f'<div class="rj-progress">{bar}<span>{_e(label)}</span></div>'


def _card_html(p: Prediction, data: dict[str, Any], *, final: bool, compact: bool = False, text: str | None = None,
               line: str | None = None, thumb: bool = False) -> str:
    """`line`: the cost line, given once the prediction is final. `thumb`: big images as
    thumbnails (the bundle holds their bytes in `image/png`)."""
    status = data["status"]
    color = _STATUS_COLOR.get(status, "#888")
    head = (f'<div class="rj-head"><b>{_e(str(p.model))}</b> '
            f'<span class="rj-status" data-status="{_e(status)}" style="color:{color};font-weight:bold">{_e(status)}</span>'
            f' <code style="opacity:.6">{_e(p.id)}</code></div>')
    parts = [head]
    if not final:
        parts.append(_progress_html(data.get("progress")))
        if data.get("preview"):
            parts.append(f'<img class="rj-preview" src="{_e(data["preview"])}" style="max-width:256px;opacity:.85"/>')
    if p.cancel_reason and status == "canceled":
        parts.append(f'<div class="rj-cancel-reason">{_e(p.cancel_reason)}</div>')
    if p.error and status == "failed":
        parts.append(f'<pre class="rj-error" style="color:#cf222e;white-space:pre-wrap">{_e(p.error)}</pre>')
    if p.traceback:
        parts.append('<details class="rj-traceback" open><summary>Model traceback</summary>'
                     f'<pre>{_e(p.traceback)}</pre></details>')
    parts.append(_value_html(p.output, p, text, thumb=thumb))
    logs = p.logs
    if logs and not compact:
        n = logs.count("\n") or 1
        tail = logs[-(20000 if final else LIVE_LOG_TAIL):]
        parts.append(f'<details class="rj-logs"><summary>Logs ({n} line{"s" if n != 1 else ""})</summary>'
                     f'<pre>{_e(tail)}</pre></details>')
    if line is not None:
        parts.append(f'<div class="rj-cost" style="opacity:.75;font-size:90%">{_e(line)}</div>')
        parts.append(_cost_details_html(p))
    elif not final and (data.get("running") or data.get("forecast")):
        live = running_line(data.get("running")) or forecast_line(data.get("forecast"))
        parts.append(f'<div class="rj-cost rj-cost-running" style="opacity:.75;font-size:90%">{_e(live)}</div>')
    return f'<div class="rj-prediction {NOMATH}" data-id="{_e(p.id)}" data-status="{_e(status)}">{"".join(parts)}</div>'


def _card_text(p: Prediction, *, final: bool, text: str | None = None, line: str | None = None,
               live: str = "") -> str:
    lines = [f"{p.model} · {p.status} · {p.id}"]
    if not final and p.progress:
        step, total = p.progress
        lines.append(f"step {step}/{total}" if total else f"step {step}")
    if not final and live:
        lines.append(live)
    if p.cancel_reason and p.status == "canceled":
        lines.append(p.cancel_reason)
    if p.error and p.status == "failed":
        lines.append(f"error: {p.error}")
    if p.traceback:
        lines.append(p.traceback.rstrip("\n"))
    out = _value_text(p.output, p, text)
    if out:
        lines.append(out)
    if line is not None:
        lines.append("cost: " + line)
    return "\n".join(lines)


def _images_png(p: Prediction, text: str | None = None) -> str | None:
    if text is not None:  # a text model: no image to look for among its tokens
        return None
    imgs = [f for f in p.files if f.is_image]
    if not imgs:
        return None
    try:
        return _b64(_png_bytes(imgs[0]) if len(imgs) == 1 else compose_grid(imgs))
    except Exception:  # an image PIL cannot read: the html still has it
        return None


#: a file in the payload whose bytes are the bundle's `image/png`: `{"type": "file", "ref":
#: "image/png", name, content_type, size}` with no `url` (the extension reads `data[ref]`)
REF_KEY = "ref"


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
           refs: bool = True) -> dict[str, Any]:
    """The bundle of a prediction now. `preview_uri` lets the live display hold back a preview
    that arrived faster than the preview rate. While it runs, the live display passes what it
    has cost so far (`running`: predict_time, cost_usd, hardware, billing) and, before that,
    its `forecast` (cost_usd, basis); both ride in the payload (`running`, `forecast`) so the
    extension's cell line and status bar can show them, and both are gone once it is final.

    A final bundle holds each image once: a single PNG output's bytes are `image/png` and the
    payload points at them (`{"type": "file", "ref": "image/png"}`; `refs=False` for a payload
    that travels in another bundle, as a sweep's); the HTML shows big images as thumbnails.
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
    line = cost_line(p) if final else None
    live = "" if final else (running_line(data.get("running")) or forecast_line(data.get("forecast")))
    png = _images_png(p, text) if final else None
    bundle: dict[str, Any] = {MIME: data, "text/html": _card_html(p, data, final=final, text=text, line=line,
                                                                  thumb=png is not None),
                              "text/plain": _card_text(p, final=final, text=text, line=line, live=live)}
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
        return {"text/plain": repr(p)}
    return render(p)


def file_bundle(f: FileOutput) -> dict[str, Any]:
    """`FileOutput._repr_mimebundle_`: the image itself, a player, text, or a download link."""
    bundle: dict[str, Any] = {"text/html": _file_html(f), "text/plain": repr(f)}
    if f.content_type in ("image/png", "image/jpeg", "image/gif"):
        bundle[f.content_type] = _b64(f.read())
    elif f.is_image:
        try:
            bundle["image/png"] = _b64(_png_bytes(f))
        except Exception:
            pass
    return bundle


# ----- tables (ledger, models, schema, predictions) -----------------------------------------
def table_bundle(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None,
                 footer: str | None = None) -> dict[str, Any]:
    """A plain table as html + aligned text, for the line magics."""
    rows = [["" if v is None else str(v) for v in r] for r in rows]
    head = "".join(f"<th style='text-align:left'>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{_e(v)}</td>" for v in r) + "</tr>" for r in rows)
    parts = []
    if title:
        parts.append(f"<b>{_e(title)}</b>")
    parts.append(f"<table class='rj-table {NOMATH}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    if footer:
        parts.append(f"<div>{_e(footer)}</div>")
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    fmt = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    text = ([title] if title else []) + [fmt(list(columns)), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    if footer:
        text.append(footer)
    return {"text/html": "".join(parts), "text/plain": "\n".join(text)}


_GROUP_TITLES = {"cell": "By cell", "model": "By model", "backend": "By backend", "day": "By day"}


def ledger_bundle(ledger: Ledger) -> dict[str, Any]:
    """`%replicate cost` and `rj.ledger()`: the ledger by cell, model, backend and day, with the
    totals; estimates marked. Its machine data travels as LEDGER_MIME, never application/json
    (which JupyterLab would show as a JSON tree in place of these tables)."""
    def label(key: str, k: Any) -> str:
        return ("–" if k is None else f"[{k}]") if key == "cell" else ("–" if k is None else str(k))

    parts = [table_bundle([key, "predictions", "predict time", "cost"],
                          [[label(key, k), int(g["predictions"]), _secs(g["predict_time"]),
                            money(g["cost_usd"], g["estimated"] > 0)] for k, g in ledger.by(key).items()],
                          title=_GROUP_TITLES[key]) for key in GROUPS]
    n_est = ledger.estimated()
    total = (f"Total: {len(ledger)} prediction{'s' if len(ledger) != 1 else ''} · {_secs(ledger.gpu_seconds())} · "
             f"{money(ledger.total(), n_est > 0)}")
    if n_est:
        total += f" ({n_est} estimated: see each card's cost details)"
    html_parts = "".join(f"<div class='rj-ledger-group'>{t['text/html']}</div>" for t in parts)
    return {
        "text/html": (f"<div class='rj-ledger {NOMATH}' style='display:flex;flex-wrap:wrap;gap:0 24px'>{html_parts}"
                      f"<div style='flex-basis:100%'><b>{_e(total)}</b></div></div>"),
        "text/plain": "\n\n".join(t["text/plain"] for t in parts) + f"\n\n{total}",
        LEDGER_MIME: ledger.to_json(),
    }


def error_bundle(message: str, title: str = "Error") -> dict[str, Any]:
    return {"text/html": f"<pre class='rj-error' style='color:#cf222e;white-space:pre-wrap'>{_e(title)}: {_e(message)}</pre>",
            "text/plain": f"{title}: {message}"}
