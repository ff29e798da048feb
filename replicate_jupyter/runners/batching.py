"""The local runner's batcher: predictions of one warm model that arrive together run as one batch.

Why: a sweep of 8 prompts, a form clicked 8 times or `asyncio.gather` over 8 `async_run`s would
otherwise take 8 turns on the one device; a predictor that declares batching
(`model/batching.py`) does them in one forward pass in little more than the time of one.

How: a prediction of a batchable model joins the open group of its model and compatibility key
(the inputs that must match). A group stays open while predictions keep arriving — it closes
once none came for `window` seconds (at most `max_wait` after the first), when it is full, or
when its turn on the device comes (so predictions that arrive while the device is busy join the
next batch). A driver thread per group then takes the device slot, sets the model up if need be,
and calls `predict_batch` on the model's own thread; a group of one calls `predict` as without
batching. Each member's own thread only waits (a kernel interrupt there cancels that member).

Per member: Started, its own progress/preview/log/stream events, its output, and a Completed
whose `predict_time` is its share of the batch's device time (split by weight among the members
still in at each moment, so the shares sum to the device time), with `batch_size` and
`batch_id` in its metrics (sent as Metric events when the batch starts, so they are there while
it runs). A canceled member is completed at once and dropped from the batch
(`RunningBatch.drop`); the batch call is stopped only when every member is gone.
"""
from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from replicate_jupyter.model.arguments import call_arguments
from replicate_jupyter.model.batching import Batch, BatchRule
from replicate_jupyter.prediction.events import Completed, Log, Metric, Output, Preview, Progress, Started
from replicate_jupyter.runners import devices, threads
from replicate_jupyter.runners import warm as warm_mod
from replicate_jupyter.runners.context import RunContext, fresh_context
from replicate_jupyter.runners.invoke import call_params, close_stream, is_stream, model_traceback, preview_throttle, to_output

__all__ = ["Batcher", "Member", "RunningBatch"]


class Member:
    """One prediction waiting for, or running in, a batch."""

    __slots__ = ("p", "inputs", "weight", "state", "group", "batch", "settled")

    def __init__(self, p: Any, inputs: dict[str, Any], weight: float) -> None:
        self.p = p
        self.inputs = inputs  # default-filled input: what the compatibility key was read from
        self.weight = weight
        self.state = "waiting"  # → running → done
        self.group: _Group | None = None
        self.batch: RunningBatch | None = None
        self.settled = threading.Event()  # its Completed is emitted: its own thread may return

    def complete(self, event: Completed) -> None:
        self.state = "done"
        self.p.emit(event)
        self.settled.set()


class _Group:
    def __init__(self, key: tuple, limit: int) -> None:
        self.key = key
        self.limit = limit
        self.members: list[Member] = []
        self.first = self.last = time.monotonic()
        self.closed = False
        self.empty = threading.Event()  # every member was canceled before the batch ran


