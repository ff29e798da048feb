"""Run recorded predictions again: one (`rerun`), or a whole saved notebook (`replay`).

A rerun is an ordinary prediction made from a record (the model found again, the input rebuilt
with its files and its seed), through `api.prepare` → `api.execute` like any cell: displayed,
costed and budgeted the same way. Whether it reproduced is judged by output hashes; with
`compare=True` it returns a `Comparison` (old and new side by side: identical hashes, pixel
difference for images, a word diff for text, time and cost).

`replay(path)` plans every recorded prediction of a saved notebook first (each model resolved
on the chosen backend, each input rebuilt and validated), so a model the backend cannot run or
a file that is gone refuses the replay before anything runs. It then runs them in order under
`budget`, stopping before the one whose forecast would pass it, with one summary grid
(`ReplaySummary`); `dry_run=True` stops after the plan.
"""
from __future__ import annotations

import html
import math
import os
import pathlib
import sys
import time
from dataclasses import dataclass
from typing import Any, Mapping

from replicate_jupyter import api
from replicate_jupyter.cost import prices
from replicate_jupyter.errors import BackendError, BudgetExceeded, InputError, ModelNotFound, Problem
from replicate_jupyter.notebook.display import NOMATH, _secs, table_bundle, usd
from replicate_jupyter.notebook.records import Record, Spelling, find, input_of, records, resolve
from replicate_jupyter.prediction.files import FileOutput
from replicate_jupyter.prediction.record import output_sha256, pixel_difference, record_of, text_difference
from replicate_jupyter.session import session

__all__ = ["rerun", "replay", "rerun_records", "Comparison", "ReplaySummary", "Step", "COMPARE_MIME", "REPLAY_MIME"]

COMPARE_MIME = "application/vnd.replicate.compare+json"
REPLAY_MIME = "application/vnd.replicate.replay+json"
_e = html.escape


def _in_kernel() -> bool:
    shell = sys.modules.get("IPython")  # only a process that imported IPython can be in a kernel
    return shell is not None and shell.get_ipython() is not None


def _run(rec: Record, backend: str, ref: str, inp: dict[str, Any], *, show: bool,
         max_cost: float | None = None) -> Any:
    p = api.prepare(ref, inp, on=backend, max_cost=max_cost)
    live = None
    if show:
        from replicate_jupyter.notebook.live import LiveDisplay

        live = LiveDisplay(p).attach()
    try:
        api.execute(p)
    finally:
        if live is not None:
            p._done.wait(10)
            live.finish()
    return p


def rerun(id: str | None = None, *, cell: int | None = None, last: bool = False, on: str | None = None,
          compare: bool = False, notebook: str | os.PathLike[str] | None = None,
          input: Mapping[str, Any] | None = None) -> Any:
    """Run a recorded prediction again — by `id`, every one of `cell` (In[n]), or the `last` —
    on `on` (default: the backend that ran it). Records are looked for in this kernel, then in
    `notebook` (default: this kernel's own .ipynb when the frontend says). `input` overrides
    recorded inputs (a secret, a file that moved). Returns the new Prediction (a list for a
    cell with several), or with `compare` its Comparison (a list likewise)."""
    return rerun_records(find(id, cell=cell, last=last, notebook=notebook), on=on, compare=compare, input=input)


def rerun_records(found: list[Record], *, on: str | None = None, compare: bool = False,
                  input: Mapping[str, Any] | None = None, words: Spelling = Spelling()) -> Any:
    """`rerun` of records found already (`records.find`); `words` spell what an input error asks for."""
    pool = list(records(found[0].notebook)) if found[0].notebook is not None else []
    show, results = _in_kernel(), []
    for rec in found:
        backend = on or rec.backend
        ref, handle = resolve(rec, backend)
        p = _run(rec, backend, ref, input_of(rec, input, pool, schema=handle.schema, words=words), show=show)
        results.append(Comparison(rec, p) if compare else p)
    return results[0] if len(results) == 1 else results


# ----- compare -----------------------------------------------------------------------------------
def _shown(p: Any) -> Any:
    """A prediction's output as it shows: a token stream joined, else the output."""
    return p.text if p.concatenate and p.text is not None else p.output


def _items(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) and any(isinstance(v, FileOutput) for v in value) else [value]


def _marked(segments: list[tuple[str, str, str]]) -> tuple[str, str]:
    """A word diff as text (`[-old-]{+new+}`) and as HTML (<del>/<ins>)."""
    text, marked = [], []
    for op, old, new in segments:
        if op == "equal":
            text.append(old)
            marked.append(_e(old))
            continue
        if old:
            text.append(f"[-{old}-]")
            marked.append(f'<del style="background:#ffebe9">{_e(old)}</del>')
        if new:
            text.append(f"{{+{new}+}}")
            marked.append(f'<ins style="background:#dafbe1">{_e(new)}</ins>')
    return " ".join(text), " ".join(marked)


