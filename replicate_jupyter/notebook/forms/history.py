"""The runs of one form: inputs, status, time, cost; a click puts a run's inputs back.

Entries hold the raw form values (what the widgets held, uploads as kernel-side files) minus
secrets, so restoring a run never resurrects a secret and the history widget never shows one.
Only a finished run changes an entry, so a token-streaming model causes no widget traffic here.
"""
from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import ipywidgets as W

from replicate_jupyter.prediction.files import InputFile

__all__ = ["History", "Entry"]

MAX_SHOWN = 20
#: bytes the kept runs may hold together (their uploads and outputs, `session.held_bytes`);
#: past it the oldest are forgotten (numbers keep counting)
MAX_BYTES = 64 * 1024 * 1024


@dataclass
class Entry:
    number: int
    values: dict[str, Any]  # raw form values, secrets removed
    changed: dict[str, Any]  # the inputs that differ from the defaults (for the label)
    prediction: Any
    started: float = field(default_factory=time.time)
    button: W.Button | None = None
    label: W.HTML | None = None

    @property
    def status(self) -> str:
        return self.prediction.status

    def describe(self) -> str:
        p = self.prediction
        clock = time.strftime("%H:%M:%S", time.localtime(self.started))
        parts = [f"#{self.number}", p.status, clock]
        pt = p.metrics.get("predict_time")
        if pt is not None:
            parts.append(f"{pt:.2f} s")
        c = p.metrics.get("cost_usd")
        if c is not None:
            from replicate_jupyter.notebook.display import usd

            parts.append(usd(c))
        return " · ".join(parts)


def _short(v: Any, limit: int = 40) -> str:
    if isinstance(v, InputFile):
        text = f"⬆{v.name}"
    elif isinstance(v, list):
        text = "[" + ", ".join(_short(x, 16) for x in v) + "]"
    else:
        text = str(v)
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class History:
    """A list of buttons, newest first; `on_restore(values)` is called with a run's values."""

    def __init__(self, on_restore: Callable[[dict[str, Any]], None]) -> None:
        self.entries: list[Entry] = []
        self.count = 0  # runs ever added (entries may have been forgotten since)
        self.on_restore = on_restore
        self._entry_layout = W.Layout(width="100%", align_items="center")
        self._button_layout = W.Layout(width="auto", flex="0 0 auto")
        self._label_layout = W.Layout(flex="1 1 auto", width="auto")
        self.title = W.HTML("", layout=W.Layout(width="100%"))
        self.list = W.VBox([], layout=W.Layout(width="100%"))
        self.widget = W.VBox([self.title, self.list], layout=W.Layout(width="100%", margin="6px 0 0 0"))

    def add(self, values: dict[str, Any], changed: dict[str, Any], prediction: Any) -> Entry:
        self.count += 1
        e = Entry(self.count, values, changed, prediction)
        summary = ", ".join(f"{k}={_short(v)}" for k, v in changed.items()) or "defaults"
        e.button = W.Button(description=e.describe(), tooltip="put these inputs back into the form",
                            icon="history", layout=self._button_layout)
        e.label = W.HTML(f'<span style="opacity:.75;font-size:90%">{html.escape(summary)}</span>',
                         layout=self._label_layout)
        e.button.on_click(lambda _b, e=e: self.restore(e))
        self.entries.append(e)
        self._bound()
        shown = [x for x in reversed(self.entries)][:MAX_SHOWN]
        self.list.children = [W.HBox([x.button, x.label], layout=self._entry_layout) for x in shown]
        self.title.value = f"<b>Runs</b> <span style='opacity:.6'>({self.count})</span>"
        return e

    def _bound(self) -> None:
        """Forget the oldest runs while all kept hold more than MAX_BYTES (the newest stays)."""
        from replicate_jupyter.session import held_bytes

        sizes = [held_bytes(x.values) + held_bytes(x.prediction) for x in self.entries]
        total = sum(sizes)
        while len(self.entries) > 1 and total > MAX_BYTES:
            old = self.entries.pop(0)
            total -= sizes.pop(0)
            for w in (old.button, old.label):
                if w is not None:
                    w.close()

    def finished(self, e: Entry) -> None:
        if e.button is not None:
            e.button.description = e.describe()
            e.button.button_style = {"succeeded": "success", "failed": "danger", "canceled": "warning"}.get(e.status, "")

    def restore(self, e: Entry) -> None:
        self.on_restore(dict(e.values))
