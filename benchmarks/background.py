"""Background predictions against foreground ones on `local`, local/shapes at its defaults.

Two ratios, in one run, both sides interleaved so machine noise hits them alike, each judged on
the median of its per-pair (per-round) ratios:
- one prediction in the background (`predictions.create(...).wait()`) over one in the
  foreground (`rj.run`): target ≈ 1.0 (it was 2.3× when background predictions ran outside the
  model's own thread, with autograd on: setup's `torch.set_grad_enabled(False)` did not hold);
- 8 predictions created at once (then all waited for) over 8 run one by one: target ≤ 1.0
  (it was 2.4×: eight threads contending for one model).

    python benchmarks/background.py [--rounds 3] [--n 8] [--pairs 4]
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


def main(rounds: int = 3, n: int = 8, pairs: int = 4) -> dict:
    inp = {"seed": 0}  # the predictor's defaults otherwise
    rj.run(MODEL, inp)  # setup once: both sides run warm
    fg, bg, seq, par, one_ratios, many_ratios = [], [], [], [], [], []
    for r in range(rounds):
        for k in range(pairs):  # fg/bg pairs, alternating which goes first
            if (r + k) % 2 == 0:
                f, b = one_foreground(inp), one_background(inp)
            else:
                b, f = one_background(inp), one_foreground(inp)
            fg.append(f)
            bg.append(b)
            one_ratios.append(b / f)
        if r % 2 == 0:
            s, c = one_by_one(inp, n), at_once(inp, n)
        else:
            c, s = at_once(inp, n), one_by_one(inp, n)
        seq.append(s)
        par.append(c)
        many_ratios.append(c / s)
    one, many = statistics.median(one_ratios), statistics.median(many_ratios)
    print(f"one foreground        : {statistics.median(fg):.3f} s (median of {len(fg)})")
    print(f"one background        : {statistics.median(bg):.3f} s")
    print(f"background/foreground : {one:.3f}   (median of per-pair ratios; target ~1.0)")
    print(f"{n} one by one          : {statistics.median(seq):.3f} s (median of {rounds})")
    print(f"{n} created at once     : {statistics.median(par):.3f} s")
    print(f"at once/one by one    : {many:.3f}   (median of per-round ratios; target <= 1.0)")
    ok = one <= 1.15 and many <= 1.05
    print("PASS" if ok else "FAIL")
    return {"bg_fg": one, "par_seq": many, "foreground_s": statistics.median(fg), "background_s": statistics.median(bg),
            "one_by_one_s": statistics.median(seq), "at_once_s": statistics.median(par)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--pairs", type=int, default=4, help="foreground/background pairs per round")
    args = ap.parse_args()
    main(args.rounds, args.n, args.pairs)
