"""One event order: record events under one lock, deliver them to listeners in that order.

Several threads emit into one prediction (the runner's, Replicate's start watcher, a cancel's
log line, the cost guard's timer), and listeners emit too (one that cancels, and the cancel
logs). The history is the order events were recorded in; listeners must see exactly that.

One thread at a time holds the dispatcher role and delivers every recorded event, oldest
first, until none is left, then gives the role up. An event emitted while the role is held —
by another thread, or by a listener up the holder's own stack — is only recorded: the holder
delivers it, after the one it is delivering now. So no emitter waits on another thread's
listeners (a runner never blocks on the cost guard's HTTP cancel, and cannot deadlock with
it), and no listener sees a later event before an earlier one. Subscribing follows the same
rule: the role holder replays the history to the new listener, then adds it, with nothing
delivered in between.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, ClassVar

from replicate_jupyter.prediction.events import Completed, Event, Preview

__all__ = ["EventDispatch", "AnyListener"]

#: `fn(owner, event)`; the owner is the Prediction
AnyListener = Callable[[Any, Event], None]

_get_ident = threading.get_ident


class EventDispatch:
    """The event half of a Prediction: `emit`, `subscribe`, `on_done`, `seq`, `done`.
    Subclasses fold each event into their state with `_appliers` and say where a broken
    listener is reported in `_report`."""

    __slots__ = ("_lock", "_history", "_final", "_listeners", "_delivered", "_dispatcher", "_pending",
                 "_done_callbacks", "_done", "_last_preview", "__weakref__")

    def __init__(self) -> None:
        self._lock = threading.RLock()  # the state and the history
        self._history: list[Event] = []
        self._final = False  # a Completed was recorded: nothing is recorded after it
        self._listeners: tuple[AnyListener, ...] = ()  # replaced, never mutated
        self._delivered = 0  # history[:_delivered] has been handed to the listeners
        self._dispatcher: int | None = None  # the thread delivering events now
        self._pending: list[tuple[AnyListener, bool]] = []  # subscriptions the dispatcher will make
        self._done_callbacks: list[Callable[[Any], None]] | None = []  # None once all ran
        self._done = threading.Event()
        self._last_preview = -1  # index in the history of the one Preview still holding its image

    #: what a subclass says: event class → `fn(self, event)` folding it into the state (called
    #: under the lock, in history order)
    _appliers: ClassVar[dict[type, Callable[[Any, Any], None]]] = {}

    def _report(self, text: str) -> None:
        """A listener or done-callback raised (`text` names it); the run goes on."""

    # ----- emitting ---------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        """Record one event, then deliver it (and any recorded meanwhile) to the listeners,
        unless another thread — or a listener up this thread's stack — is delivering: then
        that one hands it on, in order. Per token: two lock holds and a loop."""
        with self._lock:
            if self._final:
                return  # exactly one Completed; nothing after it
            self._appliers[event.__class__](self, event)
            if event.__class__ is Preview:
                self._strip_preview()  # only the newest preview keeps its image
                self._last_preview = len(self._history)
            self._history.append(event)
            if event.__class__ is Completed:
                self._final = True
                self._strip_preview()  # a finished run shows its outputs, never a preview
            if self._dispatcher is not None:
                return
            self._dispatcher = _get_ident()
            listeners: tuple[AnyListener, ...] = ()
            if self._pending or self._delivered != len(self._history) - 1:
                taken = None  # older work first (left by an interrupted dispatcher)
            else:
                taken = event
                self._delivered += 1
                listeners = self._listeners
        self._drain(taken, listeners)

    def _strip_preview(self) -> None:
        """Swap the history's image-holding Preview for one with its step only (under the lock).

        The history is kept so a late listener sees every event in order, but an image is
        ~1 MB at 512 px and a run offers one per step: the history keeps that a step had a
        preview (its count and step), not the pictures. A listener that has not been handed
        the old one yet gets the step alone, which is what it would draw over anyway."""
        i = self._last_preview
        if i >= 0:
            old = self._history[i]
            if isinstance(old, Preview) and old.image is not None:
                self._history[i] = Preview(step=old.step)
            self._last_preview = -1

    def _drain(self, event: Event | None, listeners: tuple[AnyListener, ...]) -> None:
        """As the dispatcher: deliver `event` (taken already) to `listeners`, then make the
        subscriptions asked for meanwhile and deliver every recorded event not yet delivered;
        give the role up when nothing is left."""
        ok = False
        try:
            while True:
                if event is not None:
                    for fn in listeners:
                        try:
                            fn(self, event)
                        except Exception as exc:  # a broken listener must never kill a prediction
                            self._report(f"listener error: {exc!r}")
                    if event.__class__ is Completed:
                        self._run_done_callbacks()
                with self._lock:
                    if self._pending:
                        sub = self._pending.pop(0)
                        event = None
                    elif self._delivered < len(self._history):
                        sub = None
                        event = self._history[self._delivered]
                        self._delivered += 1
                        listeners = self._listeners
                    else:
                        self._dispatcher = None
                        ok = True
                        return
                if sub is not None:
                    self._add(*sub)
        finally:
            if not ok:  # an interrupt inside a listener: the next emit takes delivery over
                with self._lock:
                    self._dispatcher = None

    def _call(self, fn: AnyListener, event: Event) -> None:
        try:
            fn(self, event)
        except Exception as exc:  # a broken listener must never kill a prediction
            self._report(f"listener error: {exc!r}")

    def _run_done_callbacks(self) -> None:
        while True:  # callbacks added meanwhile (even by a callback) run here too, in order
            with self._lock:
                callbacks = self._done_callbacks
                self._done_callbacks = [] if callbacks else None
            if not callbacks:
                break
            for cb in callbacks:
                self._call_done(cb)
        self._done.set()

    # ----- listening --------------------------------------------------------------------------
    def subscribe(self, fn: AnyListener, replay: bool = True) -> None:
        """Add a listener; with `replay`, it first sees every event delivered so far, then
        every later one, each once, in history order. Called while another thread delivers,
        the subscription is made by that thread before its next event (so it may happen just
        after this returns)."""
        me = _get_ident()
        with self._lock:
            inside = self._dispatcher == me  # called by a listener (or callback) of this prediction
            if self._dispatcher is None:
                self._dispatcher = me
            elif not inside:
                self._pending.append((fn, replay))
                return
        if inside:  # the delivery loop up this thread's stack goes on after it, in order
            self._add(fn, replay)
            return
        ok = False
        try:
            self._add(fn, replay)
            ok = True
        finally:
            if ok:
                self._drain(None, ())
            else:
                with self._lock:
                    self._dispatcher = None

    def _add(self, fn: AnyListener, replay: bool) -> None:
        """Replay, then add `fn`. Only the dispatcher calls this, so nothing is delivered
        between the replay and the add."""
        with self._lock:
            history = self._history[: self._delivered] if replay else []
        for event in history:
            self._call(fn, event)
        with self._lock:
            self._listeners = self._listeners + (fn,)

    def unsubscribe(self, fn: AnyListener) -> None:
        """Stop calling `fn`. Matched by equality, not identity: `obj.method` is a new bound-method
        object each time it is read, so `unsubscribe(self.on_event)` must find the one subscribed."""
        with self._lock:
            self._listeners = tuple(f for f in self._listeners if f != fn)
            self._pending = [(f, r) for f, r in self._pending if f != fn]

    def on_done(self, fn: Callable[[Any], None]) -> None:
        """Call `fn(owner)` once it is final: in the thread that delivered its Completed, after
        the listeners and before `wait()` returns; at once if it is final already. For code
        that only cares about the end (a display's final draw), so it costs nothing per token."""
        with self._lock:
            if self._done_callbacks is not None:
                self._done_callbacks.append(fn)
                return
        self._call_done(fn)

    def _call_done(self, fn: Callable[[Any], None]) -> None:
        try:
            fn(self)
        except Exception as exc:
            self._report(f"done-callback error: {exc!r}")

    # ----- state --------------------------------------------------------------------------------
    @property
    def seq(self) -> int:
        """How many events have been recorded: a display redraws only when this moved."""
        return len(self._history)

    @property
    def done(self) -> bool:
        """Final, and its listeners and done-callbacks have run."""
        return self._done.is_set()

    @property
    def finished(self) -> bool:
        """A Completed is recorded (its listeners may still be running: see `done`)."""
        return self._final
