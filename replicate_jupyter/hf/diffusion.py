"""A diffusers text-to-image / image-to-image pipeline as a Cog predictor.

Inputs follow Replicate's stability-ai/sdxl page (prompt, negative_prompt, image, prompt_strength,
width, height, num_outputs, num_inference_steps, guidance_scale, seed) plus output_format. Width
and height default to the pipeline's native size, read from the UNet/VAE configs at resolve time.

Each step reports progress and, when a display wants one, a preview through `previews`' linear
latent→RGB projection (never a VAE decode). Cancel sets `pipe._interrupt` (via
`progress.diffusers_callback`) and the run ends at the next step with `Canceled` (without the
final decode of a partial image nobody receives), so the prediction ends `canceled`, with the
pipeline ready for the next run.

Several predictions of one pipeline with the same size, steps and guidance run as one batch
(`predict_batch`, replicate_jupyter.model.batching): one pipeline call with a list of prompts,
each member's noise drawn from its own seed exactly as diffusers draws it for one prediction (so
a seed gives the same image alone and batched, up to float reduction order), per-member previews
from the batch's latents. A member canceled meanwhile is dropped by the runner and its images
are computed anyway (a diffusers call cannot shrink its batch mid-loop); image-to-image
predictions run alone.
"""
from __future__ import annotations

import inspect
import os
import pathlib
import tempfile
from typing import Any, Optional

from cog import BasePredictor, Input, Path

from replicate_jupyter import progress
from replicate_jupyter.errors import Canceled, InputError, Problem
from replicate_jupyter.hf.quiet import quiet_progress_bars
from replicate_jupyter.model.batching import batchable, current_batch

__all__ = ["DiffusionPredictor", "make_class", "native_size"]

MAX_SIZE = 2048


def native_size(folder: pathlib.Path, index: dict) -> int:
    """The pipeline's default image side: UNet sample size × VAE downscale (512 SD, 1024 SDXL)."""
    import json

    def read(name: str) -> dict:
        try:
            return json.loads((folder / name / "config.json").read_text())
        except (OSError, ValueError):
            return {}

    vae = read("vae")
    factor = 2 ** (len(vae.get("block_out_channels") or [0, 0, 0, 0]) - 1)
    for comp in ("unet", "transformer"):
        sample = read(comp).get("sample_size")
        if isinstance(sample, int) and sample > 0:
            side = sample * factor
            if comp == "transformer" and side < 256:  # DiT configs often give the patch grid, not latents
                side = 1024
            return max(64, min(MAX_SIZE, side - side % 8))
    return 1024 if "XL" in str(index.get("_class_name", "")) else 512


