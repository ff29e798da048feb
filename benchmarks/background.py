"""Background predictions against foreground ones on `local`, local/shapes at its defaults.

Two ratios, in one run, both sides interleaved round by round so machine noise hits them alike:
- one prediction in the background (`predictions.create(...).wait()`) over one in the
  foreground (`rj.run`): target ≈ 1.0 (it was 2.3× when background predictions ran outside the
  model's own thread, with autograd on: setup's `torch.set_grad_enabled(False)` did not hold);
- 8 predictions created at once (then all waited for) over 8 run one by one: target ≤ 1.0
  (it was 2.4×: eight threads contending for one model).

    python benchmarks/background.py [--rounds 3] [--n 8]
"""
from __future__ import annotations

import argparse
import statistics
import time

import replicate_jupyter as rj

MODEL = "local/shapes"


def one_foreground(inp: dict) -> float:
    t = time.perf_counter()
    rj.run(MODEL, inp)
    return time.perf_counter() - t


def one_background(inp: dict) -> float:
    t = time.perf_counter()
    p = rj.predictions.create(MODEL, inp).wait()
    assert p.status == "succeeded", (p.status, p.error)
    return time.perf_counter() - t


def one_by_one(inp: dict, n: int) -> float:
    t = time.perf_counter()
    for i in range(n):
        rj.run(MODEL, dict(inp, seed=i))
    return time.perf_counter() - t


def at_once(inp: dict, n: int) -> float:
    t = time.perf_counter()
    ps = [rj.predictions.create(MODEL, dict(inp, seed=i)) for i in range(n)]
    for p in ps:
        p.wait()
        assert p.status == "succeeded", (p.status, p.error)
    return time.perf_counter() - t


def main(rounds: int = 3, n: int = 8) -> dict:
    inp = {"seed": 0}  # the predictor's defaults otherwise
    rj.run(MODEL, inp)  # setup once: both sides run warm
    fg, bg, seq, par = [], [], [], []
    for r in range(rounds):
        first, second = (one_foreground, one_background) if r % 2 == 0 else (one_background, one_foreground)
        a, b = first(inp), second(inp)
        (fg if first is one_foreground else bg).append(a)
        (bg if first is one_foreground else fg).append(b)
        if r % 2 == 0:
            seq.append(one_by_one(inp, n))
            par.append(at_once(inp, n))
        else:
            par.append(at_once(inp, n))
            seq.append(one_by_one(inp, n))
    f, b = statistics.median(fg), statistics.median(bg)
    s, c = statistics.median(seq), statistics.median(par)
    print(f"one foreground        : {f:.3f} s (median of {rounds})")
    print(f"one background        : {b:.3f} s")
    print(f"background/foreground : {b / f:.3f}   (target ~1.0)")
    print(f"{n} one by one          : {s:.3f} s")
    print(f"{n} created at once     : {c:.3f} s")
    print(f"at once/one by one    : {c / s:.3f}   (target <= 1.0)")
    ok = b / f <= 1.15 and c / s <= 1.05
    print("PASS" if ok else "FAIL")
    return {"foreground_s": f, "background_s": b, "bg_fg": b / f, "one_by_one_s": s, "at_once_s": c, "par_seq": c / s}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=8)
    args = ap.parse_args()
    main(args.rounds, args.n)
