"""`Form`: a model's inputs as widgets, with Run / Cancel, live results, history and
"Copy as cell".

How a run reaches the notebook: when the form is displayed (while its cell executes) it also
emits an ordinary display output with its own display id, empty at first. Runs update that
display in place (`update_display_data`), which both JupyterLab (it routes updates by display
id to the cell that first showed it) and nbclient (it rewrites every output with that id) put
in the form's cell — so the saved notebook shows the last run's outputs and cost line to a
reader with no kernel and no widget state. Display rendering and throttling are display.py's
`LiveDisplay`; runs go through `api.prepare` (validation, budget) and `api.start` (a worker
thread: while a cell blocks, ipykernel handles no widget messages, so Cancel must not wait on
the run).
"""
from __future__ import annotations

import functools
import html
import threading
import uuid
from typing import Any

import ipywidgets as W

from replicate_jupyter import api
from replicate_jupyter.errors import InputError, PredictionTimeout, Problem, ReplicateJupyterError
from replicate_jupyter.model.validation import validate
from replicate_jupyter.notebook import display as rjdisplay
from replicate_jupyter.notebook import live as rjlive
from replicate_jupyter.notebook.forms import cell as cellmod
from replicate_jupyter.notebook.forms.fields import UNSET, Field, Layouts, build_field
from replicate_jupyter.notebook.forms.history import History
from replicate_jupyter.prediction.events import Completed, Event
from replicate_jupyter.prediction.files import InputFile
from replicate_jupyter.prediction.prediction import Prediction
from replicate_jupyter.session import session

__all__ = ["Form", "PRIMARY_COUNT"]

#: fields shown before the "Advanced inputs" fold (required fields are always shown)
PRIMARY_COUNT = 4


def _problem_text(p: Problem) -> str:
    text = str(p)
    prefix = f"{p.field}: "
    return text[len(prefix):] if text.startswith(prefix) else text


