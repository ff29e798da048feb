"""Tables for the line magics: plain tables, the ledger by cell/model/backend/day, errors.

Each is a bundle of HTML and aligned text, so `%replicate cost`, `models`, `predictions` and
the rest read the same in JupyterLab, a terminal and a saved notebook.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from replicate_jupyter.cost.ledger import GROUPS, Ledger
from replicate_jupyter.cost.text import money, secs, usd
from replicate_jupyter.notebook.markup import NOMATH
from replicate_jupyter.notebook.markup import escape as _e

__all__ = ["table_bundle", "ledger_bundle", "records_bundle", "error_bundle", "LEDGER_MIME"]

#: the ledger's machine data: our own type, so JupyterLab shows the HTML table (application/json
#: would outrank text/html there and show a JSON tree instead)
LEDGER_MIME = "application/vnd.replicate.ledger+json"

_GROUP_TITLES = {"cell": "By cell", "model": "By model", "backend": "By backend", "day": "By day"}


def table_bundle(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None,
                 footer: str | None = None) -> dict[str, Any]:
    """A plain table as html + aligned text, for the line magics."""
    cells = [["" if v is None else str(v) for v in r] for r in rows]
    head = "".join(f"<th style='text-align:left'>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{_e(v)}</td>" for v in r) + "</tr>"
                   for r in cells)
    parts = []
    if title:
        parts.append(f"<b>{_e(title)}</b>")
    parts.append(f"<table class='rj-table {NOMATH}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    if footer:
        parts.append(f"<div>{_e(footer)}</div>")
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def fmt(r: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()

    text = ([title] if title else []) + [fmt(list(columns)), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells]
    if footer:
        text.append(footer)
    return {"text/html": "".join(parts), "text/plain": "\n".join(text)}


def ledger_bundle(ledger: Ledger) -> dict[str, Any]:
    """`%replicate cost` and `rj.ledger()`: the ledger by cell, model, backend and day, with the
    totals; estimates marked. Its machine data travels as LEDGER_MIME, never application/json
    (which JupyterLab would show as a JSON tree in place of these tables)."""
    def label(key: str, k: Any) -> str:
        return ("–" if k is None else f"[{k}]") if key == "cell" else ("–" if k is None else str(k))

    parts = [table_bundle([key, "predictions", "predict time", "cost"],
                          [[label(key, k), int(g["predictions"]), secs(g["predict_time"]),
                            money(g["cost_usd"], g["estimated"] > 0)] for k, g in ledger.by(key).items()],
                          title=_GROUP_TITLES[key]) for key in GROUPS]
    n_est = ledger.estimated()
    total = (f"Total: {len(ledger)} prediction{'s' if len(ledger) != 1 else ''} · {secs(ledger.gpu_seconds())} · "
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


def records_bundle(recs: Sequence[Any]) -> dict[str, Any]:
    """`rj.records()` (a notebook's `Records`, or this kernel's) as one table: what each was
    and what it made (its output hash), so the one to rerun can be picked by id or cell."""
    rows = []
    for i, r in enumerate(recs):
        m = r.metrics
        rows.append([i + 1, "" if r.cell is None else f"[{r.cell}]", r.id, r.model, r.backend, r.status,
                     "" if r.record.get("seed") is None else r.record["seed"],
                     (r.record.get("output_sha256") or "")[:12], f"{float(m.get('predict_time') or 0):.2f} s",
                     usd(m.get("cost_usd"))])
    where = str(recs[0].notebook) if recs and recs[0].notebook else "this kernel"
    return table_bundle(["#", "cell", "id", "model", "backend", "status", "seed", "output sha256", "time", "cost"],
                        rows, title=f"{len(recs)} recorded prediction{'s' if len(recs) != 1 else ''} ({where})")


def error_bundle(message: str, title: str = "Error") -> dict[str, Any]:
    """An error the magics show as output (not a traceback): red in HTML, one line in text."""
    return {"text/html": f"<pre class='rj-error' style='color:#cf222e;white-space:pre-wrap'>{_e(title)}: {_e(message)}</pre>",
            "text/plain": f"{title}: {message}"}
