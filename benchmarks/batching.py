"""Batched against one-by-one on `local`: an 8-prompt sweep in one forward pass (issue 16).

In one run, each side interleaved with the other so machine noise hits both alike, judged on
the median of per-round ratios:
- local/shapes, 8 prompts at its defaults (20 steps): 8 created at once (the local runner
  batches them) over 8 run one by one; target ≤ 0.65 (`num_outputs: 8` in one prediction, the
  floor, is printed beside it);
- a tiny `hf:` diffusers pipeline (tests/tiny_pipelines.py, built offline, random weights,
  64×64, 10 steps), the same 8-prompt case; its ratio is printed (a 0.2 s pipeline is mostly
  per-call overhead, so it gains less than a real one);
- local/tiny-lm, 8 prompts of 64 tokens, the same; printed;
- workers: local/shapes served by `replicate-jupyter serve` twice on this machine, one batching
  (the default) and one `--no-batching`; 8 prompts sent at once to the first over 8 sent one by
  one to the second (each waited for, as a plain Cog worker runs them); printed.
And the outputs for each seed match batched and alone: images within 2/255 per pixel (float
reduction order may differ in a batch), texts equal.

    python benchmarks/batching.py [--rounds 3] [--n 8] [--no-workers]
"""
from __future__ import annotations

import argparse
import io
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
COLOURS, SHAPES = ("red", "blue", "green", "purple"), ("circle", "square", "star", "ring")


def prompts(n: int) -> list[str]:
    return [f"a {COLOURS[i % 4]} {SHAPES[(i // 4 + i) % 4]} on a white background" for i in range(n)]


def one_by_one(model: str, inputs: list[dict]) -> tuple[float, list]:
    """Each waited for before the next, batching off (a lone prediction would otherwise wait the
    batch window for company: the baseline is the fastest one-by-one)."""
    import replicate_jupyter as rj
    from replicate_jupyter.session import session

    runner = session.runner("local")
    runner.batching = False
    try:
        t0 = time.perf_counter()
        ps = [rj.predictions.create(model, inp).wait() for inp in inputs]
        took = time.perf_counter() - t0
    finally:
        runner.batching = True
    _check(ps, batched=False)
    return took, ps


def at_once(model: str, inputs: list[dict]) -> tuple[float, list]:
    import replicate_jupyter as rj

    t0 = time.perf_counter()
    ps = [rj.predictions.create(model, inp) for inp in inputs]
    for p in ps:
        p.wait()
    took = time.perf_counter() - t0
    _check(ps, batched=True)
    return took, ps


def _check(ps: list, batched: bool) -> None:
    bad = [p for p in ps if p.status != "succeeded"]
    if bad:
        raise RuntimeError(f"{bad[0].model}: {bad[0].status}: {bad[0].error}")
    sizes = {p.metrics.get("batch_size") for p in ps}
    if batched and sizes != {len(ps)}:
        print(f"  note: batch sizes {sorted(map(str, sizes))} (expected one batch of {len(ps)})")


def _pixels(f):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(f.read())).convert("RGB")).astype(int)


def max_pixel_difference(alone: list, batched: list) -> int:
    worst = 0
    for a, b in zip(alone, batched):
        for fa, fb in zip(a.output, b.output):
            worst = max(worst, int(abs(_pixels(fa) - _pixels(fb)).max()))
    return worst


def compare(name: str, model: str, inputs: list[dict], rounds: int, floor: dict | None = None) -> dict:
    """Interleaved rounds of one-by-one and at-once; the median per-round ratio."""
    import replicate_jupyter as rj

    rj.predictions.create(model, inputs[0]).wait()  # setup once: both sides run warm
    seq, par, ratios, floors = [], [], [], []
    same = None
    for r in range(rounds):
        if r % 2 == 0:
            s, alone = one_by_one(model, inputs)
            b, together = at_once(model, inputs)
        else:
            b, together = at_once(model, inputs)
            s, alone = one_by_one(model, inputs)
        seq.append(s)
        par.append(b)
        ratios.append(b / s)
        if floor is not None:
            t0 = time.perf_counter()
            rj.predictions.create(model, floor).wait()
            floors.append(time.perf_counter() - t0)
        if r == 0:
            if isinstance(alone[0].output, list) and alone[0].output and hasattr(alone[0].output[0], "read"):
                same = max_pixel_difference(alone, together)
            else:
                same = sum(a.text != b.text for a, b in zip(alone, together))
    out = {"one_by_one_s": statistics.median(seq), "batched_s": statistics.median(par),
           "ratio": statistics.median(ratios), "same": same, "batch_size": together[0].metrics.get("batch_size")}
    if floors:
        out["floor_s"] = statistics.median(floors)
    shares = sum(p.metrics["predict_time"] for p in together)
    out["ledger_s"], last_wall = shares, par[-1]
    print(f"{name}: {len(inputs)} one by one {out['one_by_one_s']:.2f} s, batched {out['batched_s']:.2f} s "
          f"(batch of {out['batch_size']}), ratio {out['ratio']:.2f} (rounds: {', '.join(f'{x:.2f}' for x in ratios)})"
          + (f"; num_outputs {len(inputs)} in one prediction {out['floor_s']:.2f} s" if floors else ""))
    print(f"  last batch: the members' predict_time sums to {shares:.3f} s of device time (wall {last_wall:.2f} s)")
    return out


