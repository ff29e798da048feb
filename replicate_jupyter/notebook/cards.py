"""A prediction's card: its HTML and its plain text, and how each kind of output looks.

The card is what any frontend shows (JupyterLab without the extension, a saved notebook read
with no kernel, nbviewer): status, progress, preview, error and traceback, the outputs, the
logs and the cost line with how it was reached. HTML never holds a script and every string
that came from a model or a user is escaped. Pure functions of what they are given:
`display.render` decides what (final or running, which cost line, thumbnails or not).
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from replicate_jupyter.cost.billing import BILLING_KEY
from replicate_jupyter.cost.text import assumptions_of, forecast_line, running_line, secs
from replicate_jupyter.notebook.images import THUMB_ABOVE, thumbnail_uri
from replicate_jupyter.notebook.markup import NOMATH, escape_text, size_text
from replicate_jupyter.notebook.markup import escape as _e
from replicate_jupyter.prediction.files import FileOutput
from replicate_jupyter.prediction.jsonable import jsonable

if TYPE_CHECKING:
    from replicate_jupyter.prediction.prediction import Prediction

__all__ = ["card_html", "card_text", "file_html", "value_html", "value_text", "progress_html",
           "cost_details_html", "LIVE_LOG_TAIL", "STATUS_COLOR"]

STATUS_COLOR = {"starting": "#888", "processing": "#1f6feb", "succeeded": "#1a7f37",
                "failed": "#cf222e", "canceled": "#9a6700"}
#: a running card's payload carries only the tail of the logs (the final one carries them all)
LIVE_LOG_TAIL = 4000


def cost_details_html(p: Prediction) -> str:
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


def file_html(f: FileOutput, max_width: int = 512, thumb: bool = False) -> str:
    """One file: an image, a player, its text, or a download link. `thumb`: a big image shows
    as its thumbnail (its full bytes are elsewhere in the bundle)."""
    ct = f.content_type
    name = _e(f.name)
    if ct.startswith("image/") and thumb and f.size > THUMB_ABOVE:
        try:
            return (f'<img class="rj-image rj-thumb" src="{_e(thumbnail_uri(f))}" alt="{name}" '
                    f'title="{name} ({size_text(f.size)}; full size in the output\'s image/png)" '
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
    return f'<a class="rj-file" download="{name}" href="{src}">{name}</a> ({_e(ct)}, {size_text(f.size)})'


def value_html(value: Any, p: Prediction | None = None, text: str | None = None, thumb: bool = False) -> str:
    """An output value as HTML (`text`: a text model's output, already joined)."""
    if value is None:
        return ""
    if text is not None:
        return f'<pre class="rj-text" style="white-space:pre-wrap">{escape_text(text)}</pre>'
    if isinstance(value, FileOutput):
        return file_html(value, thumb=thumb)
    if isinstance(value, str):
        return f'<pre class="rj-text" style="white-space:pre-wrap">{escape_text(value)}</pre>'
    if isinstance(value, list):
        if value and all(isinstance(v, FileOutput) and v.is_image for v in value):
            cells = "".join(f'<div>{file_html(v, 256, thumb=thumb)}</div>' for v in value)
            return f'<div class="rj-grid" style="display:flex;flex-wrap:wrap;gap:4px">{cells}</div>'
        return "".join(f'<div class="rj-item">{value_html(v, thumb=thumb)}</div>' for v in value)
    return f'<pre class="rj-json">{_e(json.dumps(jsonable(value), indent=2, default=str))}</pre>'


def value_text(value: Any, p: Prediction | None = None, text: str | None = None) -> str:
    """An output value as plain text (files by name, type and size)."""
    if value is None:
        return ""
    if text is not None:
        return text
    if isinstance(value, FileOutput):
        return f"{value.name} ({value.content_type}, {size_text(value.size)})"
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, FileOutput) for v in value):
        return "\n".join(value_text(v) for v in value)
    return json.dumps(jsonable(value), indent=2, default=str)


def progress_html(prog: dict[str, Any] | None) -> str:
    """A running card's bar: step n of total, with the ETA when there is one."""
    if not prog:
        return ""
    step, total, eta = prog.get("step"), prog.get("total"), prog.get("eta_s")
    bar = f'<progress value="{int(step or 0)}" max="{int(total)}" style="width:240px"></progress> ' if total else ""
    label = f"step {step}/{total}" if total else f"step {step}"
    if eta is not None:
        label += f" · ETA {secs(eta)}"
    return f'<div class="rj-progress">{bar}<span>{_e(label)}</span></div>'


def card_html(p: Prediction, data: dict[str, Any], *, final: bool, compact: bool = False, text: str | None = None,
              line: str | None = None, thumb: bool = False) -> str:
    """`data`: the payload the bundle carries (its status, progress, preview, running cost).
    `line`: the cost line, given once the prediction is final. `thumb`: big images as
    thumbnails (the bundle holds their bytes in `image/png`)."""
    status = data["status"]
    color = STATUS_COLOR.get(status, "#888")
    head = (f'<div class="rj-head"><b>{_e(str(p.model))}</b> '
            f'<span class="rj-status" data-status="{_e(status)}" style="color:{color};font-weight:bold">{_e(status)}</span>'
            f' <code style="opacity:.6">{_e(p.id)}</code></div>')
    parts = [head]
    if not final:
        parts.append(progress_html(data.get("progress")))
        if data.get("preview"):
            parts.append(f'<img class="rj-preview" src="{_e(data["preview"])}" style="max-width:256px;opacity:.85"/>')
    if p.cancel_reason and status == "canceled":
        parts.append(f'<div class="rj-cancel-reason">{_e(p.cancel_reason)}</div>')
    if p.error and status == "failed":
        parts.append(f'<pre class="rj-error" style="color:#cf222e;white-space:pre-wrap">{_e(p.error)}</pre>')
    if p.traceback:
        parts.append('<details class="rj-traceback" open><summary>Model traceback</summary>'
                     f'<pre>{_e(p.traceback)}</pre></details>')
    parts.append(value_html(p.output, p, text, thumb=thumb))
    logs = p.logs
    if logs and not compact:
        n = logs.count("\n") or 1
        tail = logs[-(20000 if final else LIVE_LOG_TAIL):]
        parts.append(f'<details class="rj-logs"><summary>Logs ({n} line{"s" if n != 1 else ""})</summary>'
                     f'<pre>{escape_text(tail)}</pre></details>')
    if line is not None:
        parts.append(f'<div class="rj-cost" style="opacity:.75;font-size:90%">{_e(line)}</div>')
        parts.append(cost_details_html(p))
    elif not final and (data.get("running") or data.get("forecast")):
        live = running_line(data.get("running")) or forecast_line(data.get("forecast"))
        parts.append(f'<div class="rj-cost rj-cost-running" style="opacity:.75;font-size:90%">{_e(live)}</div>')
    return f'<div class="rj-prediction {NOMATH}" data-id="{_e(p.id)}" data-status="{_e(status)}">{"".join(parts)}</div>'


def card_text(p: Prediction, *, final: bool, text: str | None = None, line: str | None = None,
              live: str = "") -> str:
    """The card as `text/plain`, for terminals, `print` and frontends with no HTML."""
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
    out = value_text(p.output, p, text)
    if out:
        lines.append(out)
    if line is not None:
        lines.append("cost: " + line)
    return "\n".join(lines)
