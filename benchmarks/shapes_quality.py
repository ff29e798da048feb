"""Quality of `local/shapes`: does the picture show the colour and shape the prompt asked for?

    .venv/bin/python benchmarks/shapes_quality.py [--n 200] [--seed 0]

The judge is a deterministic image analysis written for this benchmark (not a model):
  1. background colour = median of the border pixels;
  2. foreground colour = median of the pixels far from the background; every pixel is then
     projected on the background→foreground line and counted as foreground past half way;
     the largest 4-connected component is the shape;
  3. colour name = palette colour with the nearest HSV hue to the foreground colour;
  4. shape from rotation-invariant mask geometry:
       hole (background enclosed by the shape)   → ring
       solidity = area / convex-hull area < 0.8  → star
       πR²/area (R = farthest pixel from centroid): ≈1 circle, ≈1.57 square, ≈2.4 triangle
     (thresholds 1.28 and 1.87, midway between the drawn extremes).
The analyser is first validated on freshly drawn training images (it should be ~100% there),
then 200 random prompts go through the predictor at default settings.
"""
from __future__ import annotations

import argparse
import colorsys
import math
import random
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from replicate_jupyter.models.shapes import draw  # noqa: E402

ANALYSIS_SIZE = 64
_HUES = {name: colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] * 360 for name, rgb in draw.COLORS.items()}


def _largest_component(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    best: list[tuple[int, int]] = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        comp, queue = [], deque([(y0, x0)])
        seen[y0, x0] = True
        while queue:
            y, x = queue.popleft()
            comp.append((y, x))
            for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                ny, nx = y + dy, x + dx
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(comp) > len(best):
            best = comp
    out = np.zeros_like(mask, dtype=bool)
    if best:
        ys, xs = zip(*best)
        out[list(ys), list(xs)] = True
    return out


def _holes(mask: np.ndarray) -> np.ndarray:
    """Background pixels not reachable from the border without crossing the mask."""
    outside = _largest_component_from_border(~mask)
    return ~mask & ~outside


def _largest_component_from_border(free: np.ndarray) -> np.ndarray:
    h, w = free.shape
    seen = np.zeros_like(free, dtype=bool)
    queue = deque()
    for y in range(h):
        for x in (0, w - 1):
            if free[y, x] and not seen[y, x]:
                seen[y, x] = True
                queue.append((y, x))
    for x in range(w):
        for y in (0, h - 1):
            if free[y, x] and not seen[y, x]:
                seen[y, x] = True
                queue.append((y, x))
    while queue:
        y, x = queue.popleft()
        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            ny, nx = y + dy, x + dx
            if 0 <= ny < h and 0 <= nx < w and free[ny, nx] and not seen[ny, nx]:
                seen[ny, nx] = True
                queue.append((ny, nx))
    return seen


def _hull_area(points: np.ndarray) -> float:
    """Area of the convex hull of 2-D points (Andrew's monotone chain + shoelace)."""
    pts = sorted(set(map(tuple, points.tolist())))
    if len(pts) < 3:
        return 0.0

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = lower[:-1] + upper[:-1]
    return 0.5 * abs(sum(hull[i][0] * hull[i - 1][1] - hull[i - 1][0] * hull[i][1] for i in range(len(hull))))


def analyse(img: Image.Image) -> dict:
    """Judge one image: {'color', 'shape', 'background_rgb', 'features'}; names are None when unclear."""
    resample = Image.Resampling.BOX if img.width > ANALYSIS_SIZE else Image.Resampling.BICUBIC
    a = np.asarray(img.convert("RGB").resize((ANALYSIS_SIZE, ANALYSIS_SIZE), resample)).astype(np.float64)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    bg = np.median(border, axis=0)
    dist = np.linalg.norm(a - bg, axis=2)
    if dist.max() < 60:
        return {"color": None, "shape": None, "background_rgb": bg, "features": {}}
    fg = np.median(a[dist > 0.6 * dist.max()], axis=0)
    d = fg - bg
    t = ((a - bg) @ d) / float(d @ d)  # 0 at background, 1 at foreground
    mask = _largest_component(t > 0.5)
    area = int(mask.sum())

    h, s, v = colorsys.rgb_to_hsv(*(fg / 255))
    hue = h * 360
    color = min(_HUES, key=lambda n: min(abs(hue - _HUES[n]), 360 - abs(hue - _HUES[n]))) if s > 0.3 else None

    holes = _holes(mask)
    hole_frac = holes.sum() / max(1, area + holes.sum())
    ys, xs = np.nonzero(mask)
    corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)])
    solidity = area / max(1.0, _hull_area(corners))
    cy, cx = ys.mean() + 0.5, xs.mean() + 0.5
    r_max = float(np.sqrt(((ys + 0.5 - cy) ** 2 + (xs + 0.5 - cx) ** 2).max())) + 0.5
    roundness = math.pi * r_max**2 / max(1, area)
    if area < 12:
        shape = None
    elif hole_frac > 0.06:
        shape = "ring"
    elif solidity < 0.8:
        shape = "star"
    elif roundness < 1.28:
        shape = "circle"
    elif roundness < 1.87:
        shape = "square"
    else:
        shape = "triangle"
    feats = {"area": area, "hole": round(float(hole_frac), 3), "solidity": round(float(solidity), 3),
             "roundness": round(roundness, 3), "hue": round(hue, 1), "sat": round(s, 2)}
    return {"color": color, "shape": shape, "background_rgb": bg, "features": feats}


