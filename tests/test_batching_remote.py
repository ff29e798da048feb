"""Batching on workers and Ray: a sweep's compatible members run as one batch on one worker/actor.

Against real parts: two `replicate-jupyter serve local/shapes` workers (coglet behind serve's
front, the batching adapter inside), two workers of a plain Cog predictor (tests/predictors/
sleep.py), and a one-node Ray cluster bound to 127.0.0.2 (as tests/test_ray_backend.py binds
its own). Few denoising steps: the machine is small and shared.
"""
from __future__ import annotations

import io
import os
import pathlib
import tempfile
import threading
import time
from datetime import datetime

import numpy as np
import pytest
from PIL import Image
from serve_helpers import Serve
from test_ray_backend import HEAD_IP, _free_port, _start, _stop

import replicate_jupyter as rj
from replicate_jupyter import api
from replicate_jupyter.cost.text import cost_line
from replicate_jupyter.prediction.events import Metric, Progress
from replicate_jupyter.runners.workers.runner import pool
from replicate_jupyter.runners.workers.wire import batch_key, batching

PRED = pathlib.Path(__file__).resolve().parent / "predictors"
SHAPES = "local/shapes"
SWEEP = [{"prompt": "a red circle", "seed": s, "num_inference_steps": 4} for s in range(8)]
ODD = {"prompt": "a red circle", "seed": 99, "num_inference_steps": 3}  # other steps: never in their batch


def serve_all(*refs: tuple[str, ...]) -> list[Serve]:
    """Start servers side by side (each takes seconds to set up), all or none."""
    out: dict[int, Serve] = {}
    errors: list[BaseException] = []

    def one(i: int, ref: tuple[str, ...]) -> None:
        try:
            out[i] = Serve(*ref, timeout=180)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i, r)) for i, r in enumerate(refs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for s in out.values():
            s.stop()
        raise errors[0]
    return [out[i] for i in range(len(refs))]


@pytest.fixture(scope="module")
def workers():
    # a wider window than the default 50 ms: a sweep's 8 requests reach coglet over ~100 ms here
    shapes, plain = (SHAPES, "--batch-window", "0.15"), (f"{PRED / 'sleep.py'}:Predictor",)
    started = serve_all(shapes, shapes, plain, plain)
    try:
        for s in started:
            pool().add(s.url)
        yield started
    finally:
        for s in started:
            try:
                pool().remove(s.url)
            except KeyError:
                pass
            s.stop()


def start_all(inputs: list[dict], on: str) -> list:
    ps = [api.prepare(SHAPES, inp, on=on) for inp in inputs]
    for p in ps:
        api.start(p)
    return ps


def pixels(f) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(f.read())).convert("RGB")).astype(int)


def check_batched(ps: list, odd) -> None:
    """Every member of the sweep ran in a batch of more than one (each batch as big as the
    members that name it), equal work billed equally; the odd one ran alone."""
    assert [p.status for p in ps] == ["succeeded"] * len(ps), [p.error for p in ps]
    by_batch: dict[str, list] = {}
    for p in ps:
        assert p.metrics["batch_size"] > 1
        by_batch.setdefault(p.metrics["batch_id"], []).append(p)
    for members in by_batch.values():
        assert {p.metrics["batch_size"] for p in members} == {len(members)}
        shares = [p.metrics["predict_time"] for p in members]
        assert max(shares) - min(shares) < 1e-5  # the batch's device time split equally
        assert f"batched ×{len(members)}" in cost_line(members[0])
    assert odd.status == "succeeded" and "batch_size" not in odd.metrics


def check_alone(ps: list, on: str, seeds=(0, 5)) -> None:
    """The same seed gives the same image batched and alone (within 2/255 per pixel)."""
    for s in seeds:
        alone = rj.run(SHAPES, dict(SWEEP[s]), on=on)
        assert np.abs(pixels(alone[0]) - pixels(ps[s].output[0])).max() <= 2


def cancel_at(p, step: int, at: list) -> None:
    def listen(p, e):
        if isinstance(e, Progress) and e.step == step and not at:
            at.append(e.step)
            p.cancel(reason="enough")

    p.subscribe(listen)


