"""Tiny Hugging Face pipelines built offline, for tests that need real diffusers/transformers models.

Nothing here downloads: weights are random, tokenizers come from in-memory byte vocabularies, and
`populate_hf_cache` lays a saved folder out exactly like a hub cache entry, so `hf:org/name`
resolves with HF_HUB_OFFLINE=1. The shapes follow diffusers' own tests (`get_dummy_components`):
generation of a 64×64 image in 2 steps takes ~0.2 s on a CPU, a saved pipeline is ~8 MB.

    build_tiny_sd(tmp / "sd")                  # diffusers StableDiffusionPipeline folder
    build_tiny_gpt2(tmp / "gpt2")              # transformers GPT-2 folder (model + tokenizer)
    populate_hf_cache(tmp / "hub", "tiny/sd", tmp / "sd")   # → HF_HUB_CACHE=tmp/"hub"

`predictors.load` caches a resolved `hf:` reference for the whole process, so tests in different
modules that build their own caches should use their own repo ids (e.g. `tiny/sd-mytest`).
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil

__all__ = ["build_tiny_sd", "build_tiny_gpt2", "populate_hf_cache", "byte_vocab"]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-char table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def byte_vocab(end_of_word: bool = False, specials: tuple[str, ...] = ("<|endoftext|>",)) -> dict[str, int]:
    """A vocabulary of the 256 byte characters (and, for CLIP, the same with `</w>`) + specials."""
    chars = list(_bytes_to_unicode().values())
    tokens = chars + ([c + "</w>" for c in chars] if end_of_word else [])
    tokens += [s for s in specials if s not in tokens]
    return {t: i for i, t in enumerate(tokens)}


def build_tiny_sd(path: str | os.PathLike, seed: int = 0) -> pathlib.Path:
    """Save a tiny StableDiffusionPipeline (random weights) to `path`; returns the path.

    The folder has `model_index.json`, so `AutoPipelineForText2Image` / `...Image2Image` load it.
    """
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    path = pathlib.Path(path)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4,
    )
    vocab = byte_vocab(end_of_word=True, specials=("<|startoftext|>", "<|endoftext|>"))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"],
        hidden_size=32, intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=4,
        num_hidden_layers=5, vocab_size=len(vocab), max_position_embeddings=77,
    ))
    pipe = StableDiffusionPipeline(unet=unet, scheduler=scheduler, vae=vae, text_encoder=text_encoder,
                                   tokenizer=tokenizer, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(path)
    return path


def build_tiny_gpt2(path: str | os.PathLike, seed: int = 0, chat_template: str | None = None) -> pathlib.Path:
    """Save a tiny GPT-2 causal LM (random weights, byte-level tokenizer) to `path`, optionally
    with a chat template on the tokenizer (as instruction-tuned models have)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    path = pathlib.Path(path)
    vocab = byte_vocab()
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=[])
    if chat_template:
        tokenizer.chat_template = chat_template
    eos = vocab["<|endoftext|>"]
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_positions=1024, n_embd=32, n_layer=2, n_head=2,
                                       bos_token_id=eos, eos_token_id=eos))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def populate_hf_cache(cache_dir: str | os.PathLike, repo_id: str, folder: str | os.PathLike,
                      revision: str = "main") -> pathlib.Path:
    """Lay `folder` out as a hub cache entry: `models--org--name/{blobs,snapshots/<sha>,refs/main}`.

    Files are stored as blobs named by their sha256 and linked from the snapshot, as
    `huggingface_hub` does, so `snapshot_download(repo_id, local_files_only=True)` finds them.
    Point `HF_HUB_CACHE` (or `HF_HOME`'s `hub/`) at `cache_dir`. Returns the snapshot folder.
    """
    cache_dir = pathlib.Path(cache_dir)
    folder = pathlib.Path(folder)
    repo = cache_dir / ("models--" + repo_id.replace("/", "--"))
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    commit = hashlib.sha1("".join(str(p.relative_to(folder)) for p in files).encode()
                          + repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for f in files:
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            shutil.copyfile(f, blob)
        target = snapshot / f.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        try:
            target.symlink_to(os.path.relpath(blob, target.parent))
        except OSError:  # no symlinks (Windows without developer mode): hub falls back to copies too
            shutil.copyfile(blob, target)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot


if __name__ == "__main__":  # quick manual check: python tests/tiny_pipelines.py OUTDIR
    import sys
    import time

    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/rj-tiny")
    t = time.perf_counter()
    build_tiny_sd(out / "sd")
    print(f"sd built in {time.perf_counter() - t:.2f}s")
    t = time.perf_counter()
    build_tiny_gpt2(out / "gpt2")
    print(f"gpt2 built in {time.perf_counter() - t:.2f}s")
    print(json.dumps(sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()), indent=1))
