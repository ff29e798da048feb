"""Batching on the local runner: predictions of one model arriving together run as one batch.

Against real parts: the embedded local/shapes and local/tiny-lm, predictors defined here that
record what their `predict_batch` saw, a real kernel for `%%replicate --sweep` (at the default
window). Here the window is widened to 150 ms (the machine is shared: a thread may start late).
"""
from __future__ import annotations

import asyncio
import io
import threading
import time

import numpy as np
import pytest
from cog import BasePredictor, Input
from kernel_helpers import text_of
from PIL import Image

import replicate_jupyter as rj
from replicate_jupyter import api
from replicate_jupyter.model.batching import Batch, BatchRule, batchable, current_batch, rule_of
from replicate_jupyter.prediction.events import Output, Preview, Progress
from replicate_jupyter.session import session

SHAPES, LM = "local/shapes", "local/tiny-lm"


@pytest.fixture(autouse=True)
def runner():
    r = session.runner("local")
    saved = (r.batch_window, r.batch_max_wait, r.max_batch)
    r.batch_window, r.batch_max_wait = 0.15, 1.0
    session.ledger.reset()
    yield r
    r.batch_window, r.batch_max_wait, r.max_batch = saved


class Rows(BasePredictor):
    """Steps through its members, recording what each `predict_batch` call saw."""

    seen: list = []
    active: list = []
    measured: list = []

    @batchable(max_batch=8, match=("width",))
    def predict(self, x: int = Input(default=1), width: int = Input(default=8), steps: int = Input(default=3),
                delay: float = Input(default=0.01), fail: bool = Input(default=False)) -> int:
        Rows.seen.append(("one", x))
        return x * width

    def predict_batch(self, inputs: list[dict]) -> list:
        batch = current_batch(len(inputs))
        Rows.seen.append(("batch", [i["x"] for i in inputs]))
        t0 = time.perf_counter()
        steps = inputs[0]["steps"]
        for s in range(steps):
            time.sleep(inputs[0]["delay"])
            Rows.active.append(batch.active())
            batch.progress(s + 1, steps)
        Rows.measured.append(time.perf_counter() - t0)
        return [ValueError(f"bad {i['x']}") if i["fail"] else i["x"] * i["width"] for i in inputs]


def start_all(ref, inputs: list[dict], listener=None) -> list:
    """Prepared first, then started together: how a sweep dispatches."""
    ps = [api.prepare(ref, inp) for inp in inputs]
    for p in ps:
        if listener is not None:
            p.subscribe(listener)
    for p in ps:
        api.start(p)
    for p in ps:
        p.wait(120)
    return ps


def pixels(f) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(f.read())).convert("RGB")).astype(int)


# ----- the protocol ------------------------------------------------------------------------------
def test_rule_keys_and_declaration_errors():
    rule = BatchRule(match=frozenset({"width"}))
    assert rule.key({"width": 8, "x": 1}) == rule.key({"width": 8, "x": 2}) != rule.key({"width": 16, "x": 1})
    vary = BatchRule(match=None, vary=frozenset({"prompt"}), alone=lambda i: i.get("image") is not None,
                     group=lambda i: bool(i["neg"]))
    assert vary.key({"prompt": "a", "steps": 4, "neg": "", "image": None}) == \
        vary.key({"prompt": "b", "steps": 4, "neg": "", "image": None})
    assert vary.key({"prompt": "a", "steps": 4, "neg": "x", "image": None}) != \
        vary.key({"prompt": "a", "steps": 4, "neg": "", "image": None})
    assert vary.key({"prompt": "a", "steps": 4, "neg": "", "image": "x.png"}) is None
    assert BatchRule(item_bytes=100).limit(free_bytes=350) == 3 and BatchRule(max_batch=8).limit(None, cap=2) == 2
    with pytest.raises(TypeError, match="not both"):
        batchable(match=("a",), vary=("b",))

    class NoBatchMethod(BasePredictor):
        @batchable()
        def predict(self, x: int = 1) -> int:
            return x

    assert rule_of(NoBatchMethod.predict, NoBatchMethod) is None
    assert rule_of(Rows.predict, Rows).match == frozenset({"width"})
    detached = current_batch(3)  # outside a runner: all members active, reports are no-ops
    assert isinstance(detached, Batch) and detached.active() == [0, 1, 2]
    assert Rows().predict_batch([{"x": 2, "width": 8, "steps": 1, "delay": 0, "fail": False}]) == [16]