def check_cancel_one(ps: list, share: bool) -> None:
    """Member 1 canceled at step 2: it ends canceled, early; the other two finish their batch.
    `share`: its predict_time is its share of the batch so far (Ray, and workers, where the
    canceled coglet task waits for its member's end to record it); else the wall time."""
    assert [p.status for p in ps] == ["succeeded", "canceled", "succeeded"], [p.error for p in ps]
    assert ps[1].error == "enough" and ps[1].output is None
    assert max(e.step for e in ps[1].events() if isinstance(e, Progress)) < 40  # stopped, not run out
    assert ps[0].metrics["batch_size"] == 3 and ps[0].metrics["batch_id"] == ps[2].metrics["batch_id"]
    assert ps[0].output and ps[2].output
    took = (datetime.fromisoformat(ps[0].completed_at.rstrip("Z")) - datetime.fromisoformat(ps[0].started_at.rstrip("Z")))
    bound = ps[0].metrics["predict_time"] if share else took.total_seconds()
    assert 0 < ps[1].metrics["predict_time"] < bound
    if share:  # a third of the time it was in a batch of 3: not the wall time it waited
        own = (datetime.fromisoformat(ps[1].completed_at.rstrip("Z"))
               - datetime.fromisoformat(ps[1].started_at.rstrip("Z"))).total_seconds()
        assert ps[1].metrics["predict_time"] < 0.7 * own, (ps[1].metrics, own)
        assert ps[1].metrics["predict_time"] < ps[0].metrics["predict_time"] / 10, (ps[1].metrics, ps[0].metrics)
        assert ps[1].metrics["batch_id"] == ps[0].metrics["batch_id"]


def cancel_one_of_three(on: str) -> list:
    """Three 60-step members on `on`; the second canceled at its step 2; checked (its share billed)."""
    ps = [api.prepare(SHAPES, {"prompt": "a blue star", "seed": s, "num_inference_steps": 60}, on=on)
          for s in (1, 2, 3)]
    cancel_at(ps[1], 2, [])
    for p in ps:
        api.start(p)
    for p in ps:
        p.wait(180)
    check_cancel_one(ps, share=True)
    return ps


def check_metrics_relayed_once(ps: list) -> None:
    """The worker relays a member's batch metrics to coglet once each, not back into the batch
    it came from (a relay through `cog.current_scope()` found the batch's own scope and fed each
    metric back in for ever: 8 of a sweep took 4–7× as long as one by one)."""
    for p in ps:
        names = [e.name for e in p.events() if isinstance(e, Metric) and e.name in ("batch_size", "batch_id")]
        assert 1 <= names.count("batch_size") <= 2 and 1 <= names.count("batch_id") <= 2, names[:10]


def test_the_relay_scope_is_coglets_even_while_a_batch_scope_is_the_only_one_active():
    from replicate_jupyter.model.scope import Scope, current_scope, native_scope, scope_for

    seen: list = []
    done = threading.Event()
    with scope_for(seen.append):
        def elsewhere() -> None:  # a thread (or a coglet task) with no scope of its own
            seen.append((type(current_scope()), type(native_scope())))
            done.set()

        threading.Thread(target=elsewhere).start()
        assert done.wait(10)
    assert seen[0][0] is Scope  # the one-active fallback, for threads a predictor starts
    assert seen[0][1] is not Scope  # the relay gets coglet's own


# ----- workers ----------------------------------------------------------------------------------
def test_workers_sweep_lands_on_one_worker_batched_and_the_odd_one_alone(workers):
    a, b = workers[0], workers[1]
    info = batching(pool().serving(SHAPES)[0].schema)
    assert info is not None and info["max_batch"] == 16 and info["concurrency"] == 16
    assert batch_key(pool().serving(SHAPES)[0].schema, SWEEP[0]) == batch_key(pool().serving(SHAPES)[0].schema, SWEEP[1])
    ps = start_all([*SWEEP, ODD], "workers")
    for p in ps:
        p.wait(180)
    sweep, odd = ps[:8], ps[8]
    check_batched(sweep, odd)
    check_metrics_relayed_once(sweep)
    assert len({p.metrics["worker"] for p in sweep}) == 1  # all 8 on one worker, not spread
    assert odd.metrics["worker"] != sweep[0].metrics["worker"]  # the odd one took the idle worker
    assert {p.metrics["worker"] for p in ps} == {a.url, b.url}
    # each member its own prediction on the worker: its own id in coglet's log
    started = set(a.started_ids()) | set(b.started_ids())
    assert all(any(s.startswith(f"rj-{p.id}-") for s in started) for p in ps)
    check_alone(sweep, "workers")