def tiny_sd() -> str:
    """Build a tiny diffusers pipeline offline and lay it out as an HF cache entry; its hf: ref."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_pipelines import build_tiny_sd, populate_hf_cache

    root = pathlib.Path(tempfile.mkdtemp(prefix="rj-bench-batching-"))
    populate_hf_cache(root / "hub", "tiny/sd-bench", build_tiny_sd(root / "sd"))
    os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(root / "hub"))
    return "hf:tiny/sd-bench"


def _serve(*args: str) -> tuple[Any, str]:
    """A `replicate-jupyter serve` process and its URL, once it says it is ready."""
    proc = subprocess.Popen([sys.executable, "-m", "replicate_jupyter.serve.cli", "serve", *args, "--port", "0",
                             "--exit-with-stdin"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r"ready at (http://\S+) ", line)
        if m:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep its pipe drained
            return proc, m.group(1)
    raise RuntimeError(f"serve {' '.join(args)} did not start (exit {proc.wait()})")


def workers_case(rounds: int, n: int) -> dict:
    """An 8-prompt sweep on a batching worker against one by one on a plain one (same model, same machine)."""
    from replicate_jupyter import api
    from replicate_jupyter.runners.workers.runner import pool

    servers = [_serve("local/shapes"), _serve("local/shapes", "--no-batching", "--name", "local/shapes-plain")]
    try:
        for _proc, url in servers:
            pool().add(url)
        inputs = [{"prompt": t, "seed": i} for i, t in enumerate(prompts(n))]
        for model in ("local/shapes", "local/shapes-plain"):
            api.create(model, inputs[0], on="workers").wait()  # warm connections on both sides
        seq, par, ratios, same, size = [], [], [], None, None
        for r in range(rounds):
            order = ("seq", "par") if r % 2 == 0 else ("par", "seq")
            for side in order:
                t0 = time.perf_counter()
                if side == "seq":
                    alone = [api.create("local/shapes-plain", inp, on="workers").wait() for inp in inputs]
                    seq.append(time.perf_counter() - t0)
                else:
                    together = [api.create("local/shapes", inp, on="workers") for inp in inputs]
                    for p in together:
                        p.wait()
                    par.append(time.perf_counter() - t0)
            ratios.append(par[-1] / seq[-1])
            _check(alone, batched=False)
            _check(together, batched=True)
            size = sorted({p.metrics.get("batch_size") or 1 for p in together})
            if same is None:
                same = max_pixel_difference(alone, together)
    finally:
        for proc, url in servers:
            try:
                pool().remove(url)
            except KeyError:
                pass
            proc.terminate()
            proc.wait(20)
    out = {"one_by_one_s": statistics.median(seq), "batched_s": statistics.median(par),
           "ratio": statistics.median(ratios), "same": same, "batch_size": size}
    print(f"workers (serve local/shapes): {n} one by one {out['one_by_one_s']:.2f} s, batched {out['batched_s']:.2f} s "
          f"(batch sizes {size}), ratio {out['ratio']:.2f} (rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
    return out


def main(rounds: int = 3, n: int = 8, workers: bool = True) -> dict:
    import replicate_jupyter as rj

    rj.backend("local")
    results = {}
    texts = prompts(n)
    shapes = [{"prompt": t, "seed": i} for i, t in enumerate(texts)]
    results["shapes"] = compare("local/shapes", "local/shapes", shapes, rounds,
                                floor={"prompt": texts[0], "seed": 0, "num_outputs": n})
    sd = tiny_sd()
    results["hf"] = compare("hf: tiny diffusers", sd, [{"prompt": t, "seed": i, "num_inference_steps": 10, "width": 64,
                                                         "height": 64, "output_format": "png"}
                                                        for i, t in enumerate(texts)], rounds)
    lm = [{"prompt": t.split(" on ")[0], "seed": i, "max_new_tokens": 64} for i, t in enumerate(texts)]
    results["tiny_lm"] = compare("local/tiny-lm", "local/tiny-lm", lm, rounds)
    if workers:
        results["workers"] = workers_case(rounds, n)
    s, h, t = results["shapes"], results["hf"], results["tiny_lm"]
    print()
    print(f"shapes batched/one-by-one   {s['ratio']:.2f}  (target ≤ 0.65) {'PASS' if s['ratio'] <= 0.65 else 'FAIL'}")
    print(f"hf diffusers batched/one    {h['ratio']:.2f}")
    print(f"tiny-lm batched/one         {t['ratio']:.2f}")
    if workers:
        w = results["workers"]
        print(f"workers batched/one         {w['ratio']:.2f}  (same seed, same image: max |Δ| {w['same']}/255)")
    print(f"same seed, same image       shapes max |Δ| {s['same']}/255, hf {h['same']}/255 (target ≤ 2) "
          f"{'PASS' if max(s['same'], h['same']) <= 2 else 'FAIL'}")
    print(f"same seed, same text        tiny-lm: {t['same']} of {n} differ (target 0) {'PASS' if t['same'] == 0 else 'FAIL'}")
    return results


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--no-workers", action="store_true", help="skip the workers case (two serve processes)")
    a = ap.parse_args()
    main(a.rounds, a.n, workers=not a.no_workers)