class DiffusionPredictor(BasePredictor):
    """Base of the generated per-repository classes (which set `folder`, `repo_id`, `version`)."""

    folder: str = ""
    repo_id: str = ""
    version: str | None = None
    kind = "diffusion"

    def setup(self) -> None:
        import torch
        from diffusers import AutoPipelineForText2Image

        from replicate_jupyter.hf.previews import LatentPreviewer

        self.device = progress.device()
        dtype = torch.float16 if self.device == "cuda" else torch.float32
        kwargs: dict[str, Any] = {_dtype_kwarg(): dtype, "local_files_only": True}
        variant = _variant(pathlib.Path(self.folder), want_fp16=self.device == "cuda")
        if variant:
            kwargs["variant"] = variant
        with quiet_progress_bars():
            self.pipe = AutoPipelineForText2Image.from_pretrained(self.folder, **kwargs)
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self._img2img = None
        self.previewer = LatentPreviewer.for_pipeline(self.pipe)
        progress.log(f"Loaded {self.repo_id} ({type(self.pipe).__name__}) on {self.device} in {str(dtype).split('.')[-1]}"
                     + (f"; previews: {self.previewer.source} latent→RGB projection" if self.previewer else ""))

    def img2img_pipe(self) -> Any:
        """The image-to-image pipeline over the same components (no extra weights loaded)."""
        if self._img2img is None:
            from diffusers import AutoPipelineForImage2Image

            img2img: Any = AutoPipelineForImage2Image.from_pipe(self.pipe)
            img2img.set_progress_bar_config(disable=True)
            self._img2img = img2img
        return self._img2img

    def run_pipeline(self, prompt: str, negative_prompt: str, image: Optional[Path], prompt_strength: float,
                     width: int, height: int, num_outputs: int, num_inference_steps: int, guidance_scale: float,
                     seed: Optional[int], output_format: str) -> list[Path]:
        import torch

        if seed is None:
            seed = int.from_bytes(os.urandom(2), "big")
        progress.log(f"Using seed: {seed}")
        generator = torch.Generator(device="cpu").manual_seed(int(seed) % 2**32)

        if image is not None:
            try:
                pipe = self.img2img_pipe()
            except ValueError as exc:
                raise InputError([Problem("image", "unsupported", str(image), "left blank: "
                                          f"{type(self.pipe).__name__} has no image-to-image mode ({exc})")],
                                 model=f"hf:{self.repo_id}") from None
            init = _load_image(image)
            strength = float(prompt_strength)
            if strength * num_inference_steps < 1:
                strength = 1.0 / num_inference_steps
                progress.log(f"prompt_strength {prompt_strength} leaves no denoising step out of {num_inference_steps}; "
                             f"using {strength:.3f} (one step)")
            total = min(int(num_inference_steps * strength), num_inference_steps)
            kwargs: dict[str, Any] = {"image": init, "strength": strength}
            progress.log(f"img2img from a {init.width}×{init.height} image, strength {strength}")
        else:
            problems = [Problem(name, "multiple_of", value, "a multiple of 8")
                        for name, value in (("width", width), ("height", height)) if value % 8]
            if problems:  # (the schema has no multipleOf: Cog's Input cannot say it)
                raise InputError(problems, model=f"hf:{self.repo_id}")
            pipe = self.pipe
            total = num_inference_steps
            kwargs = {"width": width, "height": height}

        accepted = set(inspect.signature(pipe.__call__).parameters)
        if negative_prompt and "negative_prompt" in accepted:
            kwargs["negative_prompt"] = negative_prompt
        if "guidance_scale" in accepted:
            kwargs["guidance_scale"] = guidance_scale
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}

        callback = self._callback(pipe, total, width, height)
        try:
            result = pipe(prompt=prompt, num_images_per_prompt=num_outputs, num_inference_steps=num_inference_steps,
                          generator=generator, callback_on_step_end=callback,
                          callback_on_step_end_tensor_inputs=["latents"], output_type="pil", **kwargs)
        finally:
            pipe._interrupt = False
            free = getattr(pipe, "maybe_free_model_hooks", None)
            if callable(free):
                free()
        if progress.canceled():
            raise Canceled("prediction canceled")
        nsfw = getattr(result, "nsfw_content_detected", None)
        if nsfw and any(nsfw):
            progress.log(f"The safety checker flagged {sum(bool(x) for x in nsfw)} image(s); they are blacked out.")
        out_dir = pathlib.Path(tempfile.mkdtemp(prefix="rj-hf-"))
        paths = []
        for i, img in enumerate(result.images):
            path = out_dir / f"out-{i}.{output_format}"
            if output_format == "webp":
                img.save(path, format="WEBP", quality=90)
            else:
                img.save(path, format="PNG")
            paths.append(Path(path))
        return paths

    def predict_batch(self, inputs: list[dict]) -> list[Any]:
        """Text-to-image for several members in one pipeline call (see the module docstring)."""
        import torch

        batch = current_batch(len(inputs))
        first = inputs[0]
        width, height, steps = int(first["width"]), int(first["height"]), int(first["num_inference_steps"])
        problems = [Problem(name, "multiple_of", value, "a multiple of 8")
                    for name, value in (("width", width), ("height", height)) if value % 8]
        if problems:
            raise InputError(problems, model=f"hf:{self.repo_id}")
        pipe = self.pipe
        accepted = set(inspect.signature(pipe.__call__).parameters)
        shape = _latent_shape(pipe, accepted, width, height)
        device = getattr(pipe, "_execution_device", self.device)
        encoder = getattr(pipe, "text_encoder", None) or getattr(pipe, "unet", None)
        dtype = getattr(encoder, "dtype", torch.float32)
        prompts, negatives, owner, noise, generators = [], [], [], [], []
        for i, inp in enumerate(inputs):
            seed = inp["seed"] if inp["seed"] is not None else int.from_bytes(os.urandom(2), "big")
            batch.log(i, f"Using seed: {seed}")
            gen = torch.Generator(device="cpu").manual_seed(int(seed) % 2**32)
            n = int(inp["num_outputs"])
            prompts += [inp["prompt"]] * n
            negatives += [inp["negative_prompt"]] * n
            owner += [i] * n
            if shape is not None:  # what prepare_latents draws from this seed for this prediction alone
                from diffusers.utils.torch_utils import randn_tensor

                noise.append(randn_tensor((n, *shape), generator=gen, device=torch.device(device), dtype=dtype))
            else:
                generators += [gen] * n
        kwargs: dict[str, Any] = {"width": width, "height": height, "guidance_scale": first["guidance_scale"]}
        if any(negatives):
            kwargs["negative_prompt"] = negatives
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
        if noise:
            kwargs["latents"] = torch.cat(noise)
        else:
            kwargs["generator"] = generators
        owner_t = torch.tensor(owner)
        previewer = self.previewer
        if previewer is not None:
            unpack = getattr(pipe, "_unpack_latents", None)
            factor = getattr(pipe, "vae_scale_factor", 8)
            previewer.unpack = (lambda lat: unpack(lat, height, width, factor)) if callable(unpack) else None

        def callback(p, step_index, timestep, callback_kwargs):
            batch.progress(step_index + 1, steps)  # raises Canceled once no member is left
            lat = callback_kwargs.get("latents")
            if previewer is not None and lat is not None and lat.ndim == 4 and lat.shape[1] == previewer.weight.shape[0]:
                batch.preview(lambda i: previewer(lat[(owner_t == i).to(lat.device)]), step_index + 1)
            return callback_kwargs

        try:
            result = pipe(prompt=prompts, num_images_per_prompt=1, num_inference_steps=steps, callback_on_step_end=callback,
                          callback_on_step_end_tensor_inputs=["latents"], output_type="pil", **kwargs)
        finally:
            pipe._interrupt = False
            free = getattr(pipe, "maybe_free_model_hooks", None)
            if callable(free):
                free()
        nsfw = list(getattr(result, "nsfw_content_detected", None) or [])
        out_dir = pathlib.Path(tempfile.mkdtemp(prefix="rj-hf-"))
        outputs: list[Any] = []
        for i, inp in enumerate(inputs):
            rows = [k for k, o in enumerate(owner) if o == i]
            flagged = sum(bool(nsfw[k]) for k in rows if k < len(nsfw))
            if flagged:
                batch.log(i, f"The safety checker flagged {flagged} image(s); they are blacked out.")
            outputs.append(None if batch.canceled(i) else
                           [_save(result.images[k], out_dir / f"out-{i}-{j}.{inp['output_format']}", inp["output_format"])
                            for j, k in enumerate(rows)])
        return outputs

    def _callback(self, pipe: Any, total: int, width: int, height: int) -> Any:
        """`progress.diffusers_callback` with this pipeline's cheap previewer (latents it cannot
        show, e.g. an unknown packing, just skip the preview).

        On cancel the helper sets `pipe._interrupt`; diffusers would then still VAE-decode the
        partial latents (24 s for an SD-size VAE on a CPU) into an image nobody gets, so once the
        interrupt is set this raises `Canceled` and the run ends at this step."""
        previewer = self.previewer
        if previewer is not None:
            unpack = getattr(pipe, "_unpack_latents", None)
            factor = getattr(pipe, "vae_scale_factor", 8)
            previewer.unpack = (lambda lat: unpack(lat, height, width, factor)) if callable(unpack) else None
        base = progress.diffusers_callback(total, latents_to_image=previewer)

        def callback(p, step_index, timestep, callback_kwargs):
            lat = callback_kwargs.get("latents")
            showable = previewer is not None and lat is not None and (
                (lat.ndim == 4 and lat.shape[1] == previewer.weight.shape[0])
                or (lat.ndim == 3 and previewer.unpack is not None))
            if showable:
                out = base(p, step_index, timestep, callback_kwargs)
            else:
                base(p, step_index, timestep, {k: v for k, v in callback_kwargs.items() if k != "latents"})
                out = callback_kwargs
            if getattr(p, "_interrupt", False) and progress.canceled():
                raise Canceled("prediction canceled")
            return out

        return callback