def _background_name(rgb: np.ndarray) -> str:
    return min(draw.BACKGROUNDS, key=lambda n: float(np.linalg.norm(rgb - np.array(draw.BACKGROUNDS[n]))))


def score(items: list[tuple[tuple[str, str, str], Image.Image]], show_errors: int = 0) -> dict[str, float]:
    ok_c = ok_s = ok_b = 0
    shown = 0
    per_shape: dict[str, list[int]] = {name: [0, 0] for name in draw.SHAPES}
    for (c, s, b), img in items:
        r = analyse(img)
        ok_c += r["color"] == c
        ok_s += r["shape"] == s
        per_shape[s][0] += r["shape"] == s
        per_shape[s][1] += 1
        ok_b += _background_name(r["background_rgb"]) == b
        if (r["color"] != c or r["shape"] != s) and shown < show_errors:
            shown += 1
            print(f"    miss: wanted {c} {s} on {b}; judged {r['color']} {r['shape']} {r['features']}")
    n = len(items)
    by_shape = {k: v[0] / v[1] for k, v in per_shape.items() if v[1]}
    return {"color": ok_c / n, "shape": ok_s / n, "background": ok_b / n, "by_shape": by_shape}


def validate_analyser(n: int, seed: int) -> dict[str, float]:
    """The judge on real drawn images, shown the way the predictor shows them (upscaled 256 px)."""
    rng = random.Random(seed + 1)
    items = []
    for _ in range(n):
        spec = draw.random_spec(rng)
        img = draw.draw(*spec, rng).resize((256, 256), Image.Resampling.BICUBIC)
        items.append((spec, img))
    return score(items, show_errors=5)


def save_grid(p, path: Path, seed: int, steps: int, guidance: float) -> None:
    """One image per (shape row, colour column) at default settings; backgrounds cycle."""
    bgs = list(draw.BACKGROUNDS)
    cell = 64
    grid = Image.new("RGB", (cell * len(draw.COLORS), cell * len(draw.SHAPES)), "white")
    for r, shape in enumerate(draw.SHAPES):
        for c, color in enumerate(draw.COLORS):
            prompt = draw.prompt_for(color, shape, bgs[(r + c) % len(bgs)])
            (out,) = p.predict(prompt=prompt, negative_prompt="", num_outputs=1, num_inference_steps=steps,
                               guidance_scale=guidance, seed=seed + 10 * r + c, output_format="png")
            grid.paste(Image.open(out).convert("RGB").resize((cell, cell), Image.Resampling.BICUBIC), (c * cell, r * cell))
    grid.save(path)
    print(f"grid saved to {path}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="local/shapes quality benchmark")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--validate", type=int, default=500, help="drawn images to validate the analyser on")
    ap.add_argument("--grid", type=Path, default=None, help="also save a shapes × colours grid PNG here")
    ap.add_argument("--steps", type=int, default=None, help="num_inference_steps (default: the predictor's)")
    ap.add_argument("--guidance", type=float, default=None, help="guidance_scale (default: the predictor's)")
    a = ap.parse_args(argv)

    v = validate_analyser(a.validate, a.seed)
    print(f"analyser on {a.validate} drawn images: colour {v['color']:.1%}  shape {v['shape']:.1%}  "
          f"background {v['background']:.1%}")

    import torch

    torch.set_num_threads(2)
    from replicate_jupyter.model.schema import build_schema
    from replicate_jupyter.models.shapes.predict import Predictor

    defaults = build_schema(Predictor)["components"]["schemas"]["Input"]["properties"]
    steps = a.steps or defaults["num_inference_steps"]["default"]
    guidance = a.guidance if a.guidance is not None else defaults["guidance_scale"]["default"]

    t0 = time.perf_counter()
    p = Predictor()
    p.setup()
    setup_s = time.perf_counter() - t0
    # run inside a silent RunContext so the predictor's per-call log lines don't flood the report
    import threading

    from replicate_jupyter.runners import context

    context.activate(context.RunContext(emit=lambda e: None, cancel_event=threading.Event(), wants_preview=lambda: False))
    rng = random.Random(a.seed)
    items, times = [], []
    for i in range(a.n):
        spec = draw.random_spec(rng)
        t0 = time.perf_counter()
        (path,) = p.predict(prompt=draw.prompt_for(*spec), negative_prompt="", num_outputs=1, num_inference_steps=steps,
                            guidance_scale=guidance, seed=a.seed * 100_000 + i, output_format="png")
        times.append(time.perf_counter() - t0)
        items.append((spec, Image.open(path).convert("RGB")))
    if a.grid:
        save_grid(p, a.grid, a.seed, steps, guidance)
    r = score(items, show_errors=10)
    print(f"model on {a.n} random prompts ({steps} steps, guidance {guidance:g}): "
          f"colour {r['color']:.1%}  shape {r['shape']:.1%}  "
          f"background {r['background']:.1%}")
    print("shape accuracy by shape: " + ", ".join(f"{k} {v:.0%}" for k, v in r["by_shape"].items()))
    print(f"time per image (num_outputs=1, defaults): median {np.median(times):.2f}s  mean {np.mean(times):.2f}s; "
          f"setup {setup_s:.2f}s")
    print(f"targets: colour >= 95% {'OK' if r['color'] >= 0.95 else 'MISSED'}; shape >= 90% "
          f"{'OK' if r['shape'] >= 0.90 else 'MISSED'}; <= 1.5 s/image {'OK' if np.median(times) <= 1.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
