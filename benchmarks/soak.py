"""Soak: many predictions with 512 px step previews shown in a real kernel, and what they leave.

A notebook of N `%%replicate` cells (tests/predictors/big_previews.py: a few steps, each with a
512×512 preview, then a PNG file returned as Cog predictors return one) runs in a fresh kernel
(nbclient), as a user running a cell over and over would. A probe cell before and after the
runs reads, inside the kernel, after `gc.collect()`:

- RSS growth (target ≤ 50 MB for 1,000 runs; also shown after `malloc_trim`, which tells memory
  still held from memory merely not given back to the OS);
- temp entries the runs left in the kernel's temp dir (target 0); the kernel gets a temp dir of
  its own (TMPDIR), so other processes' files do not count, and it is listed again after the
  kernel exits (target 0);
- Python and OS threads against the baseline (target: back to it, waited for up to 10 s);

and, from the messages the kernel sent, how many 512 px previews were shown and the IOPub bytes
per prediction (information). Last, the size of a saved notebook holding one N-byte PNG output
against N (target ≤ 1.5×). Each figure prints with its target and PASS/FAIL; the exit status
is 0 whatever was measured (1 only when the benchmark itself could not run).

    python benchmarks/soak.py [--n 1000] [--steps 4] [--delay 0.08] [--json out.json]
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import pathlib
import re
import shutil
import sys
import tempfile
import time
from typing import Any

__all__ = ["main", "soak_notebook", "PROBE"]

ROOT = pathlib.Path(__file__).resolve().parent.parent
REF = str(ROOT / "tests" / "predictors" / "big_previews.py") + ":Predictor"
MARK = "SOAK-PROBE "
MB = 1 << 20

#: defined in the kernel: one line of JSON with what the process holds now, after gc
PROBE = r'''
def _soak_probe(label, baseline=None, wait=0.0):
    import gc, json, os, tempfile, threading, time
    deadline = time.monotonic() + wait
    while True:
        for _ in range(3):
            gc.collect()
        status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
        os_threads, py_threads = int(status["Threads"]), threading.active_count()
        if baseline is None or time.monotonic() >= deadline or (
                os_threads <= baseline["os_threads"] and py_threads <= baseline["py_threads"]):
            break
        time.sleep(0.1)
    rss = int(status["VmRSS"].split()[0]) * 1024
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        trimmed = int(dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)["VmRSS"].split()[0]) * 1024
    except OSError:
        trimmed = rss
    tmp = tempfile.gettempdir()
    import replicate_jupyter as rj
    held = rj.predictions.list()
    out = {"label": label, "rss": rss, "rss_trimmed": trimmed, "os_threads": os_threads, "py_threads": py_threads,
           "thread_names": sorted(t.name for t in threading.enumerate()), "tmp": tmp,
           "tmp_entries": sorted(os.listdir(tmp)), "tmp_files": sum(len(f) for _, _, f in os.walk(tmp)),
           "predictions": len(held), "with_preview": sum(getattr(p, "preview", None) is not None for p in held)}
    print("SOAK-PROBE " + json.dumps(out))
    return out
'''


def soak_notebook(n: int, steps: int, delay: float, warmup: int) -> Any:
    """The notebook: setup, warm-up runs, baseline probe, n runs, final probe, one big PNG."""
    sys.path.insert(0, str(ROOT / "tests"))
    from kernel_helpers import make_notebook

    def cell(seed: int, out_size: int = 64, k: int = steps) -> str:
        return f"%%replicate {REF} --seed {seed}\nsteps: {k}\ndelay: {delay}\nout_size: {out_size}"

    cells = ["%load_ext replicate_jupyter\n" + PROBE]
    cells += [cell(10**6 + i) for i in range(warmup)]
    cells += ["_soak_base = _soak_probe('baseline')"]
    cells += [cell(i) for i in range(n)]
    cells += ["_soak_probe('after', _soak_base, wait=10.0);",
              cell(2 * 10**6, out_size=512, k=2),
              "print('SOAK-PNG', len(_.output.read()))"]
    return make_notebook(cells)


class _Tally:
    """What the kernel sent for the display cells: messages, bytes, and 512 px previews shown."""

    DATA_URI = re.compile(r"data:image/(?:png|jpeg|webp);base64,([A-Za-z0-9+/=]+)")

    def __init__(self, preview_side: int) -> None:
        self.side = preview_side
        self.messages = self.bytes = self.previews = 0

    def see(self, msg: dict) -> None:
        if msg.get("msg_type") not in ("display_data", "update_display_data"):
            return
        data = msg.get("content", {}).get("data", {})
        self.messages += 1
        self.bytes += sum(len(v) if isinstance(v, str) else len(json.dumps(v)) for v in data.values())
        html = data.get("text/html", "")
        if isinstance(html, str) and len(html) > 50_000:  # a 64 px output alone is smaller
            from PIL import Image

            for b64 in self.DATA_URI.findall(html):
                with Image.open(io.BytesIO(base64.b64decode(b64))) as img:
                    if max(img.size) >= self.side:
                        self.previews += 1
                        break


def execute(nb: Any, tmpdir: pathlib.Path, tally: _Tally, timeout: int) -> Any:
    """Run `nb` in a fresh kernel (TMPDIR=tmpdir), tallying its display messages; the saved form."""
    import nbformat
    from nbclient import NotebookClient

    class Client(NotebookClient):
        def process_message(self, msg, cell, cell_index):
            tally.see(msg)
            return super().process_message(msg, cell, cell_index)

    env = dict(os.environ, TMPDIR=str(tmpdir))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    client = Client(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    client.execute(env=env)
    return nbformat.reads(nbformat.writes(nb), as_version=4)


def _probe(nb: Any, label: str) -> dict[str, Any]:
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            for line in str(out.get("text", "")).splitlines():
                if line.startswith(MARK):
                    got = json.loads(line[len(MARK):])
                    if got["label"] == label:
                        return dict(got)
    raise RuntimeError(f"no {label!r} probe in the kernel's output")


def figure(results: dict, key: str, value: Any, target: str, ok: bool | None = None, unit: str = "") -> None:
    shown = (f"{value:.4g}" if isinstance(value, float) else str(value)) + unit
    verdict = "" if ok is None else ("PASS" if ok else "FAIL")
    print(f"  {key:<30} {shown:<14} (target {target}) {verdict}".rstrip(), flush=True)
    results[key] = {"value": value, "target": target, "ok": ok}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the soak and print its figures; returns them (also written with --json)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="predictions (one cell each)")
    ap.add_argument("--steps", type=int, default=4, help="steps per prediction, each with a 512 px preview")
    ap.add_argument("--delay", type=float, default=0.08, help="seconds per step (so previews get drawn)")
    ap.add_argument("--warmup", type=int, default=3, help="runs before the baseline")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per cell")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("--n must be ≥ 1")
    tmpdir = pathlib.Path(tempfile.mkdtemp(prefix="rj-soak-"))
    kernel_tmp = tmpdir / "tmp"
    kernel_tmp.mkdir()
    tally = _Tally(preview_side=512)
    print(f"soak: {args.n} predictions of big_previews ({args.steps} steps × 512 px previews) in one kernel, "
          f"TMPDIR={kernel_tmp}", flush=True)
    t0 = time.perf_counter()
    try:
        nb = execute(soak_notebook(args.n, args.steps, args.delay, args.warmup), kernel_tmp, tally, args.timeout)
        wall = time.perf_counter() - t0
        base, after = _probe(nb, "baseline"), _probe(nb, "after")
        left_after_exit = sorted(set(os.listdir(kernel_tmp)) - set(base["tmp_entries"]))
        png_cell = nb.cells[-2]
        png_bytes = int(next(ln.split()[1] for c in nb.cells[-1:] for o in c.outputs
                             for ln in str(o.get("text", "")).splitlines() if ln.startswith("SOAK-PNG")))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    import nbformat

    alone = nbformat.v4.new_notebook(cells=[png_cell], metadata=nb.metadata)
    saved = len(nbformat.writes(alone).encode())
    left = sorted(set(after["tmp_entries"]) - set(base["tmp_entries"]))
    new_threads = sorted(set(after["thread_names"]) - set(base["thread_names"]))
    r: dict[str, Any] = {}
    grow, trimmed = (after["rss"] - base["rss"]) / MB, (after["rss_trimmed"] - base["rss_trimmed"]) / MB
    figure(r, "kernel_rss_growth", grow, "≤ 50 MB after gc", grow <= 50, " MB")
    figure(r, "kernel_rss_growth_trimmed", trimmed, "information (after malloc_trim)", unit=" MB")
    figure(r, "temp_entries_left", len(left), "0 (in the kernel, after the runs)", not left)
    figure(r, "temp_entries_left_after_exit", len(left_after_exit), "0 (after the kernel exited)", not left_after_exit)
    figure(r, "python_threads", f"{after['py_threads']} vs {base['py_threads']}", "back to baseline",
           after["py_threads"] <= base["py_threads"])
    figure(r, "os_threads", f"{after['os_threads']} vs {base['os_threads']}", "back to baseline",
           after["os_threads"] <= base["os_threads"])
    figure(r, "notebook_bytes_per_png_byte", saved / png_bytes, f"≤ 1.5 ({saved} B for a {png_bytes} B PNG)",
           saved / png_bytes <= 1.5)
    runs = args.n + args.warmup + 1
    figure(r, "previews_shown_per_run", tally.previews / runs, "information (512 px images drawn)")
    figure(r, "iopub_kb_per_run", tally.bytes / runs / 1024, "information (display messages)", unit=" KB")
    figure(r, "predictions_held", f"{after['predictions']} ({after['with_preview']} with a preview)", "information")
    figure(r, "seconds_per_run", wall / runs, "information (whole notebook)", unit=" s")
    if left:
        print(f"  left in the temp dir: {', '.join(left[:5])}{' …' if len(left) > 5 else ''}")
    if new_threads:
        print(f"  threads not there at baseline: {', '.join(new_threads[:8])}{' …' if len(new_threads) > 8 else ''}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"n": args.n, "figures": r}, indent=1))
    return r


if __name__ == "__main__":
    main()
    sys.exit(0)
