"""`hf:REPO_ID` → a Cog predictor class wrapping a Hugging Face pipeline.

Two kinds are supported, decided from the repository's JSON alone (no weights are read, so
resolving a reference, showing its schema or validating input costs milliseconds):

- a diffusers text-to-image pipeline (`model_index.json`) → `diffusion.DiffusionPredictor`
  (text-to-image, image-to-image when an `image` is given), with step previews;
- a transformers causal language model (`config.json` with a `…ForCausalLM` architecture)
  → `text.TextPredictor`, streaming tokens.

Weights come ONLY from the local Hugging Face cache or a local folder (`hf:/path`, `hf:./dir`):
a notebook cell must never start a multi-gigabyte download on its own, and HF_HUB_OFFLINE
setups must behave the same as online ones. A missing repository is `ModelNotFound` naming the
exact command that downloads it. The returned class is generated per repository (own name,
own `version` = the cached commit), so the warm cache and the ledger tell models apart.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import threading
from dataclasses import dataclass

from replicate_jupyter.errors import ModelNotFound
from replicate_jupyter.hf.quiet import quiet_progress_bars

__all__ = ["predictor_class", "resolve", "Resolved", "download_command", "quiet_progress_bars"]

_classes: dict[tuple[str, str], type] = {}
_lock = threading.Lock()

_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


@dataclass(frozen=True)
class Resolved:
    """Where a repository's files are on disk and what kind of pipeline they hold."""

    ref: str  # as given after `hf:`
    folder: pathlib.Path
    version: str
    kind: str  # "diffusion" | "text"
    config: dict  # model_index.json (diffusion) or config.json (text)


def download_command(repo_id: str) -> str:
    return f"hf download {repo_id}"


def _is_path(ref: str) -> bool:
    return (ref.startswith(("/", "./", "../", "~", ".\\", "..\\")) or bool(re.match(r"^[A-Za-z]:[\\/]", ref))
            or ref in (".", ".."))


def _not_found(ref: str, detail: str) -> ModelNotFound:
    return ModelNotFound(f"hf:{ref}", detail=detail)


def _locate(ref: str) -> tuple[pathlib.Path, str]:
    """(folder, version) from a local path or the hub cache; never downloads.

    `hf:/abs`, `hf:./rel`, `hf:~/x` are folders; anything else is a repository id first (so a
    folder that happens to be called like a repo never shadows the cache), and a folder only
    when the cache does not have it."""
    if _is_path(ref):
        return _folder(ref)
    repo_id, _, revision = ref.partition("@")
    if not re.match(r"^[\w.-]+(/[\w.-]+)?$", repo_id) or repo_id.endswith((".", "-")):
        if os.path.isdir(ref):
            return _folder(ref)
        raise _not_found(ref, "not a Hugging Face repository id (expected hf:ORG/NAME, hf:ORG/NAME@REVISION, "
                              "or a folder: hf:/path/to/folder, hf:./folder)")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = _cache_dir(constants)
    try:
        snapshot = snapshot_download(repo_id, revision=revision or None, local_files_only=True, cache_dir=cache)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError) as exc:
        if os.path.isdir(ref):
            return _folder(ref)
        rev = f" --revision {revision}" if revision else ""
        raise _not_found(ref, (
            f"{repo_id}{'@' + revision if revision else ''} is not in the local Hugging Face cache "
            f"({cache}); hf: models are loaded only from the cache or a local folder, never "
            f"downloaded by a cell. Download it first in a terminal: `{download_command(repo_id)}{rev}` "
            f"(older clients: `huggingface-cli download {repo_id}{rev}`)"
            + ("" if isinstance(exc, LocalEntryNotFoundError) else f" [{type(exc).__name__}: {exc}]")
        )) from None
    folder = pathlib.Path(snapshot)
    return folder, folder.name[:16]


def _folder(ref: str) -> tuple[pathlib.Path, str]:
    folder = pathlib.Path(ref).expanduser().resolve()
    if not folder.is_dir():
        raise _not_found(ref, f"no such folder: {folder}")
    return folder, _folder_version(folder)


