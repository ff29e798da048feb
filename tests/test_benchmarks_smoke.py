"""The GPU and soak benchmarks run here, small, so they cannot rot before someone needs them.

- benchmarks/gpu.py on this CPU-only machine: exits 0 with the `skipped: no CUDA device` line
  (CI runs that), and only when torch really sees no CUDA device; with `--rehearse-cpu` every
  section runs on the CPU through the public API and its correctness figures hold.
- benchmarks/soak.py --n 20 in a real kernel: exits 0 and prints every figure with its target
  and verdict, and the figures are measurements of something (previews were drawn, the PNG is
  in the saved notebook).
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
GPU = ROOT / "benchmarks" / "gpu.py"
SOAK = ROOT / "benchmarks" / "soak.py"


def _run(args: list[Any], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def _cuda_available() -> bool:
    out = _run(["-c", "import torch; print(torch.cuda.is_available())"], timeout=120)
    return out.stdout.strip() == "True"


def test_gpu_benchmark_skips_cleanly_without_cuda(tmp_path):
    out = tmp_path / "gpu.json"
    proc = _run([GPU, "--json", out], timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    skipped = any(line.startswith("skipped: no CUDA device") for line in proc.stdout.splitlines())
    assert skipped == (not _cuda_available()), proc.stdout  # skips exactly when there is no device
    if skipped:
        assert not out.exists()  # nothing measured, nothing claimed
    else:  # a machine with a GPU: every section ran
        result = json.loads(out.read_text())
        assert result["crashed"] == [] and result["figures"], proc.stdout


def test_gpu_benchmark_rehearsal_runs_every_section_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    proc = _run([GPU, "--rehearse-cpu", "--json", out], timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["crashed"] == [] and result["rehearsal"] is True
    figures = result["figures"]
    for section in ("device", "sync", "oom", "lru", "fp16", "sweep"):
        assert any(k.startswith(section + ".") for k in figures), (section, sorted(figures))
    # what holds on a CPU as on a GPU: device and SKU, OOM → evict → retry, LRU under a budget, pipeline dtype
    must_pass = ["device.predictor_device", "device.hardware(local/shapes)", "oom.first_attempt_oom",
                 "oom.warm_evicted", "oom.retry_status", "lru.warm_after_3", "lru.evicted",
                 "lru.oldest_again_is_cold", "lru.evicted_after_rerun", "fp16.loaded_dtype", "fp16.image_64px_std"]
    failed = {k: figures[k] for k in must_pass if not figures[k]["ok"]}
    assert not failed, failed
    assert figures["sweep.ratio"]["value"] > 0 and figures["sync.predict_time"]["value"] > 0
    assert "PASS" in proc.stdout and "(target " in proc.stdout


def test_soak_benchmark_small(tmp_path):
    out = tmp_path / "soak.json"
    n = 20
    proc = _run([SOAK, "--n", n, "--steps", 3, "--delay", 0.06, "--warmup", 1, "--json", out], timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    figures = json.loads(out.read_text())["figures"]
    judged = ["kernel_rss_growth", "temp_entries_left", "temp_entries_left_after_exit", "python_threads",
              "os_threads", "notebook_bytes_per_png_byte"]
    for key in judged:  # each printed with its target and a verdict
        assert isinstance(figures[key]["ok"], bool), key
        line = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith(key + " "))
        assert "(target " in line and line.rstrip().endswith(("PASS", "FAIL")), line
    # measurements of something: the big PNG is in the saved notebook (base64 alone is 4/3 of it),
    # 512 px previews were drawn, the temp counts are of these runs (today each leaves a folder)
    assert figures["notebook_bytes_per_png_byte"]["value"] >= 1.3
    assert figures["previews_shown_per_run"]["value"] > 0
    assert 0 <= figures["temp_entries_left"]["value"] <= n
    assert 0 <= figures["temp_entries_left_after_exit"]["value"] <= n + 1
