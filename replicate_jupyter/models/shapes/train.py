"""Train `local/shapes` from scratch on procedurally drawn images (CPU, minutes).

    python -m replicate_jupyter.models.shapes.train --steps 1400 --seed 0 --out replicate_jupyter/models/shapes

Recipe (see ../shared/notes/local-models.md): the UNet predicts the clean sample under a
cosine noise schedule (converges far faster than epsilon prediction at this scale), labels are
dropped for classifier-free guidance (10% all parts, plus 5% per part so a prompt may leave a
part out), AdamW with warmup + cosine decay, and an EMA copy of the weights is what ships.
Deterministic for a seed: fixed thread count, seeded torch and data RNGs, fresh data each step.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler
from safetensors.torch import save_file

from replicate_jupyter.models.shapes import draw
from replicate_jupyter.models.shapes.net import ShapesNet, default_config, scheduler_config

COLOR_NAMES = list(draw.COLORS)
BG_NAMES = list(draw.BACKGROUNDS)


def make_batch(rng: random.Random, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` freshly drawn images in [-1, 1] and their (colour, shape, background) labels."""
    imgs, labels = [], []
    for _ in range(n):
        c, s, b = draw.random_spec(rng)
        imgs.append(np.asarray(draw.draw(c, s, b, rng, size=size)))
        labels.append((COLOR_NAMES.index(c), draw.SHAPES.index(s), BG_NAMES.index(b)))
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x, torch.tensor(labels, dtype=torch.long)


def drop_labels(labels: torch.Tensor, null: tuple[int, int, int], gen: torch.Generator) -> torch.Tensor:
    labels = labels.clone()
    all_null = torch.rand(len(labels), generator=gen) < 0.10
    for j in range(3):
        part_null = torch.rand(len(labels), generator=gen) < 0.05
        labels[all_null | part_null, j] = null[j]
    return labels


def save(net: torch.nn.Module, out: Path, config: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(out / "weights.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def train(steps: int, seed: int, out: Path, batch: int = 64, lr: float = 2e-3, size: int = draw.SIZE,
          save_every: int = 200, init: Path | None = None) -> None:
    torch.set_num_threads(2)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)

    model_cfg = default_config(len(draw.COLORS), len(draw.SHAPES), len(draw.BACKGROUNDS), size=size)
    net = ShapesNet(model_cfg)
    history: list[dict] = []
    if init is not None:  # continue from an earlier stage's (EMA) weights
        from safetensors.torch import load_file

        net.load_state_dict(load_file(str(init / "weights.safetensors")))
        history = json.loads((init / "config.json").read_text())["training"].get("stages", [])
        if not history:
            history = [json.loads((init / "config.json").read_text())["training"]]
    ema = copy.deepcopy(net).requires_grad_(False)
    n_params = sum(p.numel() for p in net.parameters())
    print(f"parameters: {n_params:,}", flush=True)
    sched = DDPMScheduler(**scheduler_config())
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    warmup = min(50, steps // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    config = {
        "model": model_cfg,
        "scheduler": scheduler_config(),
        "vocab": {"colors": COLOR_NAMES, "shapes": list(draw.SHAPES), "backgrounds": BG_NAMES},
    }
    current = {"steps": 0, "seed": seed, "batch": batch, "lr": lr, "parameters": n_params}
    config["training"] = {"stages": history + [current]} if history else current
    t0 = time.time()
    running = None
    for step in range(steps):
        x0, labels = make_batch(rng, batch, size)
        labels = drop_labels(labels, net.null_labels, gen)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,), generator=gen)
        xt = sched.add_noise(x0, noise, t)
        pred = net(xt, t, labels)
        loss = torch.nn.functional.mse_loss(pred, x0)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        decay = min(0.995, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.lerp_(p, 1 - decay)
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if (step + 1) % 25 == 0:
            el = time.time() - t0
            print(f"step {step + 1}/{steps} loss {running:.4f} {el / (step + 1):.2f}s/step elapsed {el:.0f}s", flush=True)
        if (step + 1) % save_every == 0 or step + 1 == steps:
            current.update(steps=step + 1, train_seconds=round(time.time() - t0, 1))
            save(ema, out, config)
    print(f"done in {time.time() - t0:.0f}s", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--size", type=int, default=draw.SIZE)
    ap.add_argument("--init", type=Path, default=None, help="folder of an earlier stage to continue from")
    a = ap.parse_args(argv)
    train(a.steps, a.seed, a.out, batch=a.batch, lr=a.lr, size=a.size, init=a.init)


if __name__ == "__main__":
    main()