def test_one_incompatible_member_runs_alone_and_the_rest_batched():
    Rows.seen.clear()
    ps = start_all(Rows, [{"x": i, "width": 16 if i == 2 else 8} for i in range(5)])
    assert [p.status for p in ps] == ["succeeded"] * 5
    assert [p.output for p in ps] == [0, 8, 32, 24, 32]
    batched = [p for p in ps if p.input["width"] == 8]
    assert {p.metrics["batch_size"] for p in batched} == {4} and len({p.metrics["batch_id"] for p in batched}) == 1
    assert "batch_size" not in ps[2].metrics  # ran alone, through predict
    assert len(Rows.seen) == 2 and ("one", 2) in Rows.seen
    assert sorted(next(s[1] for s in Rows.seen if s[0] == "batch")) == [0, 1, 3, 4]


def test_a_member_failing_fails_alone_and_a_wrong_length_fails_the_batch():
    ps = start_all(Rows, [{"x": i, "fail": i == 1} for i in range(3)])
    assert [p.status for p in ps] == ["succeeded", "failed", "succeeded"]
    assert ps[1].error == "ValueError: bad 1" and ps[2].output == 16

    class Short(BasePredictor):
        @batchable()
        def predict(self, x: int = Input(default=1)) -> int:
            return x

        def predict_batch(self, inputs: list[dict]) -> list:
            return [0]

    ps = start_all(Short, [{"x": i} for i in range(3)])
    assert {p.status for p in ps} == {"failed"}
    assert "predict_batch returned 1 outputs for 3 inputs" in ps[0].error


def test_max_batch_and_a_lone_prediction_calls_predict(runner):
    runner.max_batch = 2
    ps = start_all(Rows, [{"x": i} for i in range(5)])
    sizes = sorted(p.metrics.get("batch_size", 1) for p in ps)
    assert sizes == [1, 2, 2, 2, 2]
    runner.max_batch = None
    Rows.seen.clear()
    assert rj.run(Rows, {"x": 7}) == 56 and Rows.seen == [("one", 7)]


def test_out_of_memory_in_a_batch_retries_then_runs_each_alone():
    class Big(BasePredictor):
        @batchable()
        def predict(self, x: int = Input(default=1)) -> int:
            return -x

        def predict_batch(self, inputs: list[dict]) -> list:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    ps = start_all(Big, [{"x": i} for i in range(3)])
    assert [p.status for p in ps] == ["succeeded"] * 3 and [p.output for p in ps] == [0, -1, -2]
    assert "retrying the batch once" in ps[0].logs and "running it alone" in ps[0].logs
    assert {p.metrics["batch_size"] for p in ps} == {1}  # each ran alone in the end
    assert sum(p.metrics["predict_time"] for p in ps) > 0


# ----- cancel ----------------------------------------------------------------------------------------
def cancel_at(p, step: int, at: list, reason: str | None = None) -> None:
    """Cancel `p` from a listener once its progress reaches `step`; `at` gets the step it had
    reached by then (the batch may have moved on while the listener was on its way)."""
    def listen(p, e):
        if isinstance(e, Progress) and e.step == step:
            at.append(p.progress[0])
            p.cancel(reason=reason)

    p.subscribe(listen)


def test_cancel_one_member_mid_batch_the_others_finish():
    Rows.active.clear()
    ps = [api.prepare(Rows, {"x": i, "steps": 8, "delay": 0.03}) for i in range(3)]
    at: list = []
    cancel_at(ps[1], 2, at, reason="enough")
    for p in ps:
        api.start(p)
    for p in ps:
        p.wait(60)
    assert [p.status for p in ps] == ["succeeded", "canceled", "succeeded"]
    assert ps[1].error == "enough" and ps[1].output is None
    last = max(e.step for e in ps[1].events() if isinstance(e, Progress))
    assert last <= at[0] + 1  # nothing after the step in flight when it was canceled
    gone = next(k for k, a in enumerate(Rows.active) if a == [0, 2])
    assert Rows.active[:2] == [[0, 1, 2]] * 2 and gone <= at[0] + 1  # out of the batch at the next step
    assert Rows.active[gone:] == [[0, 2]] * (8 - gone)  # and never back
    assert ps[1].metrics["batch_size"] == 3 and 0 < ps[1].metrics["predict_time"] < ps[0].metrics["predict_time"]