class Batcher:
    """Collects the local runner's predictions of batchable models into batches and runs them."""

    def __init__(self, runner: Any) -> None:  # the LocalRunner (which imports this module)
        self.runner = runner
        self._cond = threading.Condition()
        self._open: dict[tuple, _Group] = {}
        self._members: dict[str, Member] = {}
        #: (batch id, members at its start, seconds of device time) of recent batches, newest last
        self.history: list[tuple[str, int, float]] = []

    def run(self, p: Any, spec: Any, fn: Any, rule: BatchRule, is_async: bool) -> bool:
        """Run `p` in a batch of its model, waiting here until it is final. False: its input says
        it runs alone (`rule.alone`): the caller runs it as usual."""
        defaults = {k: v for k, v in call_params(fn).items() if k != "self"}
        inputs = {**defaults, **p.input}
        key = rule.key(inputs)
        if key is None:
            return False
        member = Member(p, inputs, rule.weight_of(inputs))
        with self._cond:
            self._members[p.id] = member
            found = self._open.get((spec.key, key))
            new = found is None
            if found is None:
                limit = rule.limit(warm_mod.free_device_bytes(), self.runner.max_batch)
                found = self._open[(spec.key, key)] = _Group((spec.key, key), limit)
            group = found
            group.members.append(member)
            member.group = group
            group.last = time.monotonic()
            if len(group.members) >= group.limit:
                self._open.pop(group.key, None)  # full: later ones start the next group
            self._cond.notify_all()
        if new:
            threads.submit(self._drive, group, spec, fn, rule, is_async)
        try:
            member.settled.wait()
        except KeyboardInterrupt:
            p.cancel()
            member.settled.wait(self.runner.cancel_grace + self.runner.cancel_deadline + 1.0)
            raise
        finally:
            with self._cond:
                self._members.pop(p.id, None)
        return True

    def share_so_far(self, p: Any) -> float | None:
        """A running member's share of its batch's device time until now (None: not in a batch)."""
        member = self._members.get(str(getattr(p, "id", "")))
        return member.batch.share_of(member) if member is not None and member.batch is not None else None

    def cancel(self, p: Any) -> None:
        """A member canceled: out of its group if it has not run yet, out of its batch if it runs."""
        member = self._members.get(str(getattr(p, "id", "")))
        if member is None:
            return
        with self._cond:
            waiting = member.state == "waiting"
            if waiting:
                member.state = "done"
                group = member.group
                if group is not None and all(m.state == "done" for m in group.members):
                    group.empty.set()
                self._cond.notify_all()
        if waiting:
            member.complete(Completed(status="canceled", error=p.cancel_reason,
                                      metrics={"predict_time": 0.0, "hardware": devices.current_sku()}))
            self.runner._slots.wake()
        elif member.batch is not None:
            member.batch.drop(member)

    def close(self) -> None:
        """Cancel every prediction still waiting for its batch (the runner is closing)."""
        for m in [m for m in list(self._members.values()) if m.state == "waiting"]:
            m.p.cancel(reason="canceled: the local runner was closed")

    # ----- the driver of one group ---------------------------------------------------------
    def _drive(self, group: _Group, spec: Any, fn: Any, rule: BatchRule, is_async: bool) -> None:
        runner = self.runner
        entered = False
        try:
            with self._cond:  # collect: until quiet for `window`, full, or `max_wait` after the first
                while not group.empty.is_set() and len(group.members) < group.limit:
                    left = min(group.last + runner.batch_window, group.first + runner.batch_max_wait) - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            entered = runner._slots.enter(spec.key, runner._limit(spec, fn), group.empty)
            with self._cond:  # the device is ours: no more joiners
                group.closed = True
                if self._open.get(group.key) is group:
                    del self._open[group.key]
                members = [m for m in group.members if m.state == "waiting"]
                for m in members:
                    m.state = "running"
            if not entered or not members:
                return
            if len(members) == 1:
                runner._execute(members[0].p, spec, is_async)
            else:
                self._run(members, spec, rule, is_async)
        except BaseException as exc:  # noqa: BLE001 — a runner bug must still leave every member final
            for m in group.members:
                if not m.p.finished:
                    m.complete(Completed(status="failed", error=f"{type(exc).__name__}: {exc}",
                                         metrics={"hardware": devices.current_sku()}))
        finally:
            if entered:
                runner._slots.leave()
            for m in group.members:
                if m.p.finished:
                    m.settled.set()

    def _run(self, members: list[Member], spec: Any, rule: BatchRule, is_async: bool) -> None:
        runner = self.runner
        hardware = devices.current_sku()
        batch = RunningBatch(members, runner, hardware)
        for m in members:  # canceled between leaving the group and joining the batch
            if m.p.cancel_event.is_set():
                batch.drop(m)
        if not batch.live_members():
            return
        cold = spec.key not in runner._warm
        warm, failed = runner._acquire(batch, spec, is_async)
        if failed is not None:
            for m in batch.live_members():
                m.complete(Completed(status=failed.status, error=failed.error, traceback=failed.trace,
                                     metrics={"hardware": hardware}))
            return
        assert warm is not None
        for m in batch.live_members():  # batch_size while it runs too: a running cost can share the clock
            m.p.emit(Started(hardware=hardware))
            m.p.emit(Metric(name="batch_size", value=batch.size))
            m.p.emit(Metric(name="batch_id", value=batch.id))
        extra = {"setup_time": round(warm.setup_time, 4)} if cold else {}
        inputs = [call_arguments(warm.call, m.p.input) for m in members]
        call_fn = warm.instance.predict_batch
        batch.start_clock()
        outcome = self._attempt(batch, warm, call_fn, inputs)
        if outcome.oom:
            with runner._cache_lock:
                for k in [k for k, w in runner._warm.items() if w is not warm]:
                    runner.evict(k)
            devices.free_device_memory()
            batch.emit(Log(text=f"[replicate-jupyter] out of device memory in a batch of {batch.size}: evicted the "
                                "other warm models, retrying the batch once\n"))
            batch.results = None
            outcome = self._attempt(batch, warm, call_fn, inputs)
        shares = batch.finish()
        self.history = (self.history + [(batch.id, batch.size, batch.device_time)])[-64:]
        for i, m, share in shares:
            metrics = {"hardware": hardware, "predict_time": round(share, 6), "batch_size": batch.size,
                       "batch_id": batch.id, **extra}
            if outcome.oom:  # still too big together: this one alone, on the time it has used so far
                m.p.emit(Log(text="[replicate-jupyter] out of device memory again: running it alone\n"))
                t0 = time.perf_counter()
                alone = runner._attempt(m.p, warm, inputs[i])
                metrics = {"hardware": hardware, "predict_time": round(share + time.perf_counter() - t0, 6),
                           "batch_size": 1, **extra}  # alone in the end (its batch_id says which batch it left)
                m.complete(Completed(status=alone.status, error=alone.error, traceback=alone.trace, metrics=metrics))
                continue
            result = batch.results[i] if (outcome.status == "succeeded" and batch.results is not None) else None
            if isinstance(result, BaseException):
                m.complete(Completed(status="failed", error=f"{type(result).__name__}: {result}",
                                     traceback=model_traceback(result), metrics=metrics))
                continue
            if outcome.status == "succeeded" and batch.results is not None:
                m.p.emit(Output(value=result, index=None))
            m.complete(Completed(status=outcome.status, error=outcome.error if outcome.status != "canceled"
                                 else m.p.cancel_reason, traceback=outcome.trace, metrics=metrics))

    def _attempt(self, batch: "RunningBatch", warm: Any, call_fn: Any, inputs: list[dict]) -> Any:
        runner = self.runner
        ctx = RunContext(emit=batch.emit, cancel_event=batch.gone, wants_preview=batch.wants_preview)
        context = fresh_context(ctx, sink=lambda s: batch.emit(Log(text=s)))
        if warm.is_async:
            call = warm.thread.submit_async(lambda: warm_mod.apredict_batch(call_fn, inputs, batch), context)
        else:
            call = warm.thread.submit(lambda: warm_mod.predict_batch(call_fn, inputs, batch), context)
        interrupt = runner._wait(batch, warm.thread, call)
        return runner._outcome(batch, warm.thread, call, interrupt, batch.emitted) or warm_mod.Outcome(status="succeeded")


