"""The `local/shapes` network: a diffusers `UNet2DModel` conditioned on (colour, shape, background).

Each of the three prompt parts has its own embedding table with one extra "null" row; the
three vectors are summed and added to the timestep embedding (`class_embed_type="identity"`).
Summing (rather than one class per combination) lets a prompt leave any part out and lets the
all-null row serve as the unconditional branch of classifier-free guidance.

Shared by `train.py` and `predict.py`, so the architecture is written once.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import DDIMScheduler, UNet2DModel
from torch import nn

__all__ = ["ShapesNet", "default_config", "load", "scheduler_config"]


def default_config(n_colors: int, n_shapes: int, n_backgrounds: int, size: int = 32) -> dict[str, Any]:
    return {
        "size": size,
        "block_out_channels": [32, 64, 64],
        "layers_per_block": 1,
        "n_colors": n_colors,
        "n_shapes": n_shapes,
        "n_backgrounds": n_backgrounds,
    }


def scheduler_config() -> dict[str, Any]:
    """The noise schedule used for training and sampling (sample prediction, cosine betas)."""
    return {
        "num_train_timesteps": 1000,
        "beta_schedule": "squaredcos_cap_v2",
        "prediction_type": "sample",
        "clip_sample": True,
        "clip_sample_range": 1.0,
    }


class ShapesNet(nn.Module):
    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        ch = list(cfg["block_out_channels"])
        emb_dim = ch[0] * 4  # UNet2DModel's time embedding width
        self.cfg = dict(cfg)
        self.unet = UNet2DModel(
            sample_size=cfg["size"],
            in_channels=3,
            out_channels=3,
            block_out_channels=tuple(ch),
            layers_per_block=cfg["layers_per_block"],
            down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
            attention_head_dim=16,
            norm_num_groups=8,
            class_embed_type="identity",
        )
        # the last row of each table is the "null" (unspecified / dropped) label
        self.color = nn.Embedding(cfg["n_colors"] + 1, emb_dim)
        self.shape = nn.Embedding(cfg["n_shapes"] + 1, emb_dim)
        self.background = nn.Embedding(cfg["n_backgrounds"] + 1, emb_dim)

    @property
    def null_labels(self) -> tuple[int, int, int]:
        return self.cfg["n_colors"], self.cfg["n_shapes"], self.cfg["n_backgrounds"]

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """`labels` is an int tensor (B, 3): colour, shape, background indices."""
        emb = self.color(labels[:, 0]) + self.shape(labels[:, 1]) + self.background(labels[:, 2])
        return self.unet(x, t, class_labels=emb).sample


def load(folder: Path) -> tuple[ShapesNet, dict[str, Any], DDIMScheduler]:
    """Load `config.json` + `weights.safetensors` from `folder` (no network, no hub)."""
    from safetensors.torch import load_file

    config = json.loads((folder / "config.json").read_text())
    net = ShapesNet(config["model"])
    net.load_state_dict(load_file(str(folder / "weights.safetensors")))
    net.eval().requires_grad_(False)
    sched = DDIMScheduler(**config["scheduler"])
    return net, config, sched