def _latent_shape(pipe: Any, accepted: set, width: int, height: int) -> tuple[int, int, int] | None:
    """(channels, h, w) of one image's initial latents, for the Stable Diffusion (XL) pipelines
    whose `prepare_latents` draws `randn((n, C, H/f, W/f))` from the generator; None for others
    (they get one generator per image: the same image alone for predictions of one output)."""
    unet = getattr(pipe, "unet", None)
    if unet is None or "latents" not in accepted or type(pipe).__name__ not in (
            "StableDiffusionPipeline", "StableDiffusionXLPipeline"):
        return None
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    return int(unet.config.in_channels), height // factor, width // factor


def _save(img: Any, path: pathlib.Path, output_format: str) -> Path:
    if output_format == "webp":
        img.save(path, format="WEBP", quality=90)
    else:
        img.save(path, format="PNG")
    return Path(path)


def _dtype_kwarg() -> str:
    """diffusers ≥ 0.40 calls it `dtype` (and warns on `torch_dtype`); older ones only know `torch_dtype`."""
    try:
        from diffusers.utils import deprecation_utils

        return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
    except ImportError:
        return "torch_dtype"


def _variant(folder: pathlib.Path, want_fp16: bool) -> str | None:
    """`fp16` when the repo has fp16 weight files and we want them, or has nothing else."""
    fp16 = any(folder.glob("*/*.fp16.safetensors")) or any(folder.glob("*/*.fp16.bin"))
    if not fp16:
        return None
    plain = [p for p in folder.glob("*/*.safetensors") if ".fp16." not in p.name] + \
            [p for p in folder.glob("*/*.bin") if ".fp16." not in p.name]
    return "fp16" if (want_fp16 or not plain) else None


