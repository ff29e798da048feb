"""Display throttling and overhead, measured in a real kernel.

    .venv/bin/python benchmarks/display.py

1. A predictor streams 2,000 tokens as fast as it can: how many IOPub display messages the
   `%%replicate` cell sends (target: ≤ 10 updates/s plus the final one; a run shorter than one
   update interval is drawn once, final), and whether the final text is exact.
2. A predictor emits 50 step previews in 1 s: display messages and distinct previews shown
   (target: previews ≤ 4/s).
3. What the magic and its live display add to a cell: `%%replicate` against `rj.run` with no
   display, same predictor and same input, in the same warm kernel, interleaved (the order
   swaps every round, since these machines are noisy and the first of a pair tends to run
   colder). Judged: the median over rounds of (magic − rj.run) ≤ 1 ms per cell, for a short
   run and for 2,000 tokens as fast as possible. The cell is run again each round (as a user
   reruns a cell), so the parser reads it from its memo; the same cell as a first run (memo
   cleared) is printed beside it, not judged. So is the floor the kernel sets on this machine,
   timed the same way in the same rounds: a cell magic that does nothing, and one that only
   displays one line of text (IPython's dispatch and one ipykernel display, nothing of ours).
4. The parse step alone (option line + body of that cell), in this process: the parser as it
   is, for a cell run again (its readings memoised per text) and for a cell's first run (memo
   cleared), and the one with quick paths it replaced (read from git, commit 1966be3) when git
   has it. Printed, not judged: the per-cell figure of 3 is the one a user could notice.
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
OLD_PARSER = "1966be3"  # the last commit with the quick paths


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
    if reply["content"]["status"] != "ok":  # a broken benchmark cell says why, not a bare IndexError later
        raise RuntimeError(f"{reply['content'].get('ename')}: {reply['content'].get('evalue')}\n{code[:500]}")
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

        # 3. what the magic + display add per cell over rj.run, same model, same run
        old = _old_parser_source()
        if old is not None:  # the quick-path parser, swapped in for the `before` rounds
            run(kc, f"import sys, types\nOLD = types.ModuleType('cellparse_{OLD_PARSER}')\n"
                    f"sys.modules[OLD.__name__] = OLD\nexec({old!r}, OLD.__dict__)")
        for label, n, reps in (("a 5-token run", 5, 120), ("2,000 tokens as fast as possible", 2000, 240)):
            res = overhead(kc, n, reps)
            p = statistics.median(res["plain"])
            print(f"== magic + display over rj.run, {label}, {reps} interleaved rounds")
            print(f"rj.run (no display)     {p * 1000:.2f} ms (median)")
            for name, what in (("magic", "now, a cell run again"), ("magic_first", "now, a cell's first run: memo cleared"),
                               ("magic_old", f"quick-path parser of {OLD_PARSER}")):
                if name not in res:
                    continue
                added = statistics.median(a - b for a, b in zip(res[name], res["plain"]))
                print(f"%%replicate + display   {statistics.median(res[name]) * 1000:.2f} ms (median), "
                      f"added per cell {added * 1000:.2f} ms ({what}{'; limit 1 ms' if name == 'magic' else ''})")
                if name == "magic":
                    ok &= added <= 0.001
            floor = [(what, statistics.median(res[name])) for name, what in (
                ("nothing_magic", "a cell magic that does nothing (IPython's dispatch)"),
                ("one_line_magic", "a cell magic that displays one line of text")) if name in res]
            for what, t in floor:
                print(f"the kernel's floor      {t * 1000:.2f} ms (median): {what}")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    parse_step()
    print("OK" if ok else "FAILED a target")
    return 0 if ok else 1


def overhead(kc, n: int, reps: int) -> dict[str, list[float]]:
    """Seconds per call of rj.run, of the magic, and (when the kernel holds OLD) of the magic
    with the parser of OLD_PARSER swapped in, on the same input, `reps` rounds in rotating order."""
    code = f"""
ip = get_ipython()
import sys
NAMES = ('parse_line', 'parse_body')
SITES = [(m, name) for m in list(sys.modules.values())  # where the magics call the parser from
         if getattr(m, '__name__', '').startswith('replicate_jupyter.notebook')
         and not m.__name__.startswith('replicate_jupyter.notebook.cellparse')
         for name in NAMES if hasattr(m, name)]
PARSERS = {{'magic': [getattr(m, name) for m, name in SITES]}}
if 'OLD' in globals() and SITES:
    PARSERS['magic_old'] = [getattr(OLD, name) for _, name in SITES]