def test_cancel_every_member_stops_the_batch_and_the_model_stays_usable(runner):
    ps = [api.prepare(Rows, {"x": i, "steps": 500, "delay": 0.01}) for i in range(3)]
    for p in ps:
        api.start(p)
    deadline = time.monotonic() + 30
    while not all(p.status == "processing" for p in ps) and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.perf_counter()
    for p in ps:
        p.cancel()
    for p in ps:
        p.wait(10)
    assert [p.status for p in ps] == ["canceled"] * 3 and time.perf_counter() - t0 < 2.0
    time.sleep(0.2)
    assert rj.run(Rows, {"x": 3}) == 24
    assert not any(w.thread.defunct for w in runner._warm.values())


def test_shapes_cancel_one_member_the_others_images_are_their_own():
    seeds = [11, 12, 13, 14]
    ps = [api.prepare(SHAPES, {"prompt": "a blue star", "seed": s, "num_inference_steps": 30}) for s in seeds]
    at: list = []
    cancel_at(ps[1], 3, at)
    for p in ps:
        api.start(p)
    for p in ps:
        p.wait(120)
    assert [p.status for p in ps] == ["succeeded", "canceled", "succeeded", "succeeded"]
    assert max(e.step for e in ps[1].events() if isinstance(e, Progress)) <= at[0] + 1 < 30
    for p, s in zip(ps, seeds):
        if p.status == "succeeded":  # its rows kept while member 1's were dropped: the image it gets alone
            alone = rj.run(SHAPES, {"prompt": "a blue star", "seed": s, "num_inference_steps": 30})
            assert np.abs(pixels(alone[0]) - pixels(p.output[0])).max() <= 2
    total = sum(p.metrics["predict_time"] for p in ps)
    _id, size, device_time = next(h for h in session.runner("local")._batcher.history if h[0] == ps[0].metrics["batch_id"])
    assert size == 4 and total == pytest.approx(device_time, abs=1e-5)


# ----- events reach each member ------------------------------------------------------------------------
def test_shapes_batch_previews_and_logs_are_each_members_own():
    previews: dict[str, list] = {}  # seen live (the history keeps only the last preview's image)
    ps = start_all(SHAPES, [{"prompt": "a red circle", "seed": 1, "num_outputs": 1},
                            {"prompt": "a green square", "seed": 2, "num_outputs": 2}],
                   listener=lambda p, e: previews.setdefault(p.id, []).append(e.image.width)
                   if isinstance(e, Preview) and e.image is not None else None)
    assert [p.status for p in ps] == ["succeeded"] * 2 and ps[0].metrics["batch_size"] == 2
    assert [len(p.output) for p in ps] == [1, 2]
    assert set(previews[ps[0].id]) == {128} and set(previews[ps[1].id]) == {256}  # a strip of its own outputs
    assert "Using seed: 1" in ps[0].logs and "Using seed: 2" not in ps[0].logs and "Using seed: 2" in ps[1].logs
    assert [e.step for e in ps[0].events() if isinstance(e, Progress)] == list(range(1, 21))
    # the device time is split by work: two images cost twice one
    assert ps[1].metrics["predict_time"] == pytest.approx(2 * ps[0].metrics["predict_time"], rel=1e-3)


def test_tiny_lm_batch_streams_each_members_tokens_as_alone():
    inputs = [{"prompt": p, "seed": s, "max_new_tokens": 40 + 20 * k}
              for k, (p, s) in enumerate([("The", 1), ("import", 2), ("A list", 3)])]
    ps = start_all(LM, inputs)
    assert {p.metrics.get("batch_size") for p in ps} == {3}
    for p, inp in zip(ps, inputs):
        outs = [e for e in p.events() if isinstance(e, Output)]
        assert [e.index for e in outs] == list(range(len(outs))) and len(outs) > 3
        assert p.text == "".join(rj.run(LM, inp))  # the same seed, the same text as alone
        assert p.progress[1] == inp["max_new_tokens"]