class Form:
    """The form of one model. Display it (it is the value of `rj.form(...)`), or drive it from
    code: `form.fields[name].widget.value = ...`, `form.run_button.click()`, `form.wait()`."""

    def __init__(self, ref: Any, on: str | None = None) -> None:
        from replicate_jupyter.model.schema import _input_component, first_string_input, input_properties

        self.ref = ref
        self.on = on
        runner = session.runner(on)
        self.handle = runner.resolve(ref)
        self.model = ref if isinstance(ref, str) else self.handle.name
        self.schema = self.handle.schema
        self.display_id = f"rj-form-{uuid.uuid4().hex[:12]}"
        self.predictions: list[Prediction] = []
        self.problems: list[Problem] = []
        self._running: Prediction | None = None
        self._cell: int | None = None
        self._lock = threading.RLock()
        self._done = threading.Event()
        self._done.set()

        lay = Layouts()
        required = set(_input_component(self.schema).get("required") or ())
        first_text = first_string_input(self.schema)
        self.fields: dict[str, Field] = {}
        for name, prop in input_properties(self.schema):
            self.fields[name] = build_field(name, prop, name in required, first_text, lay)
        names = list(self.fields)
        self.primary = [n for i, n in enumerate(names) if i < PRIMARY_COUNT or self.fields[n].required]
        self.advanced = [n for n in names if n not in self.primary]

        desc = self.handle.description or (self.schema.get("info") or {}).get("description") or ""
        backend = on or session.default_backend
        self.header = W.HTML(
            f'<div style="font-size:110%"><b>{html.escape(str(self.model))}</b> '
            f'<span style="opacity:.6">on {html.escape(backend)}</span></div>'
            + (f'<div style="opacity:.7">{html.escape(desc)}</div>' if desc else ""))
        children: list[W.Widget] = [self.header] + [self.fields[n].container for n in self.primary]
        self.accordion: W.Accordion | None = None
        self._advanced_box: W.VBox | None = None
        if self.advanced:
            # the folded fields are made when first opened (or touched from code)
            self._advanced_box = W.VBox([], layout=lay.full)
            self.accordion = W.Accordion([self._advanced_box], selected_index=None, layout=lay.full)
            self.accordion.set_title(0, f"Advanced inputs ({len(self.advanced)})")
            self.accordion.observe(self._on_fold, names="selected_index")
            for n in self.advanced:
                self.fields[n].on_build = lambda _f: self.build_advanced()
            children.append(self.accordion)

        self.run_button = W.Button(description="Run", button_style="primary", icon="play",
                                   tooltip="run the model with these inputs")
        self.cancel_button = W.Button(description="Cancel", icon="stop", disabled=True,
                                      tooltip="cancel the running prediction")
        self.reset_button = W.Button(description="Reset", icon="undo", tooltip="put the defaults back")
        self.copy_button = W.Button(description="Copy as cell", icon="copy",
                                    tooltip="insert a %%replicate cell with these inputs below")
        self.run_button.on_click(lambda _b: self.run())
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.reset_button.on_click(lambda _b: self.reset())
        self.copy_button.on_click(lambda _b: self.copy_as_cell())
        self.status = W.HTML("", layout=lay.full)
        self.cell_preview = W.Textarea(value="", layout=W.Layout(width="100%", height="8em", display="none"))
        self.history = History(self.restore)
        children += [W.HBox([self.run_button, self.cancel_button, self.reset_button, self.copy_button]),
                     self.status, self.cell_preview, self.history.widget]
        self.widget = W.VBox(children, layout=W.Layout(width="auto", max_width="52em", padding="0 12px 0 0"))
        self.widget.add_class("rj-form")

        for f in self.fields.values():
            f.observe(self._changed)
        self.validate()

    def _on_fold(self, change: dict[str, Any]) -> None:
        if change["new"] is not None:  # "Advanced inputs" opened
            self.build_advanced()

    def build_advanced(self) -> None:
        """Make the folded fields' widgets and put them under "Advanced inputs"."""
        box = self._advanced_box
        if box is None or box.children:
            return
        for n in self.advanced:
            self.fields[n].on_build = None
        box.children = [self.fields[n].container for n in self.advanced]

    # ----- values and validation -------------------------------------------------------------
    def values(self) -> dict[str, Any]:
        """The input dict the form stands for now (blank fields left out)."""
        out = {}
        for name, f in self.fields.items():
            v = f.value()
            if v is not UNSET:
                out[name] = v
        return out

    def _changed(self) -> None:
        self.validate()

    def validate(self) -> list[Problem]:
        """Check the whole input with `validation.validate`; each problem goes to its field;
        Run is disabled while any remains."""
        try:
            validate(self.schema, self.values(), model=self.handle.name)
            problems: list[Problem] = []
        except InputError as exc:
            problems = exc.problems
        by_field: dict[str, list[str]] = {}
        loose: list[str] = []
        for p in problems:
            base = p.field.split("[", 1)[0].split(".", 1)[0]
            if base in self.fields:
                by_field.setdefault(base, []).append(_problem_text(p))
            else:
                loose.append(str(p))
        for name, f in self.fields.items():
            f.set_error("; ".join(by_field.get(name, [])))
        self.problems = problems
        self._sync_buttons()
        if problems:
            hidden = [n for n in by_field if n in self.advanced]
            msg = f"⚠ {len(problems)} problem{'s' if len(problems) != 1 else ''}: " + ", ".join(by_field) + \
                  (f" (under Advanced inputs: {', '.join(hidden)})" if hidden else "")
            if loose:
                msg += " — " + "; ".join(loose)
            self._say(msg, "#d33")
        elif self._running is None and self.status.value.startswith('<span style="color:#d33">⚠'):
            self._say("")
        return problems

    def _sync_buttons(self) -> None:
        running = self._running is not None and not self._running.done
        self.run_button.disabled = bool(self.problems) or running
        self.cancel_button.disabled = not running

    def _say(self, text: str, color: str | None = None) -> None:
        value = f'<span style="color:{color}">{html.escape(text)}</span>' if color else html.escape(text)
        if self.status.value != value:
            self.status.value = value

    # ----- run / cancel ------------------------------------------------------------------------
    @property
    def last(self) -> Prediction | None:
        """The latest Prediction started from this form (None before the first run)."""
        return self.predictions[-1] if self.predictions else None

    def run(self) -> Prediction | None:
        """Start a prediction with the form's inputs on a worker thread; returns it (or None
        when the inputs are invalid or the run was refused, with the reason shown)."""
        with self._lock:
            if self._running is not None and not self._running.done:
                return None
            if self.validate():
                return None
            raw = self.values()
            try:
                p = api.prepare(self.ref, raw, on=self.on)
            except ReplicateJupyterError as exc:
                self._say(f"⚠ {exc}", "#d33")
                return None
            if self._cell is not None:
                p.cell = self._cell
            self._running = p
            self._done.clear()
            self.predictions.append(p)
            kept = {k: v for k, v in raw.items() if self.fields[k].kind != "secret"}
            changed = {k: ("•••" if self.fields[k].kind == "secret" else v)
                       for k, v in self._changed_inputs(p.input).items()}
            entry = self.history.add(kept, changed, p)
            self._sync_buttons()
            self._say(f"● running {p.id}…", "#1f6feb")
            live = rjlive.LiveDisplay(p, publish=self._publish)
            live.async_mode = True  # re-sent after the next cell too, for tools that record per cell
            p.subscribe(functools.partial(self._on_run_event, entry), replay=False)
            live.attach()
            api.start(p)
            return p

    def _on_run_event(self, entry: Any, _p: Prediction, event: Event) -> None:
        if not isinstance(event, Completed):
            return
        p = entry.prediction
        with self._lock:
            if self._running is p:
                self._running = None
        self.history.finished(entry)
        self._sync_buttons()
        color = {"succeeded": "#1a7f37", "failed": "#cf222e", "canceled": "#9a6700"}.get(p.status)
        line = rjdisplay.cost_line(p)
        if p.status == "failed" and p.error:
            line += f" — {p.error}"
        self._say(line, color)
        self._done.set()

    def cancel(self) -> Prediction | None:
        p = self._running
        if p is not None and not p.done:
            p.cancel(reason="canceled from the form")
            self._say(f"● canceling {p.id}…", "#9a6700")
        return p

    def wait(self, timeout: float | None = None) -> Prediction | None:
        """Block until the current run is final; returns the latest Prediction. Past
        `timeout`, `PredictionTimeout` (the run goes on)."""
        if not self._done.wait(timeout):
            running = self._running
            raise PredictionTimeout(running.id if running is not None else "?",
                                    running.status if running is not None else "running", timeout, what="form run")
        last = self.last
        if last is not None:
            last.wait(timeout)
        return last

    # ----- the result display -------------------------------------------------------------------
    def _publish(self, bundle: dict) -> None:
        from IPython.display import display

        display(bundle, raw=True, display_id=self.display_id, update=True)

    def _ipython_display_(self) -> None:
        """The form itself, then its result area: an ordinary display output (display id) that
        runs update, so a saved notebook keeps the last run's outputs and cost line."""
        from IPython.display import display

        self._cell = session.current_cell
        data = self.widget._repr_mimebundle_()
        if isinstance(data, tuple):
            data = data[0]
        data = dict(data or {})
        data["text/plain"] = (f"replicate form: {self.model} ({len(self.fields)} inputs; "
                              "run the notebook with a kernel to use it)")
        display(data, raw=True)
        last = self.last
        if last is not None and last.done:
            result = rjdisplay.render(last, final=True)
        else:
            result = {"text/plain": "", "text/html": '<div class="rj-form-result"></div>'}
        display(result, raw=True, display_id=self.display_id)

    def __repr__(self) -> str:
        return f"<Form {self.model} ({len(self.fields)} inputs)>"

    # ----- history, reset --------------------------------------------------------------------
    def restore(self, values: dict[str, Any]) -> None:
        """Put a run's inputs back (fields it did not set go back to blank / default)."""
        for name, f in self.fields.items():
            if f.kind == "secret":
                continue  # secrets are never kept, so the current one stays
            if name in values:
                f.set_value(values[name])
            else:
                f.reset()
        self.validate()

    def reset(self) -> None:
        for f in self.fields.values():
            f.reset()
        self.validate()

    # ----- copy as cell --------------------------------------------------------------------------
    def _changed_inputs(self, clean: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name, v in clean.items():
            f = self.fields.get(name)
            if f is None:
                continue
            if f.has_default and _same(v, f.default, f):
                continue
            out[name] = v
        return out

    def cell_text(self) -> str:
        """A `%%replicate` cell with the inputs of the form that differ from the defaults."""
        raw = self.values()
        clean = validate(self.schema, raw, model=self.handle.name)  # typed values (e.g. "42" → 42)
        items = []
        for name in self._changed_inputs(clean):
            f = self.fields[name]
            if f.kind == "secret":
                items.append((name, "secret", None))
            elif f.kind in ("file", "files"):
                given = raw.get(name)
                if f.is_upload:
                    items.append((name, "upload", given))
                else:
                    items.append((name, "value", given))  # the path / URL as typed
            else:
                items.append((name, "value", clean[name]))
        return cellmod.cell_text(str(self.model), self.on, items)

    def copy_as_cell(self) -> str:
        """Insert the cell below (IPython's `set_next_input`). From a button click in the
        browser there is no execute reply to carry that request, so the text is shown in the
        form to copy instead."""
        try:
            text = self.cell_text()
        except InputError as exc:
            self._say(f"⚠ fix the inputs first: {exc}", "#d33")
            return ""
        from IPython import get_ipython

        ip = get_ipython()
        if ip is not None and _in_execute_request(ip):
            ip.set_next_input(text, replace=False)
            self._say("Inserted a %%replicate cell below.")
        else:
            self.cell_preview.value = text
            self.cell_preview.layout.display = ""
            self._say("Copy this cell (select it, Ctrl+C) and paste it into a new cell:")
        return text


def _same(value: Any, default: Any, f: Field) -> bool:
    if isinstance(value, InputFile) or isinstance(default, InputFile):
        return False
    if f.kind == "number" and isinstance(value, (int, float)) and isinstance(default, (int, float)):
        return float(value) == float(default)
    return value == default


def _in_execute_request(ip: Any) -> bool:
    kernel = getattr(ip, "kernel", None)
    if kernel is None:
        return True  # a terminal IPython: set_next_input fills the next prompt
    try:
        parent = kernel.get_parent("shell")
    except Exception:
        return False
    return (parent or {}).get("header", {}).get("msg_type") == "execute_request"