class Comparison:
    """An old record and its rerun side by side: `identical` when every output hash matches;
    per output the hashes, and for a difference the pixel distance or the text diff; time,
    cost, backend, hardware and version of each."""

    def __init__(self, old: Record, new: Any) -> None:
        self.old, self.new = old, new
        self.new_record = record_of(new)
        a, b = old.record.get("outputs") or [], self.new_record["outputs"]
        self.identical = bool(a) and new.status == "succeeded" and output_sha256(a) == output_sha256(b)
        self.outputs: list[dict[str, Any]] = []
        va, vb = _items(old.output()), _items(_shown(new))
        for i in range(max(len(a), len(b))):
            da, db = (a[i] if i < len(a) else None), (b[i] if i < len(b) else None)
            row: dict[str, Any] = {"index": i, "old": da and da.get("sha256"), "new": db and db.get("sha256")}
            row["same"] = row["old"] is not None and row["old"] == row["new"]
            x, y = (va[i] if i < len(va) else None), (vb[i] if i < len(vb) else None)
            if not row["same"] and isinstance(x, FileOutput) and isinstance(y, FileOutput) and x.is_image and y.is_image:
                row["pixels"] = pixel_difference(x, y)
            elif not row["same"] and isinstance(x, str) and isinstance(y, str):
                row["similarity"], segments = text_difference(x, y)
                row["diff"], row["diff_html"] = _marked(segments)
            self.outputs.append(row)

    def facts(self) -> list[tuple[str, Any, Any]]:
        """(what, old, new) rows: the figures beside the outputs."""
        om, nm = self.old.metrics, self.new_record["metrics"]
        oldm, newm = self.old.record.get("model") or {}, self.new_record["model"]
        return [("backend", self.old.backend, self.new.backend),
                ("hardware", om.get("hardware"), nm.get("hardware")),
                ("version", oldm.get("version"), newm.get("version")),
                ("seed", self.old.record.get("seed"), self.new_record.get("seed")),
                ("predict time", _secs(om.get("predict_time")), _secs(nm.get("predict_time"))),
                ("cost", usd(om.get("cost_usd")), usd(nm.get("cost_usd"))),
                ("output sha256", (self.old.record.get("output_sha256") or "")[:16],
                 (self.new_record.get("output_sha256") or "")[:16])]

    def verdict(self) -> str:
        if self.identical:
            return f"identical: every output hash matches ({len(self.outputs)} output{'s' if len(self.outputs) != 1 else ''})"
        if self.new.status != "succeeded":
            return f"the rerun {self.new.status}: {self.new.error or ''}".rstrip(": ")
        n = sum(not r["same"] for r in self.outputs)
        return f"different: {n} of {len(self.outputs)} outputs differ"

    def to_json(self) -> dict[str, Any]:
        rows = [{k: v for k, v in r.items() if k != "diff_html"} for r in self.outputs]
        return {"old": self.old.record, "new": self.new_record, "identical": self.identical, "outputs": rows,
                "verdict": self.verdict()}

    def _side(self, value: Any) -> str:
        parts = []
        for v in _items(value):
            if isinstance(v, FileOutput) and v.is_image:
                parts.append(f'<img src="{_e(v.to_json()["url"])}" style="max-width:256px"/>')
            elif isinstance(v, FileOutput):
                parts.append(f"<code>{_e(v.name)}</code> ({v.size} B)")
            elif v is not None:
                parts.append(f'<pre style="white-space:pre-wrap;max-width:40em">{_e(str(v)[:4000])}</pre>')
        return "".join(parts)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        color = "#1a7f37" if self.identical else "#cf222e"
        facts = "".join(f"<tr><td>{_e(k)}</td><td>{_e(str(a))}</td><td>{_e(str(b))}</td></tr>" for k, a, b in self.facts())
        notes, lines = [], []
        for r in self.outputs:
            if r["same"]:
                continue
            if "pixels" in r:
                notes.append(f"output {r['index']}: pixels {r['pixels']}")
            if "diff" in r:
                notes.append(f"output {r['index']}: similarity {r['similarity']}")
                lines.append(f'<div style="white-space:pre-wrap">{r["diff_html"]}</div>')
        old_new = (f'<table class="rj-compare-sides"><tr><th>old ({_e(self.old.id)})</th><th>new ({_e(self.new.id)})</th></tr>'
                   f'<tr><td style="vertical-align:top">{self._side(self.old.output())}</td><td style="vertical-align:top">'
                   f'{self._side(_shown(self.new))}'
                   "</td></tr></table>")
        body = (f'<div class="rj-compare {NOMATH}"><b style="color:{color}">{_e(self.verdict())}</b>{old_new}'
                f'<table class="rj-table"><tr><th></th><th>old</th><th>new</th></tr>{facts}</table>'
                + "".join(f"<div>{_e(n)}</div>" for n in notes) + "".join(lines) + "</div>")
        text = table_bundle(["", "old", "new"], [list(f) for f in self.facts()], title=self.verdict())["text/plain"]
        text += "".join(f"\n{n}" for n in notes) + "".join(f"\n{r['diff']}" for r in self.outputs if "diff" in r)
        return {COMPARE_MIME: self.to_json(), "text/html": body, "text/plain": text}

    def __repr__(self) -> str:
        return f"<Comparison {self.old.id} → {self.new.id}: {self.verdict()}>"


