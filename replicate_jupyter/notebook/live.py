"""Live displays: one display id per prediction (or per sweep), redrawn in place while it runs.

The display never sits on the event path. A prediction streaming thousands of tokens calls no
display code per token; instead one kernel-wide ticker thread looks at every running display
once per interval (`session.text_rate`, 10/s by default) and redraws those whose prediction
moved since the last draw (`Prediction.seq`). Previews are held to `session.preview_rate`.
The final state is drawn once, exactly, by `finish()`, which the prediction calls through
`on_done` in the thread that completed it, before `wait()` returns.

While a prediction runs, each draw carries what it has cost so far (`cost.billing.running`:
its units so far at its model's prices, or its elapsed time at its hardware's price) and, until
it starts, its forecast; a running prediction that reports nothing is still redrawn once a
second (`CLOCK`), so its time and cost tick. The final draw carries the ledger's exact bill.

A run that ends within one interval is drawn once, final; a longer one shows its first state
after one interval (a `--async` display is shown at once, since its cell ends right away and
tools that record outputs per cell must see it there).

What to draw comes from the pure renderers of `display.py`; the settings (rates, which cell
runs) are read here, once, when a display is made and attached, never inside a renderer.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

from replicate_jupyter.cost import billing
from replicate_jupyter.notebook.display import (
    MIME,
    NOMATH,
    SWEEP_MIME,
    _b64,
    _e,
    _finished,
    compose_grid,
    render,
    summary_line,
)
from replicate_jupyter.prediction.jsonable import encode_preview

if TYPE_CHECKING:
    from replicate_jupyter.prediction.prediction import Prediction

__all__ = ["LiveDisplay", "GridDisplay", "flush_finished"]

#: the ticker never redraws more often than this, whatever rate is configured
_MIN_GAP = 0.01
#: seconds between redraws of a running prediction that moved not at all (its cost ticks)
CLOCK = 1.0


class _Ticker:
    """One daemon thread for every live display in the kernel: wakes at the earliest due
    display, redraws the ones that are due, sleeps again.

    Waking it costs a cell: a notify from `add` ran the thread beside the cell's own (~0.5 ms of
    a 2-core machine's `%%replicate`). So for `linger` seconds after a display was added it
    stays awake at that display's rate even with none live, and a new display whose first draw
    falls after its next wake is added without waking it (drawn on time all the same); past
    that it sleeps without a timeout until the next display."""

    def __init__(self, linger: float = 60.0) -> None:
        self._cond = threading.Condition()
        self._live: set[_Live] = set()
        self._thread: threading.Thread | None = None
        self._wake_at = float("inf")  # when the thread wakes by itself next (inf: awake, or asleep for good)
        self.linger = linger
        self._added_at = -float("inf")  # when a display was last added
        self._idle_gap = 0.1  # that display's gap: the idle wake-up rate while lingering
        self.wakes = 0  # notifies sent by `add` (each one ran the thread at once)

    def add(self, live: "_Live") -> None:
        with self._cond:
            self._live.add(live)
            self._added_at, self._idle_gap = time.monotonic(), live.gap
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="rj-live-display", daemon=True)
                self._thread.start()
            elif live.due < self._wake_at:
                self.wakes += 1
                self._cond.notify()

    def discard(self, live: "_Live") -> None:
        with self._cond:
            self._live.discard(live)

    def _loop(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [lv for lv in self._live if lv.due <= now]
                if not due:
                    wake = min((lv.due for lv in self._live), default=float("inf"))
                    if wake == float("inf") and now - self._added_at < self.linger:
                        wake = now + self._idle_gap  # lingering: a new display needs no wake-up
                    self._wake_at = wake
                    self._cond.wait(None if wake == float("inf") else wake - now)
                    self._wake_at = float("inf")
                    continue
            for lv in due:
                try:
                    lv.tick(now)
                except Exception as exc:  # a display that cannot draw must not stop the others
                    self.discard(lv)
                    lv.draw_failed(exc)


_TICKER = _Ticker()
#: `--async` and form displays, newest last, until their final state has been re-sent after a
#: cell (held strongly: nothing else keeps a finished display alive)
_pending_async: dict["_Live", None] = {}


class _Live:
    """Throttled, in-place display (one display id). Subclasses say what to draw and how far
    their predictions have moved."""

    def __init__(self, text_rate: float | None = None, preview_rate: float | None = None,
                 publish: Callable[[dict[str, Any]], Any] | None = None) -> None:
        from replicate_jupyter.session import session

        text_rate = session.text_rate if text_rate is None else text_rate
        preview_rate = session.preview_rate if preview_rate is None else preview_rate
        self.gap = max(_MIN_GAP, 1.0 / text_rate if text_rate and text_rate > 0 else 0.0)
        self.preview_gap = 1.0 / preview_rate if preview_rate and preview_rate > 0 else 0.0
        self._publish_fn = publish
        self.handle: Any = None
        self._lock = threading.RLock()
        self._final = False
        self._drawn_seq = -1  # the predictions' event count at the last draw
        self._ended: set[str] = set()  # ids whose done-callbacks have run
        self._previews: dict[str, tuple[Any, str | None]] = {}  # id → (image, data URI) on screen
        self._preview_at = 0.0  # when a preview was last put on screen
        self.due = float("inf")  # when the ticker looks at this display next
        self.updates = 0  # display messages sent (first display included)
        self.async_mode = False
        self.clock = CLOCK
        self._drawn_at = 0.0
        self._forecasts: dict[str, dict[str, Any] | None] = {}  # id → its forecast, made at its first draw
        self._unforecast: set[str] = set()  # ids not started at attach, whose forecast is not made yet
        self._ledger: Any = None  # the session's ledger, read at attach (forecasts are made from it)
        self.draw_error: str | None = None  # why the live redraws stopped, if they did

    # what to draw
    def bundle(self, final: bool) -> dict[str, Any]:
        raise NotImplementedError

    def is_done(self) -> bool:
        raise NotImplementedError

    def _predictions(self) -> Sequence[Prediction]:
        raise NotImplementedError

    def _seq(self) -> int:
        return sum(p.seq for p in self._predictions())

    def _preview_waiting(self, now: float) -> bool:
        """A newer preview than the one on screen may be shown now."""
        if now - self._preview_at < self.preview_gap:
            return False
        return any(p.preview is not None and self._previews.get(p.id, (None,))[0] is not p.preview
                   for p in self._predictions())

    def _preview(self, p: Prediction) -> str | None:
        """The preview to show for `p` now: its latest one once `preview_rate` allows (its first
        at once), else the one on screen."""
        img = p.preview
        shown = self._previews.get(p.id)
        if img is None or (shown and shown[0] is img):
            return shown[1] if shown else None
        now = time.monotonic()
        if shown is None or now - self._preview_at >= self.preview_gap:
            self._previews[p.id] = shown = (img, encode_preview(img))
            self._preview_at = now
        return shown[1]

    # sending
    def _send(self, bundle: dict[str, Any]) -> None:
        self.updates += 1
        if self._publish_fn is not None:
            self._publish_fn(bundle)
        elif self.handle is None:
            from IPython.display import display

            if self._final and self not in _pending_async:  # drawn once, final: nothing updates it
                display(bundle, raw=True)  # so no display id (its uuid and handle: ~20 µs of a cell)
            else:
                self.handle = display(bundle, raw=True, display_id=True)
        else:
            self.handle.update(bundle, raw=True)

    def _draw(self) -> None:
        self._drawn_seq = self._seq()
        self._drawn_at = time.monotonic()
        self._send(self.bundle(final=False))

    def _running(self, p: Prediction) -> dict[str, Any] | None:
        """What `p` has cost so far, for the payload's `running` (None before it started)."""
        if p.started_at is None or _finished(p):
            return None
        b = billing.running(p)
        return {"predict_time": round(p.elapsed, 3), "cost_usd": b.usd, "hardware": p.metrics.get("hardware"),
                "billing": b.to_json()}

    def _ticking(self, now: float) -> bool:
        """A running prediction's time and cost are due to move on screen."""
        return now - self._drawn_at >= self.clock and any(
            p.started_at is not None and not _finished(p) for p in self._predictions())

    def _forecast(self, p: Prediction) -> dict[str, Any] | None:
        """`p`'s forecast when it had not started at attach: made at its first live draw (off
        the cell's thread; a run that ends within one interval never needs one), then kept."""
        if p.id in self._forecasts:
            return self._forecasts[p.id]
        if self._ledger is None or p.id not in self._unforecast:
            return None
        from replicate_jupyter.cost.guard import forecast_of

        try:
            f = forecast_of(p, self._ledger)
        except Exception:  # a forecast is a courtesy: never a reason not to show the run
            f = None
        self._forecasts[p.id] = None if f is None else f.to_json()
        return self._forecasts[p.id]

    def attach(self, cell: int | None | Any = ...) -> _Live:
        """Start following the predictions (what already happened included). `cell`: the
        notebook cell this display is in (default: the one running now), recorded on each
        prediction as `display_cell` so that cell's value shows as one line, not a second card."""
        from replicate_jupyter.session import session

        if cell is ...:
            cell = session.current_cell
        self._ledger = session.ledger
        for p in self._predictions():
            p.display_cell = cell
            if p.started_at is None:
                self._unforecast.add(p.id)
        with self._lock:
            if self.async_mode:
                _pending_async[self] = None
                self._draw()
            self.due = time.monotonic() + self.gap
        _TICKER.add(self)
        for p in self._predictions():
            p.on_done(self._one_done)
        return self

    def _one_done(self, p: Prediction) -> None:
        """A prediction's done-callback: its listeners (the ledger) have run. The final draw
        waits for every prediction's, so a sweep's summary never misses a cost."""
        with self._lock:
            self._ended.add(p.id)
            last = len(self._ended) == len(self._predictions())
        if last:
            self.finish()

    def tick(self, now: float) -> None:
        """Called by the ticker when due: redraw if anything moved."""
        with self._lock:
            if self._final:
                return
            if self._seq() != self._drawn_seq or self._preview_waiting(now) or self._ticking(now):
                self._draw()
            self.due = now + self.gap

    def draw_failed(self, exc: BaseException) -> None:
        """A live redraw raised: say so in the display itself (and on stderr when even that
        cannot be sent), instead of leaving a frozen card that looks alive. The live redraws
        stop; the final state is still drawn when the run ends."""
        from replicate_jupyter.notebook.display import error_bundle

        self.draw_error = f"{type(exc).__name__}: {exc}"
        text = (f"{self.draw_error} — live updates stopped; the prediction goes on and its final state "
                "is drawn when it ends")
        try:
            with self._lock:
                if not self._final:
                    self._send(error_bundle(text, title="Display error"))
        except Exception:
            import sys

            print(f"replicate-jupyter: display error: {text}", file=sys.__stderr__)

    def finish(self) -> None:
        """Send the exact final state (once); what the live redraws held is let go."""
        _TICKER.discard(self)
        with self._lock:
            if self._final:
                return
            self._final = True
            self._previews.clear()
            self._send(self.bundle(final=True))

    def resend_final(self) -> None:
        with self._lock:
            if self._final:
                self._send(self.bundle(final=True))