# ----- cost ----------------------------------------------------------------------------------------
def test_ledger_sums_to_the_measured_device_time():
    Rows.measured.clear()
    ps = start_all(Rows, [{"x": i, "steps": 5, "delay": 0.02} for i in range(4)])
    batch_id = ps[0].metrics["batch_id"]
    assert {p.metrics["batch_id"] for p in ps} == {batch_id} and ps[0].metrics["batch_size"] == 4
    _id, _size, device_time = next(h for h in session.runner("local")._batcher.history if h[0] == batch_id)
    shares = [p.metrics["predict_time"] for p in ps]
    assert sum(shares) == pytest.approx(device_time, abs=1e-5)
    assert max(shares) - min(shares) < 1e-5  # equal work, equal shares
    assert Rows.measured[-1] <= device_time < Rows.measured[-1] + 0.25
    assert session.ledger.gpu_seconds() == pytest.approx(sum(shares), abs=1e-6)
    assert sum(e.cost_usd for e in session.ledger) == pytest.approx(device_time * 0.0001, abs=1e-7)


# ----- arriving together ------------------------------------------------------------------------------
def test_asyncio_gather_of_async_runs_is_one_batch():
    async def four():
        return await asyncio.gather(*[rj.async_run(Rows, {"x": i}) for i in range(4)])

    assert asyncio.run(four()) == [0, 8, 16, 24]
    ps = rj.predictions.list()[:4][::-1]
    assert {p.metrics.get("batch_size") for p in ps} == {4} and len({p.metrics["batch_id"] for p in ps}) == 1


def test_four_threads_calling_run_are_one_batch():
    out: dict[int, int] = {}
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, rj.run(Rows, {"x": i}))) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out == {0: 0, 1: 8, 2: 16, 3: 24}
    ps = rj.predictions.list()[:4][::-1]
    assert {p.metrics.get("batch_size") for p in ps} == {4}


def test_sweep_in_a_kernel_batches_per_guidance(run_cells):
    nb = run_cells([
        "%load_ext replicate_jupyter",
        "%%replicate local/shapes --sweep seed=1,2,3 --sweep guidance_scale=3,1 -o grid\na red circle",
        "import json\nprint(json.dumps([[p.input['guidance_scale'], p.status, p.metrics.get('batch_size'), "
        "p.metrics.get('batch_id')] for p in grid]))",
    ])
    import json

    rows = json.loads(text_of(nb.cells[2]).strip().splitlines()[-1])
    assert [r[1] for r in rows] == ["succeeded"] * 6
    by_guidance: dict[float, set] = {}
    for g, _status, size, batch_id in rows:
        assert size == 3
        by_guidance.setdefault(g, set()).add(batch_id)
    assert len(by_guidance) == 2 and all(len(ids) == 1 for ids in by_guidance.values())
    assert by_guidance[3] != by_guidance[1]


def test_the_cost_line_says_batched_and_the_running_cost_is_a_share():
    from replicate_jupyter.cost.billing import running
    from replicate_jupyter.cost.text import cost_line

    ps = start_all(Rows, [{"x": i, "width": 8, "steps": 3, "delay": 0.1} for i in range(4)])
    assert all(p.status == "succeeded" for p in ps)
    line = cost_line(ps[0])
    assert f"batched ×{ps[0].metrics['batch_size']}" in line and ps[0].metrics["batch_size"] == 4
    # while it runs, a member of a batch of 4 is billed a quarter of the elapsed device time
    from replicate_jupyter.prediction.events import Metric, Started
    from replicate_jupyter.prediction.prediction import Prediction

    live = Prediction("test/rows", {}, backend="local")
    live.emit(Started(hardware="cpu"))
    live.emit(Metric(name="batch_size", value=4))
    time.sleep(0.2)
    share = running(live).usd
    live.metrics["batch_size"] = 1
    whole = running(live).usd
    assert 0 < share < whole / 3  # a quarter of the (growing) elapsed time, not all of it
