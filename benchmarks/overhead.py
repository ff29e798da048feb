"""Per-prediction overhead of `rj.run` over calling the predictor's own `predict`, and the
import time of the package. Both sides run in this one process, interleaved, so machine noise
hits them alike; the figures are medians of 200 runs of a ~5 ms predictor.

    python benchmarks/overhead.py
"""
from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time

from cog import BasePredictor, Input

import replicate_jupyter as rj


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class FiveMs(BasePredictor):
    def predict(self, prompt: str = Input(default="x"), steps: int = Input(default=4, ge=1, le=50),
                scale: float = Input(default=1.0, ge=0, le=10)) -> str:
        busy(0.005)
        return prompt


def main(n: int = 200) -> dict:
    inp = {"prompt": "hello", "steps": 4, "scale": 2.0}
    direct_pred = FiveMs()
    rj.run(FiveMs, inp)  # warm: setup, schema, validator built once
    direct, via = [], []
    for _ in range(n):
        t = time.perf_counter()
        direct_pred.predict(**inp)
        direct.append(time.perf_counter() - t)
        t = time.perf_counter()
        rj.run(FiveMs, inp)
        via.append(time.perf_counter() - t)
    d, v = statistics.median(direct), statistics.median(via)
    overhead_ms = (v - d) * 1000
    ratio = v / d

    out = subprocess.run([sys.executable, "-X", "importtime", "-c",
                          "import replicate_jupyter, sys; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    cum = [int(m.group(1)) for m in re.finditer(r"\|\s+(\d+) \|\s+replicate_jupyter\s*$", out.stderr, re.M)]
    import_ms = cum[-1] / 1000 if cum else float("nan")
    torch_imported = out.stdout.strip() == "True"

    print(f"median direct predict : {d * 1000:.3f} ms")
    print(f"median rj.run         : {v * 1000:.3f} ms")
    print(f"overhead              : {overhead_ms:.3f} ms   (target <= 1 ms)")
    print(f"ratio                 : {ratio:.3f}        (target <= 1.2)")
    print(f"import replicate_jupyter: {import_ms:.1f} ms, torch imported: {torch_imported}   (target <= 150 ms, False)")
    ok = overhead_ms <= 1.0 and ratio <= 1.2 and import_ms <= 150 and not torch_imported
    print("PASS" if ok else "FAIL")
    return {"overhead_ms": overhead_ms, "ratio": ratio, "import_ms": import_ms}


if __name__ == "__main__":
    main()