class LiveDisplay(_Live):
    """One prediction's display, updated in place while it runs (any backend, any thread)."""

    def __init__(self, p: Prediction, **kw: Any) -> None:
        super().__init__(**kw)
        self.p = p

    def _predictions(self) -> Sequence[Prediction]:
        return (self.p,)

    def _seq(self) -> int:
        return self.p.seq

    def is_done(self) -> bool:
        return _finished(self.p)

    def bundle(self, final: bool) -> dict[str, Any]:
        if final:
            return render(self.p, final=True)
        return render(self.p, final=False, preview_uri=self._preview(self.p), running=self._running(self.p),
                      forecast=self._forecast(self.p))


class GridDisplay(_Live):
    """Several predictions (a sweep) as one labelled grid, one display id, one summary line.
    The notebook total shows once, in the summary: the members are listed in input order but
    finish (and are stamped by the ledger) in any order, so totals on their lines would not add up."""

    def __init__(self, predictions: Sequence[Prediction], labels: Sequence[str], **kw: Any) -> None:
        super().__init__(**kw)
        self.predictions = list(predictions)
        self.labels = list(labels)

    def _predictions(self) -> Sequence[Prediction]:
        return self.predictions

    def is_done(self) -> bool:
        return all(_finished(p) for p in self.predictions)

    def bundle(self, final: bool) -> dict[str, Any]:
        cells_html, texts, payload = [], [], []
        for p, label in zip(self.predictions, self.labels):
            done = _finished(p)
            data = (render(p, final=True, refs=False, total=False) if done else
                    render(p, final=False, preview_uri=self._preview(p), running=self._running(p),
                           forecast=self._forecast(p)))
            cells_html.append(f'<div class="rj-sweep-cell" style="border:1px solid #ddd;padding:4px">'
                              f'<div class="rj-label"><code>{_e(label)}</code></div>{data["text/html"]}</div>')
            texts.append(f"[{label}]\n{data['text/plain']}")
            payload.append({"label": label, "prediction": data[MIME]})
        cols = min(len(self.predictions), 4)
        body = (f'<div class="rj-sweep {NOMATH}" style="display:grid;grid-template-columns:repeat({cols},auto);gap:6px">'
                f'{"".join(cells_html)}</div>')
        bundle: dict[str, Any] = {SWEEP_MIME: {"predictions": payload}}
        if final:
            line = summary_line(self.predictions)
            body += f'<div class="rj-cost rj-summary {NOMATH}" style="opacity:.75;font-size:90%">{_e(line)}</div>'
            texts.append("cell total: " + line)
            firsts = [(next((f for f in p.files if f.is_image), None), lab) for p, lab in zip(self.predictions, self.labels)]
            if all(f is not None for f, _ in firsts):
                try:
                    bundle["image/png"] = _b64(compose_grid([f for f, _ in firsts], [lab for _, lab in firsts], cols=cols))
                except Exception:
                    pass
        bundle["text/html"] = body
        bundle["text/plain"] = "\n\n".join(texts)
        return bundle


def flush_finished() -> int:
    """Re-send the final state of `--async` displays that finished since the last cell.

    A display update sent while no cell runs still reaches JupyterLab, but tools that record
    outputs per executing cell (nbclient, nbconvert) only see updates sent during a cell; this
    one extra message per prediction makes the saved notebook hold the final output too."""
    sent = 0
    for live in list(_pending_async):  # oldest first: a form's newest run is re-sent last
        if live.is_done() and live._final:
            _pending_async.pop(live, None)
            live.resend_final()
            sent += 1
    return sent