def _cache_dir(constants) -> str:
    """The hub cache as the environment says *now* (huggingface_hub reads it once at import, but a
    notebook may set HF_HOME / HF_HUB_CACHE in a cell after something imported it)."""
    env = os.environ
    if env.get("HF_HUB_CACHE"):
        return os.path.expanduser(env["HF_HUB_CACHE"])
    if env.get("HUGGINGFACE_HUB_CACHE"):
        return os.path.expanduser(env["HUGGINGFACE_HUB_CACHE"])
    if env.get("HF_HOME"):
        return os.path.join(os.path.expanduser(env["HF_HOME"]), "hub")
    return str(constants.HF_HUB_CACHE)


def _folder_version(folder: pathlib.Path) -> str:
    """A local folder's version: its files' names, sizes and modification times (cheap, and
    changes when weights are re-saved)."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and ".git" not in p.parts:
            st = p.stat()
            h.update(f"{p.relative_to(folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _read_json(path: pathlib.Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


_WEIGHTS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json", "*.pt", "*.ckpt")


def _has_weights(folder: pathlib.Path) -> bool:
    return any(next(folder.glob(g), None) is not None for g in _WEIGHTS)


def resolve(ref: str) -> Resolved:
    """Find `ref` on disk and decide its kind from its JSON; raises ModelNotFound."""
    ref = ref.strip()
    if not ref:
        raise _not_found(ref, "empty repository id (expected hf:ORG/NAME)")
    folder, version = _locate(ref)
    hint = "" if _is_path(ref) else f" Re-run `{download_command(ref.partition('@')[0])}` to complete it."
    index = folder / "model_index.json"
    if index.is_file():
        cfg = _read_json(index)
        if not cfg.get("_class_name"):
            raise _not_found(ref, f"{index} is not a diffusers model index (no _class_name)")
        missing = [name for name, spec in cfg.items()
                   if not name.startswith("_") and isinstance(spec, list) and len(spec) == 2 and spec[0] is not None
                   and not (folder / name).is_dir()]
        if missing:
            raise _not_found(ref, f"the diffusers pipeline at {folder} is incomplete (missing {', '.join(missing)}).{hint}")
        return Resolved(ref, folder, version, "diffusion", cfg)
    config = folder / "config.json"
    if config.is_file():
        cfg = _read_json(config)
        archs = [str(a) for a in (cfg.get("architectures") or [])]
        if archs and not any(a.endswith(_CAUSAL_SUFFIXES) for a in archs):
            raise _not_found(ref, (
                f"{folder.name} is a {', '.join(archs)} model; hf: runs diffusers text-to-image pipelines "
                "(model_index.json) and transformers causal language models (…ForCausalLM)"))
        if not archs and not cfg.get("model_type"):
            raise _not_found(ref, f"{config} names neither architectures nor model_type")
        if not _has_weights(folder):
            raise _not_found(ref, f"no weights (*.safetensors / *.bin) in {folder}.{hint}")
        return Resolved(ref, folder, version, "text", cfg)
    raise _not_found(ref, (f"{folder} has neither model_index.json (a diffusers pipeline) nor config.json "
                           "(a transformers model)"))


def _class_name(ref: str, kind: str) -> str:
    base = pathlib.Path(ref).name if _is_path(ref) else ref.partition("@")[0]
    words = re.split(r"[^0-9A-Za-z]+", base)
    camel = "".join(w[:1].upper() + w[1:] for w in words if w) or "Model"
    if camel[0].isdigit():
        camel = "M" + camel
    return f"HF{camel}{'Diffusion' if kind == 'diffusion' else 'Text'}Predictor"


def predictor_class(ref: str) -> type:
    """A Cog predictor class (subclass of `cog.BasePredictor`) for `hf:REF`.

    `cls()` is cheap; `setup()` loads the weights; `predict(**inputs)` runs the pipeline. The
    class carries `repo_id`, `folder`, `version` and `kind`. One class per (folder, version).
    """
    r = resolve(ref)
    key = (str(r.folder), r.version)
    with _lock:
        cls = _classes.get(key)
        if cls is not None:
            return cls
    if r.kind == "diffusion":
        from replicate_jupyter.hf.diffusion import make_class
    else:
        from replicate_jupyter.hf.text import make_class
    cls = make_class(_class_name(ref, r.kind), r)
    with _lock:
        return _classes.setdefault(key, cls)