def test_workers_cancel_one_member_mid_batch(workers):
    ps = cancel_one_of_three("workers")
    check_metrics_relayed_once([ps[0], ps[2]])


def test_a_plain_model_on_workers_is_unchanged(workers):
    plain = pool().serving("local/sleep")
    assert len(plain) == 2 and all(batching(w.schema) is None for w in plain)
    assert all(w.capacity == 1 for w in plain)
    ps = [api.prepare("local/sleep", {"seconds": 0.6, "tag": str(i)}, on="workers") for i in range(2)]
    for p in ps:
        api.start(p)
    for p in ps:
        p.wait(60)
    assert [p.output for p in ps] == ["slept 0.6 0", "slept 0.6 1"]
    assert {p.metrics["worker"] for p in ps} == {w.url for w in plain}  # spread: one each, as before
    assert all("batch_size" not in p.metrics for p in ps)


# ----- Ray --------------------------------------------------------------------------------------
def _head(tmp: pathlib.Path, env: dict) -> tuple:
    """A one-node cluster on 127.0.0.2 (a port taken meanwhile by another test's cluster: try another)."""
    import socket

    for attempt in range(3):
        port = _free_port()
        head = _start(["--head", "--node-ip-address", HEAD_IP, "--port", str(port), "--num-cpus", "2",
                       "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(tmp / f"t{attempt}")],
                      tmp / "head.log", env)
        deadline = time.monotonic() + 60
        while head.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection((HEAD_IP, port), timeout=1).close()
                return head, port
            except OSError:
                time.sleep(0.3)
        _stop(head)
    raise RuntimeError("ray head did not start:\n" + (tmp / "head.log").read_text()[-3000:])


@pytest.fixture(scope="module")
def ray_backend():
    from replicate_jupyter.session import session

    os.environ["RAY_AUTH_MODE"] = "disabled"
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="rj-ray-batch-"))
    head, port = _head(tmp, dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0"))
    previous = session.default_backend
    try:
        session.use("ray", address=f"{HEAD_IP}:{port}", num_cpus=0.25)
        session.default_backend = previous
        yield session.runner("ray")
    finally:
        session.default_backend = previous
        try:
            session.runner("ray").close()
        except Exception:
            pass
        session.backend_options.pop("ray", None)
        try:
            import ray

            ray.shutdown()
        except Exception:
            pass
        _stop(head)


def test_ray_sweep_is_one_batch_on_the_models_actor(ray_backend):
    assert ray_backend.actor_info(SHAPES)["pid"] > 0  # placed (and the model set up below, by its first run)
    ps = start_all([*SWEEP, ODD], "ray")
    for p in ps:
        p.wait(180)
    check_batched(ps[:8], ps[8])
    check_alone(ps[:8], "ray")


def test_ray_cancel_one_member_mid_batch(ray_backend):
    cancel_one_of_three("ray")


def test_a_failed_members_error_reads_on_workers_as_it_does_alone():
    """coglet words a failure "<type>: <message>" (an async predictor's "Async prediction failed:
    …"): the adapter raises the member's error under its own type's name, and the pool keeps the
    model's words, so the card says "ValueError: bad input", not "RuntimeError: ValueError: …"."""
    from replicate_jupyter.runners.workers.wire import strip_prefix
    from replicate_jupyter.serve.batched import member_error

    exc = member_error("ValueError: bad input")
    assert f"{type(exc).__name__}: {exc}" == "ValueError: bad input" and isinstance(exc, Exception)
    assert f"{type(member_error('no type here')).__name__}" == "RuntimeError"
    assert strip_prefix("Async prediction failed: ValueError: bad input") == "ValueError: bad input"
    assert strip_prefix("Prediction failed: Prediction failed: KeyError: 'x'") == "KeyError: 'x'"
