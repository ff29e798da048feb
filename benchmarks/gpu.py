"""The local runner's GPU paths, measured on a machine that has a CUDA device.

There is no GPU where this project is developed, so these paths are otherwise untested; this
script is meant to run unchanged the day one is lent. Each section prints its figures with a
target and PASS/FAIL:

- device : the local runner computes on CUDA and bills it as the device's SKU (not `cpu`);
- sync   : `metrics.predict_time` of a predictor that returns with its matmuls still queued
           equals a wall clock read after `torch.cuda.synchronize()` (not the unsynchronized one);
- oom    : a real CUDA out-of-memory (the process capped with
           `torch.cuda.set_per_process_memory_fraction`, a warm model filling most of it, then a
           predictor allocating more than is left) → the warm model evicted, the retry succeeds;
- lru    : warm models under `memory_budget` (2.5 models' worth): the oldest evicted and its
           device memory given back;
- fp16   : a tiny diffusers pipeline (built offline as tests/tiny_pipelines.py builds it, with an
           fp16 variant saved) loads in float16 on CUDA and makes a finite, non-constant image;
- sweep  : 8 prompts of local/shapes created at once over one prediction (target on a GPU ≤ 2×).

Without CUDA it prints `skipped: no CUDA device` and exits 0 (CI runs that). `--rehearse-cpu`
runs every section on the CPU instead, small, with the out-of-memory error simulated (no CPU
allocation fails), so the script's own code is exercised here; those are not GPU figures.
Exit status: 0 when every section ran (whatever it measured), 1 when a section crashed.

    python benchmarks/gpu.py [--sections device,sync,oom,lru,fp16,sweep] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable, cast

if TYPE_CHECKING:
    from replicate_jupyter.runners.local import LocalRunner

__all__ = ["main", "SKIP_LINE"]

ROOT = pathlib.Path(__file__).resolve().parent.parent
SKIP_LINE = "skipped: no CUDA device"
MB = 1 << 20
SECTIONS = ("device", "sync", "oom", "lru", "fp16", "sweep")

DEVICE = "cuda"  # "cpu" under --rehearse-cpu; read by the predictors below when they run
SIZES: dict[str, Any] = {"side": 4096, "matmuls": 50, "hold": 256 * MB, "oom_cap": 2048 * MB, "steps": 20,
                         "rounds": 3, "fp16_sides": (64, 512)}
REHEARSAL_SIZES: dict[str, Any] = {"side": 256, "matmuls": 10, "hold": 16 * MB, "oom_cap": 128 * MB, "steps": 4,
                                   "rounds": 1, "fp16_sides": (64,)}


# ----- predictors (plain Cog-shaped classes, run by the local runner in this process) ---------
class Where:
    """Where a predictor that asks the package for the best device ends up computing."""

    def setup(self) -> None:
        import torch

        from replicate_jupyter import progress

        self.weight = torch.ones(256, 256, device=progress.device())

    def predict(self) -> str:
        return str(self.weight.device)


class Queued:
    """`n` matmuls queued on the device; returns without reading them back, so they are still
    running when predict returns: only a synchronize before the clock counts them."""

    def setup(self) -> None:
        import torch

        side = SIZES["side"]
        self.a = torch.randn(side, side, device=DEVICE) / side ** 0.5

    def predict(self, n: int = 10) -> str:
        self.last = queued_work(self.a, n)
        return "queued"


def queued_work(a: Any, n: int) -> Any:
    x = a
    for _ in range(n):
        x = x @ a
    return x


class Filler:
    """A warm model holding 60% of the capped device memory."""

    alive = False

    def setup(self) -> None:
        import torch

        self.block: Any = torch.ones(int(SIZES["oom_cap"] * 0.6), dtype=torch.uint8, device=DEVICE)
        type(self).alive = True

    def teardown(self) -> None:
        self.block = None
        type(self).alive = False

    def predict(self) -> str:
        return "filled"


class Hungry:
    """Needs 60% of the capped device memory at once: more than is left while Filler is warm."""

    def predict(self) -> str:
        import torch

        if DEVICE == "cpu" and Filler.alive:  # rehearsal: a CPU allocation would not fail
            raise torch.OutOfMemoryError("simulated out of memory (CPU rehearsal)")
        x = torch.ones(int(SIZES["oom_cap"] * 0.6), dtype=torch.uint8, device=DEVICE)
        return f"allocated {x.numel() / MB:.0f} MB"


class Holder:
    """A warm model holding SIZES['hold'] bytes of weights on the device."""

    def setup(self) -> None:
        import torch

        self.weights = torch.zeros(SIZES["hold"], dtype=torch.uint8, device=DEVICE)

    def predict(self) -> str:
        return type(self).__name__


class HolderA(Holder): pass  # noqa: E701  (three distinct models of one size)
class HolderB(Holder): pass  # noqa: E701
class HolderC(Holder): pass  # noqa: E701


# ----- reporting -------------------------------------------------------------------------------
class Report:
    """Figures as printed lines (value, target, PASS/FAIL) and as a dict for --json."""

    def __init__(self) -> None:
        self.figures: dict[str, dict[str, Any]] = {}
        self.crashed: list[str] = []

    def figure(self, key: str, value: Any, target: str, ok: bool | None = None, unit: str = "") -> None:
        shown = (f"{value:.4g}" if isinstance(value, float) else str(value)) + unit
        verdict = "" if ok is None else ("PASS" if ok else "FAIL")
        print(f"  {key:<34} {shown:<12} (target {target}) {verdict}".rstrip(), flush=True)
        self.figures[key] = {"value": value, "target": target, "ok": ok}


def run(ref: Any, input: dict | None = None) -> Any:
    """One prediction through the public API, waited for; a failure raises with its error."""
    import replicate_jupyter as rj

    p = rj.predictions.create(ref, input or {}).wait()
    if p.status != "succeeded":
        raise RuntimeError(f"{p.model}: {p.status}: {p.error}\n{p.logs}")
    return p


# ----- sections --------------------------------------------------------------------------------
def section_device(r: Report) -> None:
    import torch

    import replicate_jupyter as rj
    from replicate_jupyter.runners import devices

    rj.backend("local")
    where = run(Where)
    shapes = run("local/shapes", {"prompt": "a red circle", "num_inference_steps": 2, "seed": 0})
    want_sku = devices.sku_for_name(torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu")
    r.figure("device.predictor_device", where.output, f"{DEVICE}…", where.output.startswith(DEVICE))
    r.figure("device.name", devices.device_name(), "the CUDA device's name" if DEVICE == "cuda" else "cpu")
    r.figure("device.hardware(local/shapes)", shapes.metrics.get("hardware"), want_sku,
             shapes.metrics.get("hardware") == want_sku == where.metrics.get("hardware"))


def section_sync(r: Report) -> None:
    import replicate_jupyter as rj
    from replicate_jupyter.runners import devices

    rj.backend("local")
    n = SIZES["matmuls"]
    run(Queued, {"n": 2})  # setup and the first cuBLAS call, out of the measurement
    a = Queued()
    a.setup()
    queued_work(a.a, 2)
    devices.synchronize()
    predict_times, synced, unsynced = [], [], []
    for _ in range(3):
        predict_times.append(run(Queued, {"n": n}).metrics["predict_time"])
        devices.synchronize()
        t0 = time.perf_counter()
        queued_work(a.a, n)
        unsynced.append(time.perf_counter() - t0)
        devices.synchronize()
        synced.append(time.perf_counter() - t0)
    pt, sw, uw = (statistics.median(v) for v in (predict_times, synced, unsynced))
    r.figure("sync.predict_time", pt, "≈ synchronized wall", unit=" s")
    r.figure("sync.synchronized_wall", sw, f"{n} matmuls of {SIZES['side']}²", unit=" s")
    r.figure("sync.unsynchronized_wall", uw, "< synchronized (work still queued)", unit=" s")
    r.figure("sync.predict_time/synchronized", pt / sw, "0.9–1.2 (+20 ms)", 0.9 * sw <= pt <= 1.2 * sw + 0.02)


def section_oom(r: Report) -> None:
    import torch

    import replicate_jupyter as rj
    from replicate_jupyter.runners import devices

    cap = SIZES["oom_cap"]
    if DEVICE == "cuda":
        free, total = torch.cuda.mem_get_info()
        cap = SIZES["oom_cap"] = int(min(cap, free * 0.5))
    rj.backend("local", memory_budget=cap)  # earlier sections' models released
    runner = cast("LocalRunner", rj.session.runner())
    devices.free_device_memory()
    if DEVICE == "cuda":
        torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_reserved() + cap) / total)
    try:
        run(Filler)
        evicted_before = len(runner.evictions)
        p = rj.predictions.create(Hungry).wait()  # a failed retry is a FAIL figure, not a crash
        retried = "out of device memory" in (p.logs or "")
        r.figure("oom.device_cap", cap / MB, "the process's device memory", unit=" MB")
        r.figure("oom.first_attempt_oom", retried, "True (a real CUDA OOM)" if DEVICE == "cuda" else "True (simulated)",
                 retried)
        r.figure("oom.warm_evicted", len(runner.evictions) - evicted_before, "1 (Filler)",
                 len(runner.evictions) - evicted_before == 1)
        r.figure("oom.retry_status", p.status, "succeeded", p.status == "succeeded")
        r.figure("oom.predict_time", p.metrics["predict_time"], "both attempts", unit=" s")
    finally:
        if DEVICE == "cuda":
            torch.cuda.set_per_process_memory_fraction(1.0)


def section_lru(r: Report) -> None:
    import replicate_jupyter as rj
    from replicate_jupyter.runners import devices

    hold = SIZES["hold"]
    rj.backend("local", memory_budget=int(hold * 2.5))
    runner = cast("LocalRunner", rj.session.runner())
    runner.evict()
    devices.free_device_memory()
    base = devices.memory_in_use()
    for cls in (HolderA, HolderB, HolderC):
        run(cls)
    warm_after = [k.split(":")[-1] for k in runner.warm]
    evicted = list(runner.evictions)
    r.figure("lru.warm_after_3", len(warm_after), "2 (budget = 2.5 models)", len(warm_after) == 2)
    r.figure("lru.evicted", len(evicted), "1 (the oldest, HolderA)", len(evicted) == 1)
    if base is not None:
        devices.free_device_memory()
        held = (devices.memory_in_use() or 0) - base
        r.figure("lru.device_memory_held", held / MB, f"≤ {2.5 * hold / MB:.0f} MB (2 models)", held <= 2.5 * hold,
                 unit=" MB")
    again = run(HolderA)
    cold = "setup_time" in again.metrics
    r.figure("lru.oldest_again_is_cold", cold, "True (set up again)", cold)
    r.figure("lru.evicted_after_rerun", len(runner.evictions), "2 (HolderB next)", len(runner.evictions) == 2)


def section_fp16(r: Report, workdir: pathlib.Path) -> None:
    import numpy as np
    import torch
    from PIL import Image

    import replicate_jupyter as rj

    sys.path.insert(0, str(ROOT / "tests"))
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging
    from tiny_pipelines import build_tiny_sd, populate_hf_cache
    from transformers.utils import logging as transformers_logging

    for logging in (diffusers_logging, transformers_logging):
        logging.disable_progress_bar()
        logging.set_verbosity_error()
    folder = build_tiny_sd(workdir / "sd")
    pipe = StableDiffusionPipeline.from_pretrained(folder, **{_dtype_keyword(): torch.float16})
    pipe.save_pretrained(folder, variant="fp16")  # the variant a CUDA load picks
    del pipe
    populate_hf_cache(os.environ["HF_HUB_CACHE"], "tiny/sd-gpu-bench", folder)
    rj.backend("local")
    want = "float16" if DEVICE == "cuda" else "float32"
    for side in SIZES["fp16_sides"]:
        p = run("hf:tiny/sd-gpu-bench", {"prompt": "a red circle", "width": side, "height": side,
                                         "num_inference_steps": 4, "seed": 0})
        img = np.asarray(Image.open(p.output[0]).convert("RGB"), dtype=np.float32)
        if side == 64:
            r.figure("fp16.loaded_dtype", want if f"in {want}" in p.logs else p.logs.strip().splitlines()[-1:],
                     want, f"in {want}" in p.logs)
            r.figure("fp16.setup_time", p.metrics.get("setup_time"), "cold start", unit=" s")
        r.figure(f"fp16.predict_time_{side}px", p.metrics["predict_time"], "4 steps", unit=" s")
        r.figure(f"fp16.image_{side}px_std", float(img.std()), "> 0 (fp16 NaNs decode to black)", bool(img.std() > 0))


def _dtype_keyword() -> str:
    """diffusers ≥ 0.40 names the keyword `dtype` (and warns on `torch_dtype`), older ones `torch_dtype`."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def section_sweep(r: Report) -> None:
    import replicate_jupyter as rj

    rj.backend("local")
    steps = SIZES["steps"]
    prompts = [f"a {c} {s} on a white background" for c in ("red", "blue") for s in ("circle", "square", "star", "ring")]
    one = {"prompt": prompts[0], "num_inference_steps": steps, "seed": 0}
    run("local/shapes", one)  # warm
    singles, sweeps = [], []
    for _ in range(SIZES["rounds"]):
        t0 = time.perf_counter()
        run("local/shapes", one)
        singles.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ps = [rj.predictions.create("local/shapes", dict(one, prompt=text)) for text in prompts]
        for p in ps:
            if p.wait().status != "succeeded":
                raise RuntimeError(f"sweep: {p.status}: {p.error}")
        sweeps.append(time.perf_counter() - t0)
    s, w = statistics.median(singles), statistics.median(sweeps)
    r.figure("sweep.one_prediction", s, f"local/shapes, {steps} steps", unit=" s")
    r.figure("sweep.eight_prompts", w, "8 created at once", unit=" s")
    r.figure("sweep.ratio", w / s, "≤ 2.0 on a GPU", w / s <= 2.0)
    # the local runner batches predictions that arrive together (runners/batching.py): one batch of 8
    batches = {(p.metrics.get("batch_id"), p.metrics.get("batch_size")) for p in ps}
    r.figure("sweep.batched", max(size or 1 for _id, size in batches), "8: one forward pass for all",
             len(batches) == 1 and next(iter(batches))[1] == len(prompts))
    from replicate_jupyter.session import session

    shares = sum(p.metrics["predict_time"] for p in ps)
    device = {h[0]: h[2] for h in session.runner("local")._batcher.history}.get(ps[0].metrics.get("batch_id"))
    r.figure("sweep.ledger_device_time", shares, "the members' shares sum to the batch's device time", unit=" s",
             ok=device is not None and abs(shares - device) < 1e-4)


