"""Batching: many predictions of one model in one forward pass — the protocol a predictor opts into.

Cog runs one prediction per call (or several at once, each its own call, with
`@cog.concurrent`); a diffusion or text model on one device does 8 prompts in one batched call
in little more than the time of one. A predictor opts in with two things, both plain Python,
so the same file still runs unchanged under Cog (which calls `predict` only):

    from replicate_jupyter.model.batching import batchable, current_batch

    class Predictor(BasePredictor):
        @batchable(max_batch=8, match=("width", "height", "num_inference_steps"))
        def predict(self, prompt: str = Input(...), width: int = 512, ..., seed: int = None) -> Path:
            ...                                    # one prediction, as always

        def predict_batch(self, inputs: list[dict]) -> list[Path]:
            batch = current_batch(len(inputs))     # the runner's view of the members
            for step in range(steps):
                keep = batch.active()              # members still wanted (optional: drop the rest's rows)
                ...
                batch.progress(step + 1, steps)    # Progress to every member still in (member=i: one)
                batch.preview(lambda i: image_of(i), step + 1)   # each member its own preview
            return [output_of(i) for i in range(len(inputs))]

The contract:
- `inputs[i]` holds the keyword arguments `predict` would get for member i: every parameter,
  defaults filled, typed as Cog passes them. The runner only batches members whose `match`
  inputs are equal (or, with `vary=`, whose every other input is equal), never more than
  `max_batch` (fewer when `item_bytes` says free device memory holds fewer), and runs a member
  alone when `alone(inputs)` says so (e.g. an image-to-image input). A batch of one calls
  `predict`, exactly as without batching.
- `predict_batch` returns one output per member, in order — what `predict` would have returned
  for it — or an Exception instance in a member's place, which fails that member only. For an
  iterator model it yields `(i, item)` pairs instead: item is the next piece of member i's
  stream (tokens per member).
- Logs: prints and `progress.log` inside `predict_batch` reach every member; `batch.log(i, text)`
  one member (say each member's own "Using seed: N" there: records read the seed from it).
- Cancel of one member: the runner completes it `canceled` at once, with its share of the
  device time so far, and drops whatever `predict_batch` still produces for it; the batch goes on
  for the others. `batch.active()` tells the predictor which members are still wanted, so it may
  drop their rows at its next step (local/shapes does; diffusers and `generate()` pipelines
  cannot and just compute them). `batch.progress()` raises `errors.Canceled` only once every
  member is canceled.
- Cost: the batch's device time is split across the members still in it, by `weight` (default
  1 each; e.g. `weight="num_outputs"`), so the members' `predict_time`s sum to the device time.
- Outside a batching runner (under Cog, or a test calling `predict_batch` directly),
  `current_batch(n)` is a detached batch of n members: all active, its progress/preview/log go to
  `replicate_jupyter.progress` (so a Cog worker started by `serve` still relays them).
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Iterator

__all__ = ["BatchRule", "Batch", "batchable", "rule_of", "current_batch", "using", "RULE_ATTR"]

#: where `@batchable` leaves its rule on the predict/run function
RULE_ATTR = "__rj_batching__"


@dataclass(frozen=True)
class BatchRule:
    """What `@batchable` declared: how many at once, which inputs must agree, each one's share."""

    max_batch: int = 8
    match: frozenset[str] | None = frozenset()  # must be equal within a batch (None: see `vary`)
    vary: frozenset[str] | None = None  # may differ; every other input must match
    weight: str | Callable[[dict], float] | None = None  # input name or function: share of the work
    alone: Callable[[dict], bool] | None = None  # True: this prediction runs by itself
    group: Callable[[dict], Hashable] | None = None  # one more value members must share
    item_bytes: int | None = None  # device memory one member needs (caps the batch size)

    def key(self, inputs: dict[str, Any]) -> Hashable | None:
        """What members of one batch share (None: run alone). `inputs` are default-filled."""
        if self.alone is not None and self.alone(inputs):
            return None
        if self.vary is not None:
            names = sorted(k for k in inputs if k not in self.vary)
        else:
            names = sorted(self.match or ())
        extra = () if self.group is None else (("", _canon(self.group(inputs))),)
        return tuple((k, _canon(inputs.get(k))) for k in names) + extra

    def weight_of(self, inputs: dict[str, Any]) -> float:
        if self.weight is None:
            return 1.0
        value: Any = inputs.get(self.weight) if isinstance(self.weight, str) else self.weight(inputs)
        try:
            return max(float(value), 1e-9)
        except (TypeError, ValueError):
            return 1.0

    def limit(self, free_bytes: int | None, cap: int | None = None) -> int:
        """How many members one batch may hold: declared, capped by `cap` and by free memory."""
        n = max(1, int(self.max_batch))
        if cap:
            n = min(n, max(1, int(cap)))
        if self.item_bytes and free_bytes:
            n = min(n, max(1, int(free_bytes // self.item_bytes)))
        return n


def _canon(value: Any) -> Hashable:
    try:
        hash(value)
        return (type(value).__name__ if isinstance(value, bool) else "", value)
    except TypeError:
        return repr(value)


def batchable(*, max_batch: int = 8, match: Iterable[str] | None = None, vary: Iterable[str] | None = None,
              weight: str | Callable[[dict], float] | None = None, alone: Callable[[dict], bool] | None = None,
              group: Callable[[dict], Hashable] | None = None,
              item_bytes: int | None = None) -> Callable[[Callable], Callable]:
    """Declare on `predict`/`run` that the class's `predict_batch` may run several predictions of
    it at once. Give `match` (inputs that must be equal; the rest may differ) or `vary` (inputs
    that may differ; the rest must be equal), not both; neither means every input may differ.
    `weight`: an input name or function giving a member's share of the work (default 1);
    `alone(inputs)`: True runs that prediction by itself; `group(inputs)`: one more value the
    members must share (e.g. whether a negative prompt is given); `item_bytes`: device memory one
    member needs, so a batch never holds more than free memory allows."""
    if match is not None and vary is not None:
        raise TypeError("batchable: give match= (inputs that must be equal) or vary= (inputs that may differ), not both")
    if int(max_batch) < 1:
        raise ValueError(f"batchable: max_batch must be ≥ 1, not {max_batch}")
    rule = BatchRule(max_batch=int(max_batch), match=None if vary is not None else frozenset(match or ()),
                     vary=frozenset(vary) if vary is not None else None, weight=weight, alone=alone,
                     group=group, item_bytes=item_bytes)

    def mark(fn: Callable) -> Callable:
        setattr(fn, RULE_ATTR, rule)
        return fn

    return mark


def rule_of(predict: Any, predictor: Any) -> BatchRule | None:
    """The batching rule of a predictor whose predict/run function is `predict`, or None when it
    does not batch (no `@batchable`, or no callable `predict_batch`)."""
    rule = getattr(predict, RULE_ATTR, None) or getattr(getattr(predict, "__func__", None), RULE_ATTR, None)
    if not isinstance(rule, BatchRule) or not callable(getattr(predictor, "predict_batch", None)):
        return None
    return rule


class Batch:
    """The members of one `predict_batch` call, as the predictor sees them. This base is the
    detached one (all active, reports through `replicate_jupyter.progress`); the local runner
    hands a subclass that routes each member's events to its own prediction."""

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def active(self) -> list[int]:
        """Indices of the members still wanted, in order."""
        return list(range(self.size))

    def canceled(self, i: int) -> bool:
        return i not in self.active()

    def progress(self, step: int, total: int | None = None, member: int | None = None) -> None:
        """Step `step` of `total` for every member still in (for one `member` only, when steps
        differ per member, e.g. tokens); raises Canceled once none is in."""
        from replicate_jupyter import progress

        if member is None or member == 0:
            progress.progress(step, total)

    def preview(self, image_of: Callable[[int], Any], step: int | None = None) -> None:
        """Offer each member still in its own preview: `image_of(i)` (a PIL image or None) is
        called only when a display wants one now."""
        from replicate_jupyter import progress

        active = self.active()
        if active:
            progress.preview(lambda: image_of(active[0]), step=step)

    def log(self, i: int, text: str) -> None:
        """A log line for member i only."""
        from replicate_jupyter import progress

        progress.log(text)


_current: contextvars.ContextVar[Batch | None] = contextvars.ContextVar("rj_batch", default=None)


def current_batch(size: int | None = None) -> Batch:
    """The running batch (set by the runner around `predict_batch`); elsewhere a detached batch
    of `size` members."""
    batch = _current.get()
    if batch is not None:
        return batch
    if size is None:
        raise RuntimeError("current_batch() outside a batching runner needs the batch size: current_batch(len(inputs))")
    return Batch(size)


@contextlib.contextmanager
def using(batch: Batch) -> Iterator[Batch]:
    """Make `batch` what `current_batch()` returns inside the block (runners only)."""
    token = _current.set(batch)
    try:
        yield batch
    finally:
        try:
            _current.reset(token)
        except ValueError:
            _current.set(None)
