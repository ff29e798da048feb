"""The kernel-side runner and the Python API, on real predictors (tests/predictors/*.py and
classes defined here), with real torch where memory and OOM matter."""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
import warnings

import pytest
from cog import BasePredictor, Input

import replicate_jupyter as rj
from replicate_jupyter.cost import prices as cost
from replicate_jupyter.prediction.events import Completed, Progress, Started
from replicate_jupyter.runners import devices
from replicate_jupyter.runners.local import LocalRunner
from replicate_jupyter.session import session

HERE = pathlib.Path(__file__).parent
P = HERE / "predictors"


@pytest.fixture(autouse=True)
def clean_session():
    session.ledger.reset()
    session.budget = None
    cost.prices.reset()
    yield
    session.budget = None
    cost.prices.reset()


# ----- running predictors ---------------------------------------------------------------------
def test_run_returns_output_and_records_metrics_logs_and_cost():
    out = rj.run(f"{P}/echo.py:Predictor", {"text": "yo", "times": 2})
    assert out == ">yo >yo"
    p = rj.predictions.list()[0]
    assert p.status == "succeeded" and p.model == "local/echo"
    assert "echoing 2 times" in p.logs
    assert p.metrics["hardware"] == "cpu"
    assert p.metrics["predict_time"] > 0
    assert p.metrics["cost_usd"] == pytest.approx(p.metrics["predict_time"] * 0.0001, abs=1e-8)
    assert p.started_at and p.completed_at and p.created_at


def test_iterator_output_streams_in_order_and_concatenates():
    events = list(rj.stream(f"{P}/tokens.py", {"n": 6}))
    kinds = [e.event for e in events]
    assert kinds == ["output"] * 6 + ["done"]
    assert "".join(str(e) for e in events[:-1]) == "t0 t1 t2 t3 t4 t5 "
    p = rj.predictions.list()[0]
    assert p.output == ["t0 ", "t1 ", "t2 ", "t3 ", "t4 ", "t5 "] and p.text == "t0 t1 t2 t3 t4 t5 "


def test_progress_events_reach_listeners_in_order():
    p = rj.predictions.create(f"{P}/steps.py", {"steps": 5, "delay": 0.0})
    p.wait(10)
    seen = []
    p.subscribe(lambda _p, e: seen.append(e))  # late listener: replayed from the start
    assert isinstance(seen[0], Started) and isinstance(seen[-1], Completed)
    steps = [e.step for e in seen if isinstance(e, Progress)]
    assert steps == [1, 2, 3, 4, 5]
    assert p.output == "done 5"


def test_baserunner_async_run_async_generator_and_cog_yaml_folder():
    assert rj.run(f"{P}/runner_style.py", {"a": 4}) == 12
    assert rj.run(f"{P}/async_gen.py", {"n": 3}) == ["a0", "a1", "a2"]
    assert rj.run(f"{P}/cogdir") == "COG!"
    assert rj.run(f"{P}/cogdir/cog.yaml", {"word": "x"}) == "X!"


def test_class_and_instance_handed_to_the_api():
    class Doubler(BasePredictor):
        def predict(self, x: int = Input(default=2, ge=0)) -> int:
            return 2 * x

    assert rj.run(Doubler, {"x": 21}) == 42
    assert rj.run(Doubler(), {"x": 5}) == 10


def test_file_outputs_are_file_objects_that_read_save_and_display(tmp_path):
    out = rj.run(f"{P}/image.py", {"color": "blue", "count": 2})
    assert len(out) == 2 and all(isinstance(f, rj.FileOutput) for f in out)
    img = out[0].image()
    assert img.size == (16, 16) and img.getpixel((3, 3)) == (0, 0, 255)
    saved = out[0].save(tmp_path)
    assert saved.read_bytes() == out[0].read()
    assert out[0].url.startswith("data:image/png;base64,")


def test_file_input_as_pil_image_reaches_the_predictor_as_a_path():
    from PIL import Image

    img = Image.new("RGB", (10, 10), (1, 2, 3))
    out = rj.run(f"{P}/file_in.py", {"image": img})
    assert out.endswith(" bytes") and int(out.split()[0]) > 20
    p = rj.predictions.list()[0]
    rec = p.to_json()["input"]["image"]
    assert rec["type"] == "file" and len(rec["sha256"]) == 64 and "url" not in rec


# ----- failures ---------------------------------------------------------------------------------
def test_model_error_keeps_the_models_own_traceback_and_logs():
    with pytest.raises(rj.ModelError) as info:
        rj.run(f"{P}/failing.py")
    p = info.value.prediction
    assert p.status == "failed"
    assert "ValueError: model exploded on 'boom'" in p.error
    assert "failing.py" in p.traceback and "in helper" in p.traceback
    assert "replicate_jupyter" not in p.traceback  # none of our frames
    assert "about to fail" in p.logs
    assert session.ledger.entries[-1].status == "failed"


