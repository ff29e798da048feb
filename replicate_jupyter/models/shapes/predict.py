"""`local/shapes`: a tiny text-to-image diffusion model trained here on drawn shapes (CPU-friendly).

A Cog predictor that runs unchanged in a Jupyter kernel, on a Cog worker (`coglet`) or on
Replicate: it imports only cog, torch and diffusers, and reports progress/previews through
`replicate_jupyter.progress` when that package is present (no-ops otherwise).
"""
from __future__ import annotations

import functools
import random
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from cog import BasePredictor, Input
from cog import Path as CogPath
from PIL import Image

_HERE = Path(__file__).resolve().parent

try:
    from replicate_jupyter.models.shapes import net as _net
    from replicate_jupyter.models.shapes import prompt as _prompt
except ImportError:  # served from a copied folder (cog push): load the siblings by path
    sys.path.insert(0, str(_HERE))
    import net as _net  # type: ignore[no-redef]
    import prompt as _prompt  # type: ignore[no-redef]

try:
    from replicate_jupyter import progress as _progress
except ImportError:  # not installed under cog: progress reporting is simply absent

    class _progress:  # type: ignore[no-redef]
        @staticmethod
        def progress(step: int, total: int | None = None) -> None: ...

        @staticmethod
        def preview(image, step: int | None = None) -> None: ...

        @staticmethod
        def log(text: str) -> None:
            print(text)


try:
    from replicate_jupyter.model.batching import batchable as _batchable
    from replicate_jupyter.model.batching import current_batch as _current_batch
except ImportError:  # under cog alone: predict_batch is never called by the runtime

    def _batchable(**_rule):  # type: ignore[no-redef,misc,unused-ignore]
        return lambda fn: fn

    _current_batch = None  # type: ignore[assignment]


OUT_SIZE = 256


def _to_images(x: torch.Tensor, size: int, resample: Image.Resampling) -> list[Image.Image]:
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a).resize((size, size), resample) for a in arr]


def _member_preview(x0: torch.Tensor, owner: torch.Tensor, i: int) -> Image.Image:
    """The preview strip of batch member `i`: its own rows of the batch's x0."""
    return _preview_strip(x0[(owner == i).to(x0.device)].cpu())


def _preview_strip(x0: torch.Tensor) -> Image.Image:
    """The current clean-image estimate of up to 4 outputs side by side, 128 px each."""
    tiles = _to_images(x0[:4], 128, Image.Resampling.NEAREST)
    strip = Image.new("RGB", (128 * len(tiles), 128))
    for i, t in enumerate(tiles):
        strip.paste(t, (128 * i, 0))
    return strip


def _ignored_note(words: list[str]) -> str:
    """E.g. "ignored word (not in this model's vocabulary, or not where it can use it): 'blue'; it
    draws the colours red, …, the shapes circle, …, on a background of white, black, gray,
    cream": a prompt asking for more than the model knows is not cut short silently."""
    vocab = _prompt.draw
    return (f"ignored word{'s' if len(words) != 1 else ''} (not in this model's vocabulary, or not where it can "
            f"use {'them' if len(words) != 1 else 'it'}): {', '.join(repr(w) for w in words)}; it draws the colours "
            f"{', '.join(vocab.COLORS)}, the shapes {', '.join(vocab.SHAPES)}, on a background of "
            f"{', '.join(vocab.BACKGROUNDS)}")