# ----- main ------------------------------------------------------------------------------------
def cuda_missing() -> str | None:
    """Why there is no CUDA device to measure (None when there is one)."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__}: torch.cuda.is_available() is False"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections; 0 when all ran, 1 when one crashed (a FAIL figure is still 0)."""
    global DEVICE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated: " + ",".join(SECTIONS))
    ap.add_argument("--rehearse-cpu", action="store_true", help="run every section small on the CPU (not GPU figures)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="rj-gpu-bench-"))
    # a hub cache of our own, offline, before anything imports huggingface_hub
    os.environ.update(HF_HUB_CACHE=str(workdir / "hub"), HF_HUB_OFFLINE="1", HF_HOME=str(workdir / "hf-home"))
    if args.rehearse_cpu:
        DEVICE = "cpu"
        SIZES.update(REHEARSAL_SIZES)
        print("rehearsal on the CPU: the script's code paths, small, out-of-memory simulated (not GPU figures)")
    else:
        why = cuda_missing()
        if why is not None:
            print(f"{SKIP_LINE} ({why})")
            return 0
    import torch

    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device: {name}", flush=True)
    report = Report()
    runners: dict[str, Callable[[], None]] = {
        "device": lambda: section_device(report), "sync": lambda: section_sync(report),
        "oom": lambda: section_oom(report), "lru": lambda: section_lru(report),
        "fp16": lambda: section_fp16(report, workdir), "sweep": lambda: section_sweep(report),
    }
    for section in chosen:
        print(f"[{section}]", flush=True)
        t0 = time.perf_counter()
        try:
            runners[section]()
        except Exception:
            report.crashed.append(section)
            print(f"  CRASHED: {section}\n" + traceback.format_exc(), flush=True)
        print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"device": name, "rehearsal": args.rehearse_cpu,
                                                       "figures": report.figures, "crashed": report.crashed},
                                                      indent=1, default=str))
    return 1 if report.crashed else 0


if __name__ == "__main__":
    sys.exit(main())