def test_unknown_model_names_close_matches():
    with pytest.raises(rj.ModelNotFound) as info:
        rj.run("local/shapez")
    assert "local/shapes" in str(info.value)


# ----- cancellation ----------------------------------------------------------------------------
def test_cancel_stops_a_step_loop_within_one_step_and_keeps_partial_time():
    p = rj.predictions.create(f"{P}/steps.py", {"steps": 400, "delay": 0.02})
    while not p.progress or p.progress[0] < 5:
        time.sleep(0.005)
    step_at_cancel = p.progress[0]
    p.cancel()
    p.wait(5)
    assert p.status == "canceled"
    assert p.progress[0] <= step_at_cancel + 2  # the step in flight, then stop
    assert p.metrics["predict_time"] >= 0.08
    entry = session.ledger.entries[-1]
    assert entry.status == "canceled" and entry.predict_time == p.metrics["predict_time"] and entry.cost_usd > 0


def test_cancel_stops_a_token_generator():
    p = rj.predictions.create(f"{P}/tokens.py", {"n": 1000, "delay": 0.01})
    while len(p.output) < 3:
        time.sleep(0.005)
    p.cancel()
    p.wait(5)
    assert p.status == "canceled" and 3 <= len(p.output) < 10


def test_keyboard_interrupt_cancels_and_propagates():
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        rj.run(f"{P}/steps.py", {"steps": 1000, "delay": 0.01})
    p = rj.predictions.list()[0]
    assert p.status == "canceled" and p.metrics["predict_time"] >= 0.25
    assert p.progress[0] < 100
    # the runner is usable afterwards
    assert rj.run(f"{P}/echo.py:Predictor", {"text": "after"}) == ">after"


# ----- warm cache --------------------------------------------------------------------------------
class Heavy(BasePredictor):
    setups = 0

    def setup(self):
        import torch

        type(self).setups += 1
        self.layer = torch.nn.Linear(1024, 1024)  # 4 MB of fp32 weights

    def predict(self, x: float = Input(default=1.0)) -> float:
        return float(x)


class Heavy2(Heavy):
    pass


def test_warm_cache_hit_then_eviction_under_a_memory_budget():
    runner = LocalRunner(memory_budget=6 << 20)  # room for one 4 MB model, not two
    session._runners["local-test"] = runner
    from replicate_jupyter import runners

    runners.BACKENDS.setdefault("local-test", "replicate_jupyter.runners.local:LocalRunner")
    try:
        Heavy.setups = Heavy2.setups = 0
        p1 = rj.predictions.create(Heavy, {"x": 1}, on="local-test").wait()
        p2 = rj.predictions.create(Heavy, {"x": 2}, on="local-test").wait()
        assert Heavy.setups == 1  # warm hit
        assert "setup_time" in p1.metrics and "setup_time" not in p2.metrics
        assert len(runner.warm) == 1
        rj.predictions.create(Heavy2, {"x": 3}, on="local-test").wait()
        assert len(runner.warm) == 1 and runner.warm[0].endswith(str(id(Heavy2)))
        assert runner.evictions and runner.evictions[-1].endswith(str(id(Heavy)))
        rj.predictions.create(Heavy, {"x": 4}, on="local-test").wait()
        assert Heavy.setups == 2  # evicted, so it was set up again
    finally:
        session._runners.pop("local-test").close()


class Flaky(BasePredictor):
    calls = 0

    def predict(self, fail_times: int = Input(default=1)) -> str:
        import torch

        type(self).calls += 1
        if type(self).calls <= fail_times:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "fit"


def test_out_of_memory_evicts_warm_models_and_retries_once():
    rj.run(Heavy, {"x": 1})  # something warm to evict
    runner = session.runner("local")
    assert any(k.endswith(str(id(Heavy))) for k in runner.warm)
    Flaky.calls = 0
    assert rj.run(Flaky, {"fail_times": 1}) == "fit"
    p = rj.predictions.list()[0]
    assert "retrying once" in p.logs
    assert not any(k.endswith(str(id(Heavy))) for k in runner.warm)
    Flaky.calls = 0
    with pytest.raises(rj.ModelError) as info:
        rj.run(Flaky, {"fail_times": 5})
    assert "Out of device memory" in info.value.prediction.error and Flaky.calls == 2


def test_out_of_memory_retry_runs_after_the_failed_attempts_frames_are_released():
    ref = f"{P}/oom_frames.py"
    cls = session.runner("local").resolve(ref).extra["spec"].cls
    cls.calls, cls.first = 0, None
    # the retry reports whether the first attempt's local (its "activations") was freed before it
    # ran: a retry inside the `except` block keeps that frame alive (pytorch#18853)
    assert rj.run(ref, {"x": 1}) == "freed"
    p = rj.predictions.list()[0]
    assert p.status == "succeeded" and "retrying once" in p.logs and cls.calls == 2