class Predictor(BasePredictor):
    def setup(self) -> None:
        torch.set_grad_enabled(False)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.net, self.config, self.scheduler = _net.load(_HERE)
        self.net.to(self.device)
        vocab = self.config["vocab"]
        self.index = {k: {name: i for i, name in enumerate(vocab[k])} for k in ("colors", "shapes", "backgrounds")}

    def _labels(self, parsed: "_prompt.Parsed") -> list[int]:
        null = self.net.null_labels
        return [
            self.index["colors"].get(parsed.color, null[0]) if parsed.color else null[0],
            self.index["shapes"].get(parsed.shape, null[1]) if parsed.shape else null[1],
            self.index["backgrounds"].get(parsed.background, null[2]) if parsed.background else null[2],
        ]

    def _step(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
              g: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One denoising step with classifier-free guidance (skipped at g == 1): the next sample
        and the predicted clean image, which the step preview shows. Shared by `predict` and
        `predict_batch`, so a member's images are the ones it gets alone."""
        tt = t.to(self.device).expand(x.shape[0])
        if g == 1.0:
            x0 = self.net(x, tt, cond)
        else:
            both = self.net(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([uncond, cond]))
            x0_u, x0_c = both.chunk(2)
            x0 = x0_u + g * (x0_c - x0_u)
        x0 = x0.clamp(-1, 1)
        return self.scheduler.step(x0, t, x, eta=0.0).prev_sample, x0

    # several predictions in one denoising loop (predict_batch): the same steps and guidance;
    # prompts, seeds, negative prompts, output counts and formats may differ
    @_batchable(max_batch=16, match=("num_inference_steps", "guidance_scale"), weight="num_outputs")
    def predict(
        self,
        prompt: str = Input(
            description="What to draw: 'a {colour} {shape} on a {background} background'. Colours: red, orange, "
            "yellow, green, cyan, blue, purple, pink; shapes: circle, square, triangle, ring, star; backgrounds: "
            "white, black, gray, cream. Unknown words are ignored; missing parts are chosen at random.",
            default="a red circle on a white background",
        ),
        negative_prompt: str = Input(
            description="What to steer away from (same vocabulary), e.g. 'white background'", default=""
        ),
        num_outputs: int = Input(description="Number of images to generate", default=1, ge=1, le=16),
        num_inference_steps: int = Input(description="Number of denoising steps", default=20, ge=1, le=100),
        guidance_scale: float = Input(description="Scale for classifier-free guidance", default=3.0, ge=0, le=20),
        seed: int = Input(description="Random seed. Leave blank to randomize", default=None),
        output_format: str = Input(description="Format of the output images", default="png", choices=["png", "webp"]),
    ) -> list[CogPath]:
        seed, parsed, negative = _read_prompt(prompt, negative_prompt, seed, _progress.log)

        n = num_outputs
        cond = torch.tensor([self._labels(parsed)] * n, device=self.device)
        uncond = torch.tensor([self._labels(negative)] * n, device=self.device)
        size = self.config["model"]["size"]
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn((n, 3, size, size), generator=gen).to(self.device)

        self.scheduler.set_timesteps(num_inference_steps)
        timesteps = self.scheduler.timesteps
        g = float(guidance_scale)
        for i, t in enumerate(timesteps):
            x, x0 = self._step(x, t, cond, uncond, g)
            _progress.progress(i + 1, len(timesteps))
            _progress.preview(lambda x0=x0: _preview_strip(x0.cpu()), step=i + 1)

        out_dir = Path(tempfile.mkdtemp(prefix="shapes-"))
        paths = []
        for k, img in enumerate(_to_images(x.cpu(), OUT_SIZE, Image.Resampling.BICUBIC)):
            paths.append(_save(img, out_dir / f"out-{k}.{output_format}", output_format))
        return paths

    def predict_batch(self, inputs: list[dict]) -> list[list[CogPath] | None]:
        """Several predictions in one denoising loop (replicate_jupyter.model.batching). Each
        member's noise comes from its own seed, drawn exactly as `predict` draws it, with its own
        labels, so its images are the ones it gets alone (up to float reduction order). A member
        canceled meanwhile loses its rows at the next step; the others carry on."""
        batch = _current_batch(len(inputs))
        size = self.config["model"]["size"]
        conds, unconds, noise, owner = [], [], [], []
        for i, inp in enumerate(inputs):
            seed, parsed, negative = _read_prompt(inp["prompt"], inp["negative_prompt"], inp["seed"],
                                                  functools.partial(batch.log, i))
            n = int(inp["num_outputs"])
            conds += [self._labels(parsed)] * n
            unconds += [self._labels(negative)] * n
            noise.append(torch.randn((n, 3, size, size), generator=torch.Generator().manual_seed(seed)))
            owner += [i] * n
        x = torch.cat(noise).to(self.device)
        cond = torch.tensor(conds, device=self.device)
        uncond = torch.tensor(unconds, device=self.device)
        owner_t = torch.tensor(owner)
        self.scheduler.set_timesteps(int(inputs[0]["num_inference_steps"]))
        timesteps = self.scheduler.timesteps
        g = float(inputs[0]["guidance_scale"])
        members = len(inputs)
        for step, t in enumerate(timesteps):
            keep = batch.active()
            if len(keep) < members:  # canceled members: their rows go
                rows = torch.isin(owner_t, torch.tensor(keep, dtype=owner_t.dtype))
                on_device = rows.to(self.device)
                x, cond, uncond, owner_t = x[on_device], cond[on_device], uncond[on_device], owner_t[rows]
                members = len(keep)
            x, x0 = self._step(x, t, cond, uncond, g)
            batch.progress(step + 1, len(timesteps))
            batch.preview(functools.partial(_member_preview, x0, owner_t), step + 1)

        out_dir = Path(tempfile.mkdtemp(prefix="shapes-"))
        images = _to_images(x.cpu(), OUT_SIZE, Image.Resampling.BICUBIC)
        outputs: list[list[CogPath] | None] = [None] * len(inputs)
        for i, inp in enumerate(inputs):
            fmt = inp["output_format"]
            mine = [img for img, o in zip(images, owner_t.tolist()) if o == i]
            if not mine:
                continue  # canceled: nothing to save
            saved: list[CogPath] = []
            for k, img in enumerate(mine):
                saved.append(_save(img, out_dir / f"out-{i}-{k}.{fmt}", fmt))
            outputs[i] = saved
        return outputs


def _read_prompt(prompt: str, negative_prompt: str, seed: int | None,
                 log: Callable[[str], Any]) -> tuple[int, Any, Any]:
    """The seed (drawn when none is given) and the parsed prompts, each said in the logs as the
    model reads it, plainly naming words that changed nothing and what it can draw instead."""
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    parsed, negative = _prompt.parse(prompt), _prompt.parse(negative_prompt)
    log(f"Using seed: {seed}")
    log(parsed.describe())
    if parsed.ignored:
        log(_ignored_note(parsed.ignored))
    if negative_prompt.strip():
        log("negative " + negative.describe())
    return seed, parsed, negative


def _save(img: Any, path: Path, fmt: str) -> CogPath:
    """An output image in its format (webp lossless: the pixels are the model's)."""
    img.save(path, format=fmt.upper(), **({"lossless": True} if fmt == "webp" else {}))
    return CogPath(path)
