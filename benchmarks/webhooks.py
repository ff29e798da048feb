"""What a webhook costs a local prediction: the same prediction with a webhook to a consumer that
answers in 200 ms, and without, interleaved, median of N each (target: ≤ 1 ms more).

The consumer runs in its own process (as a user's server would), so what is measured is the
kernel's side: attach, the listener in the prediction's thread, the delivery thread sharing the
GIL. Runs start on a fixed cadence (`--period`), after the deliveries of the one before have
finished: every run, with a webhook or not, starts from the same idle machine, and no run
overlaps another's deliveries.

    .venv/bin/python benchmarks/webhooks.py [--runs 50] [--tokens 200] [--delay 0.0005]
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
TOKENS = f"{ROOT / 'tests' / 'predictors' / 'tokens.py'}:Predictor"

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--delay", type=float, default=0.0005, help="seconds between tokens")
    ap.add_argument("--answer", type=float, default=0.2, help="the consumer's answer time, s")
    ap.add_argument("--period", type=float, default=0.8, help="seconds from one run's start to the next's")
    args = ap.parse_args()

    from replicate_jupyter import api, webhooks

    # niced: it stands for a server elsewhere, so on a small machine its CPU should not be
    # counted against the kernel (it still runs, answering every delivery)
    consumer = subprocess.Popen([sys.executable, "-c", CONSUMER, str(args.answer)], stdout=subprocess.PIPE, text=True,
                                preexec_fn=lambda: os.nice(19))
    try:
        url = f"http://127.0.0.1:{consumer.stdout.readline().strip()}/hook"
        inputs = {"n": args.tokens, "delay": args.delay}

        slot = [time.monotonic()]

        def once(hook: bool) -> float:
            slot[0] += args.period
            time.sleep(max(0.0, slot[0] - time.monotonic()))
            t = time.perf_counter()
            p = api.prepare(TOKENS, inputs, on="local")
            d = webhooks.attach(p, url) if hook else None
            api.execute(p)
            took = time.perf_counter() - t
            assert p.status == "succeeded", p.error
            if d is not None:
                assert d.wait(30) and not d.failures, d.failures
            return took

        for hook in (False, True, False, True):  # warm: predictor set up, delivery thread and client made
            once(hook)
        with_hook, without, paired = [], [], []
        for i in range(args.runs):
            order = (True, False) if i % 2 else (False, True)
            got = {hook: once(hook) for hook in order}
            with_hook.append(got[True])
            without.append(got[False])
            paired.append(got[True] - got[False])
        mw, mo = statistics.median(with_hook), statistics.median(without)
        print(f"local {args.tokens} tokens, {args.delay * 1000:g} ms apart; consumer answers in {args.answer * 1000:g} ms; "
              f"{args.runs} runs each, interleaved")
        print(f"  without webhook  median {mo * 1000:8.2f} ms")
        print(f"  with webhook     median {mw * 1000:8.2f} ms")
        print(f"  difference of medians {1000 * (mw - mo):+.3f} ms; median paired difference "
              f"{1000 * statistics.median(paired):+.3f} ms (target ≤ 1 ms)")
    finally:
        consumer.terminate()
        consumer.wait(5)


if __name__ == "__main__":
    main()
