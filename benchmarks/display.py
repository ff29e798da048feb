"""Display throttling and overhead, measured in a real kernel.

    .venv/bin/python benchmarks/display.py

1. A predictor streams 2,000 tokens as fast as it can: how many IOPub display messages the
   `%%replicate` cell sends (target: ≤ 10 updates/s plus the final one; a run shorter than one
   update interval is drawn once, final), and whether the final text is exact.
2. A predictor emits 50 step previews in 1 s: display messages and distinct previews shown
   (target: previews ≤ 4/s).
3. Time of the magic with its live display against `rj.run` with no display, same predictor,
   in the same warm kernel, interleaved (the order swaps every round, since these machines
   are noisy and the first of a pair tends to run colder); the median of the per-round ratios
   is judged (target ≤ 1.10), the ratio of the medians printed beside it.
"""
from __future__ import annotations

import json
import os
import pathlib
import statistics
import sys

from jupyter_client.manager import start_new_kernel

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOKENS = f"{ROOT}/tests/predictors/tokens.py:Predictor"
STEPS = f"{ROOT}/tests/predictors/steps.py:Predictor"
MIME = "application/vnd.replicate.prediction+json"


def run(kc, code: str, timeout: float = 300) -> tuple[list[dict], dict]:
    """Execute `code`; return its IOPub messages (this request only) and the reply."""
    msg_id = kc.execute(code)
    msgs = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        msgs.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    reply = kc.get_shell_msg(timeout=timeout)
    return msgs, reply


def stdout_of(msgs) -> str:
    return "".join(m["content"]["text"] for m in msgs if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")


def display_msgs(msgs) -> list[dict]:
    return [m for m in msgs if m["msg_type"] in ("display_data", "update_display_data") and MIME in m["content"]["data"]]


def main() -> int:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(ROOT))
    ok = True
    try:
        run(kc, "%load_ext replicate_jupyter\nimport time, json, replicate_jupyter as rj")
        # warm both predictors so setup time is out of every figure
        run(kc, f"rj.run({TOKENS!r}, input={{'n': 5}}); rj.run({STEPS!r}, input={{'steps': 1, 'delay': 0}})")

        # 1. token stream
        msgs, _ = run(kc, f"%%replicate {TOKENS} -o tok\nprompt: go\nn: 2000\ndelay: 0")
        disp = display_msgs(msgs)
        out, _ = run(kc, "print(json.dumps([tok.metrics['predict_time'], ''.join(tok.output)]))")
        predict_time, text = json.loads(stdout_of(out))
        expected = "".join(f"t{i} " for i in range(2000))
        final = disp[-1]["content"]["data"][MIME]
        exact = "".join(final["output"]) == expected == text and expected in disp[-1]["content"]["data"]["text/plain"]
        live = len(disp) - 1  # every message before the final one
        rate = live / predict_time if predict_time > 0 else 0.0
        print("== 2,000 tokens as fast as possible")
        print(f"predict time            {predict_time:.3f} s")
        print(f"IOPub display messages  {len(disp)} ({live} while running + 1 final) -> {rate:.1f} updates/s (limit 10/s)")
        print(f"final text exact        {exact}")
        ok &= exact and live <= 10 * predict_time + 1

        # 2. previews: 50 in 1 s
        msgs, _ = run(kc, f"%%replicate {STEPS} -o st\nsteps: 50\ndelay: 0.02")
        disp = display_msgs(msgs)
        out, _ = run(kc, "print(json.dumps(st.metrics['predict_time']))")
        pt = json.loads(stdout_of(out))
        previews = [m["content"]["data"][MIME].get("preview") for m in disp]
        changes = sum(1 for a, b in zip([None] + previews, previews) if b and a != b)
        print("== 50 step previews in ~1 s")
        print(f"predict time            {pt:.3f} s")
        print(f"IOPub display messages  {len(disp)} -> {(len(disp) - 1) / pt:.1f} updates/s while running (limit 10/s)")
        print(f"previews shown          {changes} -> {changes / pt:.1f}/s (limit 4/s)")
        ok &= changes <= 4 * pt + 1

        # 3. overhead of the magic + display against rj.run (no display), same warm kernel
        for label, delay, reps in (("as fast as possible", 0, 60), ("1 ms per token", 0.001, 4)):
            code = f"""
ip = get_ipython()
def magic():
    ip.run_cell_magic('replicate', {TOKENS!r}, 'prompt: go\\nn: 2000\\ndelay: {delay}')
def plain():
    rj.run({TOKENS!r}, input={{'prompt': 'go', 'n': 2000, 'delay': {delay}}})
res = {{'magic': [], 'plain': []}}
pair = (('plain', plain), ('magic', magic))
for i in range({reps}):
    for name, fn in (pair if i % 2 == 0 else pair[::-1]):
        time.sleep(0.05)  # let the IOPub thread drain the previous run's messages first
        t = time.perf_counter(); fn(); res[name].append(time.perf_counter() - t)
print(json.dumps(res))
"""
            out, _ = run(kc, code)
            res = json.loads(stdout_of(out).strip().splitlines()[-1])
            m, p = statistics.median(res["magic"]), statistics.median(res["plain"])
            # each round's two runs share the machine's state of the moment: the median of the
            # per-round ratios is what the noise (minutes-long slow spells) moves least
            ratio = statistics.median(a / b for a, b in zip(res["magic"], res["plain"]))
            print(f"== overhead, 2,000 tokens {label}, {reps} interleaved rounds")
            print(f"rj.run (no display)     {p * 1000:.1f} ms (median)")
            print(f"%%replicate + display   {m * 1000:.1f} ms (median, +{(m - p) * 1000:.1f} ms)")
            print(f"ratio of the medians    {m / p:.3f}")
            print(f"ratio, median per round {ratio:.3f} (limit 1.10)")
            ok &= ratio <= 1.10
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    print("OK" if ok else "FAILED a target")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
