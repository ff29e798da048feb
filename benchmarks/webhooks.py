"""What a webhook costs a local prediction: the same prediction with a webhook to a consumer that
answers in 200 ms, and without, interleaved, median of N each (target: ≤ 1 ms more).

Two predictions: a step loop like a diffusion sampler (tests/predictors/steps.py: progress and a
preview per step, 20 steps of 5 ms) and a token stream (tokens.py: 200 tokens 0.5 ms apart, so
the listener runs 400 times and an `output` delivery is due every 500 ms).

The consumer runs in its own process, niced (it stands for a server elsewhere, so on a small
machine its CPU is not counted against the kernel), so what is measured is the kernel's side:
attach, the listener in the prediction's thread, the delivery thread sharing the GIL. Runs start
on a fixed cadence (`--period`), after the deliveries of the one before have finished: every run,
with a webhook or not, starts from the same idle machine and none overlaps another's deliveries.

On a machine shared with other work the wall-clock medians move by a millisecond from run to
run, so two steadier figures are printed beside the headline: the median of the paired
differences (each run with a webhook minus the run without next to it) and the kernel's extra
CPU time during the run (the process's, every thread: listener, delivery thread, GIL hand-offs).

    .venv/bin/python benchmarks/webhooks.py [--runs 50] [--only steps|tokens]
"""
from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
PRED = ROOT / "tests" / "predictors"
CASES = {
    "steps": (f"{PRED / 'steps.py'}:Predictor", {"steps": 20, "delay": 0.005}, "20 steps of 5 ms with previews"),
    "tokens": (f"{PRED / 'tokens.py'}:Predictor", {"n": 200, "delay": 0.0005}, "200 tokens 0.5 ms apart"),
}

CONSUMER = r"""
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        time.sleep(float(sys.argv[1]))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass

s = ThreadingHTTPServer(("127.0.0.1", 0), H); s.daemon_threads = True
print(s.server_address[1], flush=True)
s.serve_forever()
"""


Run = tuple[float, float]  # (wall seconds, process CPU seconds) of one prediction


def measure(ref: str, inputs: dict, url: str, runs: int, period: float) -> tuple[list[Run], list[Run]]:
    from replicate_jupyter import api, webhooks

    slot = [time.monotonic()]

    def once(hook: bool) -> Run:
        slot[0] += period
        time.sleep(max(0.0, slot[0] - time.monotonic()))
        t, cpu = time.perf_counter(), time.process_time()
        p = api.prepare(ref, inputs, on="local")
        d = webhooks.attach(p, url) if hook else None
        api.execute(p)
        took = time.perf_counter() - t, time.process_time() - cpu
        assert p.status == "succeeded", p.error
        if d is not None:
            assert d.wait(30) and not d.failures, d.failures
        return took

    for hook in (False, True, False, True):  # warm: predictor set up, delivery thread and connection made
        once(hook)
    with_hook, without = [], []
    for i in range(runs):
        for hook in ((True, False) if i % 2 else (False, True)):
            (with_hook if hook else without).append(once(hook))
    return with_hook, without


def report(name: str, what: str, with_hook: list[Run], without: list[Run]) -> str:
    """The headline (difference of the medians) and the two steadier figures, in ms."""
    med = statistics.median
    mw, mo = med(w for w, _ in with_hook), med(w for w, _ in without)
    paired = med(a[0] - b[0] for a, b in zip(with_hook, without))
    cpu = med(c for _, c in with_hook) - med(c for _, c in without)
    return (f"  {name} ({what}): without {mo * 1000:.2f} ms, with webhook {mw * 1000:.2f} ms, "
            f"difference {1000 * (mw - mo):+.3f} ms (target ≤ 1 ms); paired median {1000 * paired:+.3f} ms; "
            f"kernel CPU {1000 * cpu:+.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--only", choices=sorted(CASES))
    ap.add_argument("--answer", type=float, default=0.2, help="the consumer's answer time, s")
    ap.add_argument("--period", type=float, default=0.7, help="seconds from one run's start to the next's")
    args = ap.parse_args()

    consumer = subprocess.Popen([sys.executable, "-c", CONSUMER, str(args.answer)], stdout=subprocess.PIPE, text=True,
                                preexec_fn=lambda: os.nice(19))
    try:
        url = f"http://127.0.0.1:{consumer.stdout.readline().strip()}/hook"
        print(f"consumer answers in {args.answer * 1000:g} ms; {args.runs} runs each, interleaved; load {os.getloadavg()[0]:.1f}")
        for name, (ref, inputs, what) in CASES.items():
            if args.only and name != args.only:
                continue
            with_hook, without = measure(ref, inputs, url, args.runs, args.period)
            print(report(name, what, with_hook, without))
        print(f"load at the end {os.getloadavg()[0]:.1f}")
    finally:
        consumer.terminate()
        consumer.wait(5)


if __name__ == "__main__":
    main()