def _load_image(image: Any) -> Any:
    from PIL import Image, ImageOps

    img = Image.open(image) if not hasattr(image, "convert") else image
    img = ImageOps.exif_transpose(img).convert("RGB")
    w, h = img.width - img.width % 8, img.height - img.height % 8
    if (w, h) != img.size:
        img = img.resize((max(8, w), max(8, h)))
    return img


def make_class(name: str, resolved: Any) -> type:
    """A DiffusionPredictor subclass for one repository: its own name, version and defaults."""
    size = native_size(resolved.folder, resolved.config)
    default_steps = 4 if "turbo" in resolved.ref.lower() or "lightning" in resolved.ref.lower() else 30
    default_guidance = 0.0 if default_steps == 4 else 7.5

    def predict(
        self,
        prompt: str = Input(description="Input prompt", default="An astronaut riding a rainbow unicorn"),
        negative_prompt: str = Input(description="Input negative prompt", default=""),
        image: Path = Input(description="Input image for img2img mode (leave blank for text-to-image)", default=None),
        prompt_strength: float = Input(
            description="Prompt strength when using img2img. 1.0 corresponds to full destruction of information in image",
            ge=0.0, le=1.0, default=0.8),
        width: int = Input(description="Width of output image (a multiple of 8)", ge=64, le=MAX_SIZE, default=size),
        height: int = Input(description="Height of output image (a multiple of 8)", ge=64, le=MAX_SIZE, default=size),
        num_outputs: int = Input(description="Number of images to output.", ge=1, le=4, default=1),
        num_inference_steps: int = Input(description="Number of denoising steps", ge=1, le=100, default=default_steps),
        guidance_scale: float = Input(description="Scale for classifier-free guidance", ge=0.0, le=20.0,
                                      default=default_guidance),
        seed: int = Input(description="Random seed. Leave blank to randomize the seed", default=None),
        output_format: str = Input(description="Format of the output images", choices=["webp", "png"], default="webp"),
    ) -> list[Path]:
        return self.run_pipeline(prompt, negative_prompt, image, prompt_strength, width, height, num_outputs,
                                 num_inference_steps, guidance_scale, seed, output_format)

    # text-to-image predictions of one size, step count and guidance batch (predict_batch); a
    # negative prompt given or not must agree (SDXL encodes a missing one as zeros, "" otherwise)
    predict = batchable(max_batch=8, vary=("prompt", "negative_prompt", "seed", "num_outputs", "output_format",
                                           "prompt_strength"), weight="num_outputs",
                        alone=lambda inp: inp.get("image") is not None,
                        group=lambda inp: bool(inp.get("negative_prompt")))(predict)

    predict.__qualname__ = f"{name}.predict"
    attrs = {
        "__module__": __name__,
        "__doc__": f"hf:{resolved.ref} — diffusers {resolved.config.get('_class_name')} (text-to-image; "
                   "image-to-image when `image` is given).",
        "folder": str(resolved.folder),
        "repo_id": resolved.ref,
        "version": resolved.version,
        "predict": predict,
    }
    return type(name, (DiffusionPredictor,), attrs)