class RunningBatch(Batch):
    """One running batch: the predictor's view (`model.batching.Batch`) with each member's
    events routed to its own prediction, and the clock that splits the device time. It also
    stands in for a prediction where the runner sets up and waits for the model (id, emit,
    cancel_event, cancel_reason, cancel)."""

    def __init__(self, members: list[Member], runner: Any, hardware: str) -> None:
        super().__init__(len(members))
        self.members = members
        self.runner = runner
        self.hardware = hardware
        self.id = "batch-" + uuid.uuid4().hex[:10]
        self.cancel_reason: str | None = None
        self.gone = self.cancel_event = threading.Event()  # every member left: the call may be stopped
        self.wants_preview = preview_throttle(runner.preview_rate)
        self.results: list[Any] | None = None
        self.emitted, self.device_time = False, 0.0  # emitted: a stream item went out (a retry would repeat it)
        self._lock = threading.Lock()
        self._live, self._share, self._index = [True] * len(members), [0.0] * len(members), [0] * len(members)
        self._t0: float | None = None
        self._seg: float | None = None
        for m in members:
            m.batch = self

    # ----- the predictor's view ----------------------------------------------------------
    def active(self) -> list[int]:
        return [i for i, live in enumerate(self._live) if live]

    def progress(self, step: int, total: int | None = None, member: int | None = None) -> None:
        self._check()
        event = Progress(step=int(step), total=None if total is None else int(total))
        self.emit(event) if member is None else self._to(member, event)

    def preview(self, image_of: Any, step: int | None = None) -> None:
        self._check()
        if not self.wants_preview():
            return
        for i in self.active():
            image = image_of(i)
            if image is not None:
                self._to(i, Preview(image=image, step=step))

    def log(self, i: int, text: str) -> None:
        self._to(i, Log(text=text if text.endswith("\n") else text + "\n"))

    def output(self, i: int, item: Any) -> None:
        """The next item of member i's stream."""
        if not (isinstance(i, int) and 0 <= i < self.size):
            raise TypeError(f"predict_batch yielded member index {i!r}; expected (i, item) with 0 ≤ i < {self.size}")
        with self._lock:
            k = self._index[i]
            self._index[i] += 1
        self.emitted = True
        self._to(i, Output(value=to_output(item, k), index=k))

    def take(self, result: Any) -> None:
        """What `predict_batch` returned: a list (one output per member) or a stream of pairs."""
        if is_stream(result):
            for pair in result:
                self.take_pair(pair, result)
            return
        if not isinstance(result, (list, tuple)) or len(result) != self.size:
            got = f"{len(result)} outputs" if isinstance(result, (list, tuple)) else type(result).__name__
            raise TypeError(f"predict_batch returned {got} for {self.size} inputs; it must return one output per input")
        self.results = [r if isinstance(r, BaseException) else to_output(r) for r in result]

    def take_pair(self, pair: Any, stream: Any = None) -> None:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"a streaming predict_batch yields (member index, item) pairs, not {pair!r}")
        self.output(*pair)
        if self.gone.is_set() and stream is not None:
            close_stream(stream)
        self._check()

    def _check(self) -> None:
        if self.gone.is_set():
            from replicate_jupyter.errors import Canceled

            raise Canceled("every member of the batch was canceled")

    # ----- events ------------------------------------------------------------------------------
    def emit(self, event: Any) -> None:
        """To every member still in (logs, progress, metrics of the whole batch)."""
        for m in self.live_members():
            m.p.emit(event)

    def _to(self, i: int, event: Any) -> None:
        if self._live[i]:
            self.members[i].p.emit(event)

    def live_members(self) -> list[Member]:
        return [self.members[i] for i in self.active()]

    def start_clock(self) -> None:  # the clock: each member's share of the device time
        with self._lock:
            self._t0 = self._seg = time.perf_counter()

    def _advance(self, now: float) -> None:
        """Give the time since the last change to the members in, by weight (under the lock)."""
        if self._seg is None:
            return
        live = self.active()
        total = sum(self.members[i].weight for i in live)
        if live and total > 0:
            dt = now - self._seg
            for i in live:
                self._share[i] += dt * self.members[i].weight / total
        self._seg = now

    def share_of(self, member: Member) -> float:  # its share until now (while it runs)
        with self._lock:
            self._advance(time.perf_counter())
            return self._share[self.members.index(member)]

    def drop(self, member: Member) -> None:
        """Member canceled: completed now, on its share so far; the rest go on."""
        with self._lock:
            i = self.members.index(member)
            if not self._live[i]:
                return
            self._advance(time.perf_counter())
            self._live[i] = False
            share = self._share[i]
            last = not any(self._live)
        member.complete(Completed(status="canceled", error=member.p.cancel_reason, metrics={
            "hardware": self.hardware, "predict_time": round(share, 6), "batch_size": self.size, "batch_id": self.id}))
        if last:
            self.gone.set()
            self.runner.cancel(self)  # nobody wants the call any more: stop it

    def finish(self) -> list[tuple[int, Member, float]]:
        """The batch ended: (index, member, share) of the members still in, who leave now."""
        with self._lock:
            now = time.perf_counter()
            self._advance(now)
            if self._t0 is not None:
                self.device_time = now - self._t0
            out = [(i, self.members[i], self._share[i]) for i in self.active()]
            self._live = [False] * self.size
        return out

    def cancel(self, reason: str | None = None) -> None:
        """Cancel every member (the runner is closing, or setup was interrupted)."""
        self.cancel_reason = self.cancel_reason or reason
        for m in list(self.members):
            if not m.p.done:
                m.p.cancel(reason=reason)