# ----- replay ------------------------------------------------------------------------------------
@dataclass
class Step:
    """One recorded prediction in a replay: its plan (backend, reference, input, forecast) and,
    once run, the new Prediction. `state`: planned, refused, skipped, running, same, different,
    failed, not run."""

    n: int
    rec: Record
    backend: str
    ref: str | None = None
    input: dict[str, Any] | None = None
    forecast: float = 0.0
    estimate: bool = False
    state: str = "planned"
    note: str = ""
    new: Any = None
    new_sha: str | None = None  # the rerun's output_sha256

    @property
    def cost(self) -> float:
        return float(self.new.metrics.get("cost_usd") or 0.0) if self.new is not None else 0.0


def _plan(rec: Record, n: int, on: str | None, pool: list[Record], overrides: Mapping[str, Any] | None) -> Step:
    from replicate_jupyter.model.validation import validate

    step = Step(n, rec, on or rec.backend)
    if rec.status != "succeeded":
        step.state, step.note = "skipped", f"was {rec.status}"
        return step
    try:
        step.ref, handle = resolve(rec, step.backend)
        step.input = validate(handle.schema, input_of(rec, overrides, pool, schema=handle.schema), model=handle.name)
    except (ModelNotFound, BackendError, InputError) as exc:
        step.state, step.note = "refused", str(exc)
        return step
    m = rec.metrics
    step.forecast = float(m.get("cost_usd") or prices.cost_of(float(m.get("predict_time") or 0), m.get("hardware")))
    step.estimate = step.backend != rec.backend
    return step


class ReplaySummary:
    """A replay's one grid: per recorded prediction old vs new (same/different), cost each,
    and the totals; for a dry run, what would run where and the forecast."""

    def __init__(self, path: pathlib.Path, steps: list[Step], *, dry_run: bool, budget: float | None) -> None:
        self.path, self.steps, self.dry_run, self.budget = path, steps, dry_run, budget
        self.seconds = 0.0  # wall time of the replay
        self.shown_in: int | None = None  # the cell whose live display shows it

    @property
    def predictions(self) -> list[Any]:
        return [s.new for s in self.steps if s.new is not None]

    @property
    def identical(self) -> bool:
        ran = [s for s in self.steps if s.rec.status == "succeeded"]
        return bool(ran) and all(s.state == "same" for s in ran)

    @property
    def total_old(self) -> float:
        return round(sum(float(s.rec.metrics.get("cost_usd") or 0) for s in self.steps), 8)

    @property
    def total_new(self) -> float:
        return round(sum(s.cost for s in self.steps), 8)

    @property
    def forecast(self) -> float:
        return round(sum(s.forecast for s in self.steps if s.state not in ("refused", "skipped")), 8)

    @property
    def original_seconds(self) -> float:
        """Predict time of the original run (sum over its recorded predictions)."""
        return round(sum(float(s.rec.metrics.get("predict_time") or 0) for s in self.steps), 6)

    def rows(self) -> list[list[Any]]:
        out = []
        for s in self.steps:
            r = s.rec
            out.append([s.n, "" if r.cell is None else f"[{r.cell}]", r.model, f"{r.backend} → {s.backend}",
                        "" if r.record.get("seed") is None else r.record["seed"],
                        (r.record.get("output_sha256") or "")[:10], (s.new_sha or "")[:10],
                        s.state + (f" ({s.note})" if s.note and s.state not in ("same",) else ""),
                        usd(r.metrics.get("cost_usd")),
                        (usd(s.forecast) + (" est." if s.estimate else "")) if self.dry_run else usd(s.cost)])
        return out

    def footer(self) -> str:
        states: dict[str, int] = {}
        for s in self.steps:
            states[s.state] = states.get(s.state, 0) + 1
        counts = ", ".join(f"{v} {k}" for k, v in states.items())
        if self.dry_run:
            return f"dry run: {counts} · forecast {usd(self.forecast)} · nothing ran, nothing charged"
        return (f"{counts} · old total {usd(self.total_old)} · new total {usd(self.total_new)} · replay "
                f"{self.seconds:.2f} s (original predict time {self.original_seconds:.2f} s)"
                + (f" · budget {usd(self.budget)}" if self.budget is not None else ""))

    def to_json(self) -> dict[str, Any]:
        steps = [{"id": s.rec.id, "new_id": getattr(s.new, "id", None), "model": s.rec.model, "backend": s.backend,
                  "state": s.state, "note": s.note, "forecast_usd": s.forecast, "old_cost_usd": s.rec.metrics.get(
                      "cost_usd"), "new_cost_usd": s.cost if s.new else None, "new_sha256": s.new_sha} for s in self.steps]
        return {"notebook": str(self.path), "dry_run": self.dry_run, "budget": self.budget, "identical": self.identical,
                "total_old_usd": self.total_old, "total_new_usd": self.total_new, "forecast_usd": self.forecast,
                "seconds": round(self.seconds, 3), "steps": steps}

    def bundle(self) -> dict[str, Any]:
        cols = ["#", "cell", "model", "backend", "seed", "old sha256", "new sha256", "result", "old cost",
                "forecast" if self.dry_run else "new cost"]
        title = f"{'Dry run of' if self.dry_run else 'Replay of'} {self.path.name}"
        grid = table_bundle(cols, self.rows(), title=title, footer=self.footer())
        grid["text/html"] = f'<div class="rj-replay {NOMATH}">{grid["text/html"]}</div>'
        grid[REPLAY_MIME] = self.to_json()
        return grid

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        if self.shown_in is not None and self.shown_in == session.current_cell:
            return {"text/plain": repr(self)}  # its live grid shows in this cell already
        return self.bundle()

    def __repr__(self) -> str:
        return f"<ReplaySummary {self.path.name}: {self.footer()}>"