def with_parser(name):
    def fn():  # both variants pay the same swap, so the difference is the parser's
        for (m, attr), f in zip(SITES, PARSERS[name]):
            setattr(m, attr, f)
        ip.run_cell_magic('replicate', {TOKENS!r}, 'prompt: go\\nn: {n}\\ndelay: 0')
        for (m, attr), f in zip(SITES, PARSERS['magic']):
            setattr(m, attr, f)
    return fn
def plain():
    rj.run({TOKENS!r}, input={{'prompt': 'go', 'n': {n}, 'delay': 0}})
def first_run():  # the same cell as new: the parser's memo (a cell run again) cleared first
    from replicate_jupyter.notebook import cellparse
    cellparse.clear_memo()
    with_parser('magic')()
# the floor the kernel itself sets: any cell magic (IPython's dispatch), and one that shows a line
from IPython.display import display as _display
ip.register_magic_function(lambda line, cell: None, 'cell', 'rj_bench_nothing')
ip.register_magic_function(lambda line, cell: _display({{'text/plain': line}}, raw=True), 'cell', 'rj_bench_one_line')
def nothing_magic():
    ip.run_cell_magic('rj_bench_nothing', 'x', 'y')
def one_line_magic():
    ip.run_cell_magic('rj_bench_one_line', 'x', 'y')
order = [('plain', plain)] + [(name, with_parser(name)) for name in PARSERS]
if hasattr(__import__('replicate_jupyter.notebook.cellparse', fromlist=['x']), 'clear_memo'):
    order.append(('magic_first', first_run))
order += [('nothing_magic', nothing_magic), ('one_line_magic', one_line_magic)]
res = {{name: [] for name, _ in order}}
for i in range({reps}):
    for name, fn in order[i % len(order):] + order[:i % len(order)]:
        time.sleep(0.05)  # let the IOPub thread drain the previous run's messages first
        t = time.perf_counter(); fn(); res[name].append(time.perf_counter() - t)
print(json.dumps(res))
"""
    out, _ = run(kc, code)
    return json.loads(stdout_of(out).strip().splitlines()[-1])


def _old_parser_source() -> str | None:
    """The source of the cell parser with quick paths (OLD_PARSER), or None without that history."""
    import subprocess

    try:
        return subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD_PARSER}:replicate_jupyter/notebook/cellparse.py"],
                              capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def _old_parser():
    """The cell parser with quick paths, as it was before they were folded back (or None)."""
    import types

    src = _old_parser_source()
    if src is None:
        return None
    mod = types.ModuleType(f"cellparse_{OLD_PARSER}")
    sys.modules[mod.__name__] = mod  # dataclasses look their module up
    exec(compile(src, f"{mod.__name__}.py", "exec"), mod.__dict__)
    return mod


def parse_step() -> None:
    """Median time to parse the benchmark cell's line and body (and a 4-input body), now and before."""
    import timeit

    from replicate_jupyter.notebook import cellparse

    ns = {"style": "ink"}
    cells = ((f"{TOKENS} -o tok", "prompt: go\nn: 2000\ndelay: 0"),
             ("local/shapes --seed 3 -o pic", "prompt: a red circle, {style}\nnum_outputs: 2\nguidance_scale: 4.5\nseed: 7"))
    print("== the parse step alone (option line + body), median of 7 × 2,000 calls")
    # the parser memoises its argparse and YAML readings per text, so a cell run again (the
    # figure of 3) parses from the memo; a cell's first run is measured with the memo cleared
    first = getattr(cellparse, "clear_memo", None)
    variants = [("now, a cell run again (memo)", cellparse, None)]
    if first is not None:
        variants.append(("now, a cell's first run (argparse+YAML)", cellparse, first))
    variants.append((f"before (quick paths, {OLD_PARSER})", _old_parser(), None))
    for label, mod, clear in variants:
        if mod is None:
            print(f"{label:42} (not in this checkout's git history)")
            continue
        figures = []
        for line, body in cells:
            def once(mod=mod, line=line, body=body, clear=clear):
                if clear is not None:
                    clear()
                mod.parse_line(line)
                mod.parse_body(body, ns, "prompt")
            once()
            figures.append(statistics.median(timeit.repeat(once, number=2000, repeat=7)) / 2000)
        print(f"{label:42} " + "  ".join(f"{f * 1e6:.0f} µs" for f in figures) + "  (tokens cell, shapes cell)")


if __name__ == "__main__":
    sys.exit(main())