# ----- cost, ledger, budget ----------------------------------------------------------------------
def test_ledger_sums_every_prediction_and_price_overrides_apply():
    cost.prices.set("cpu", 0.5)
    for _ in range(3):
        rj.run(f"{P}/steps.py", {"steps": 2, "delay": 0.01})
    entries = session.ledger.entries
    assert len(entries) == 3
    assert session.ledger.total() == pytest.approx(sum(e.predict_time * 0.5 for e in entries), rel=1e-4)
    by_model = session.ledger.by_model()["local/steps"]
    assert by_model["predictions"] == 3 and by_model["cost_usd"] == pytest.approx(session.ledger.total())


def test_budget_refuses_when_reached_and_cancels_a_run_that_crosses_it():
    cost.prices.set("cpu", 1.0)  # 1 USD per second makes the budget bite quickly
    session.budget = 0.3
    p = rj.predictions.create(f"{P}/steps.py", {"steps": 1000, "delay": 0.01}).wait(10)
    assert p.status == "canceled" and "budget" in (p.error or "")
    assert 0.25 <= session.ledger.total() <= 0.5
    n = len(rj.predictions.list())
    with pytest.raises(rj.BudgetExceeded):
        rj.run(f"{P}/echo.py:Predictor")
    assert len(rj.predictions.list()) == n  # nothing dispatched


def test_max_cost_cancels_one_prediction():
    cost.prices.set("cpu", 1.0)
    p = rj.predictions.create(f"{P}/steps.py", {"steps": 1000, "delay": 0.01}, max_cost=0.2).wait(10)
    assert p.status == "canceled" and "max-cost" in p.error
    assert p.metrics["cost_usd"] == pytest.approx(0.2, abs=0.15)


def test_hardware_skus_from_device_names():
    assert devices.sku_for_name("NVIDIA H100 80GB HBM3") == "gpu-h100"
    assert devices.sku_for_name("NVIDIA A100-SXM4-80GB") == "gpu-a100-large"
    assert devices.sku_for_name("NVIDIA L40S") == "gpu-l40s"
    assert devices.sku_for_name("Tesla T4") == "gpu-t4"
    assert devices.sku_for_name("NVIDIA A40") == "gpu-a40-large"
    assert devices.sku_for_name("cpu") == "cpu"
    assert devices.sku_for_name("NVIDIA H100 80GB HBM3", count=8) == "gpu-h100-8x"
    assert cost.price("gpu-h100-8x") == pytest.approx(8 * 0.001525)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert devices.sku_for_name("Quantum GPU 9000") == devices.FALLBACK_GPU_SKU
        assert devices.sku_for_name("Quantum GPU 9000") == devices.FALLBACK_GPU_SKU
    assert len([w for w in caught if "Quantum GPU 9000" in str(w.message)]) == 1


def test_import_is_light():
    code = ("import sys, replicate_jupyter;"
            "heavy=[m for m in ('torch','diffusers','transformers','ray','cog') if m in sys.modules];"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_secret_inputs_reach_the_predictor_as_secrets_and_never_the_record():
    import json

    out = rj.run(f"{P}/secret.py", {"api_key": "sk-very-secret-123"})
    assert out == "w:18:Secret"
    p = rj.predictions.list()[0]
    assert "sk-very-secret-123" not in json.dumps(p.to_json())
    assert "sk-very-secret-123" not in repr(p)


def test_an_edited_predictor_releases_the_old_instance_before_the_new_one_sets_up(tmp_path):
    """Edit → rerun, three times: each run has the new code, and only the newest version stays warm
    (the old one's teardown ran: its memory is released before the new setup loads)."""
    import replicate_jupyter as rj
    from replicate_jupyter.runners.local import LocalRunner

    src = tmp_path / "edited.py"
    released: list[str] = []
    runner = LocalRunner()
    try:
        for n in range(3):
            src.write_text(
                "from cog import BasePredictor\n"
                "import builtins\n"
                "class Predictor(BasePredictor):\n"
                f"    def predict(self) -> str:\n        return 'v{n}'\n"
                f"    def teardown(self):\n        builtins._rj_released.append('v{n}')\n")
            import builtins
            builtins._rj_released = released  # type: ignore[attr-defined]
            handle = runner.resolve(f"{src}:Predictor")
            p = rj.Prediction(handle.name, {}, backend="local", handle=handle, runner=runner)
            runner.execute(p)
            p.wait(10)
            assert p.output == f"v{n}"
            assert len([k for k in runner.warm if str(src) in k]) == 1  # the old version is not kept warm
        deadline = time.monotonic() + 5
        while released != ["v0", "v1"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert released == ["v0", "v1"]
    finally:
        runner.close()