def replay(path: str | os.PathLike[str], on: str | None = None, budget: float | None = None, dry_run: bool = False,
           input: Mapping[str, Any] | None = None) -> ReplaySummary:
    """Rerun every recorded prediction of the saved notebook `path`, in order, on `on` (default:
    each one's own backend), spending at most `budget` USD. Everything is planned first: a model
    `on` cannot resolve, or an input file that is gone, raises InputError before anything runs.
    `dry_run`: the plan only (what would run where, the forecast); nothing runs or is charged."""
    if budget is not None and not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
        raise InputError([Problem("budget", "minimum", budget, "a finite number of USD > 0")])
    recs = records(path)
    pool = list(recs)
    steps = [_plan(rec, i + 1, on, pool, input) for i, rec in enumerate(recs)]
    summary = ReplaySummary(pathlib.Path(path), steps, dry_run=dry_run, budget=budget)
    refused = [s for s in steps if s.state == "refused"]
    if dry_run:
        for s in steps:
            if s.state == "planned":
                s.state, s.note = "would run", f"{s.ref} on {s.backend}"
        return summary
    if refused:
        raise InputError([Problem(f"#{s.n} {s.rec.model}", "replay", s.rec.id, f"runnable on {s.backend}",
                                  message=f"cannot replay on {s.backend} (nothing ran): {s.note}") for s in refused])
    return _execute(summary)


def _execute(summary: ReplaySummary) -> ReplaySummary:
    handle = None
    if _in_kernel():
        from IPython.display import display

        handle = display(summary.bundle(), raw=True, display_id=True)
        summary.shown_in = session.current_cell
    t0, spent = time.monotonic(), 0.0
    try:
        for s in summary.steps:
            if s.state != "planned":
                continue
            remaining = None if summary.budget is None else summary.budget - spent
            if remaining is not None and (remaining <= 0 or spent + s.forecast > (summary.budget or 0.0)):
                s.note = f"spent {usd(spent)} + forecast {usd(s.forecast)} would pass the budget: replay stopped"
                break  # the rest stay planned, and end as not run
            s.state = "running"
            if handle is not None:
                handle.update(summary.bundle(), raw=True)
            try:
                s.new = _run(s.rec, s.backend, str(s.ref), dict(s.input or {}), show=False, max_cost=remaining)
            except BudgetExceeded as exc:
                s.note = str(exc)
                break
            spent, s.new_sha = spent + s.cost, record_of(s.new)["output_sha256"]
            same = s.new.status == "succeeded" and s.new_sha == s.rec.record.get("output_sha256")
            s.state = "same" if same else ("different" if s.new.status == "succeeded" else s.new.status)
            if s.state not in ("same", "different"):
                s.note = s.new.error or ""
    finally:
        summary.seconds = time.monotonic() - t0
        for s in summary.steps:
            if s.state in ("planned", "running"):
                s.state = "not run"
        if handle is not None:
            handle.update(summary.bundle(), raw=True)
    return summary

