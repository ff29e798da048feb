"""What the `[local]` extra brings, and how a model that needs it fails without it.

The base install (`pip install replicate-jupyter`) has no torch, diffusers or transformers; the
embedded models (`local/shapes`, `local/tiny-lm`) and `hf:` pipelines import them, in their
files or in `setup()`. Left alone, that surfaces as a raw `ModuleNotFoundError` after the run
was dispatched; checked here when a model is resolved (`require`), it is one `MissingExtra`
that names the pip command, before anything runs or is charged. The check finds modules
without importing them, so a listing (`needs_extra`) stays light.
"""
from __future__ import annotations

import importlib.util
import sys
from typing import Any

from replicate_jupyter.errors import ModelNotFound

__all__ = ["MissingExtra", "needs_extra", "missing_modules", "require", "extra_import_error", "LOCAL_INSTALL",
           "EMBEDDED_NEEDS", "HF_NEEDS"]

#: the command that installs what the embedded and hf: models need
LOCAL_INSTALL = "pip install 'replicate-jupyter[local]'"
#: the packages the [local] extra brings (pyproject.toml) that a model may import
_EXTRA_ROOTS = frozenset({"torch", "diffusers", "transformers", "accelerate", "safetensors", "tokenizers",
                          "huggingface_hub", "numpy"})
#: what each embedded model imports from the extra, in its file or in its setup()
EMBEDDED_NEEDS: dict[str, tuple[str, ...]] = {
    "local/shapes": ("torch", "diffusers", "safetensors"),
    "local/tiny-lm": ("torch", "transformers", "safetensors"),
}
#: what an hf: model needs before it is resolved (the hub cache), then by its kind
HF_NEEDS: dict[str, tuple[str, ...]] = {"": ("torch", "huggingface_hub"), "diffusion": ("diffusers",),
                                         "text": ("transformers",)}


class MissingExtra(ModelNotFound):
    """A model this install cannot run because the `[local]` extra is not installed (the base
    install has no torch): raised when it is resolved, so nothing is dispatched or charged."""

    def __init__(self, ref: str, missing: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(ref, backend="local")
        self.missing = tuple(missing)
        self.extra = "local"
        msg = f"{ref} needs the [local] extra: {LOCAL_INSTALL}"
        if self.missing:
            msg += f" (not installed: {', '.join(self.missing)})"
        self.args = (msg,)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.ref, self.missing))


def _installed(module: str) -> bool:
    """Whether `module` can be imported, found without importing it (a listing must stay light)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, or a broken __spec__
        return False


def missing_modules(modules: tuple[str, ...] | list[str]) -> list[str]:
    """The ones of `modules` this install lacks."""
    return [m for m in modules if not _installed(m)]


def needs_extra(name: str) -> str | None:
    """For a listing: "needs the [local] extra: pip install …" when `name` is an embedded model
    (or an `hf:` one) this install cannot run, else None."""
    if name in EMBEDDED_NEEDS:
        needs = EMBEDDED_NEEDS[name]
    elif name.startswith("hf:"):
        needs = HF_NEEDS[""]
    else:
        return None
    return f"needs the [local] extra: {LOCAL_INSTALL}" if missing_modules(needs) else None


def require(ref: str, modules: tuple[str, ...]) -> None:
    """Raise MissingExtra for `ref` when any of `modules` is not installed."""
    missing = missing_modules(modules)
    if missing:
        raise MissingExtra(ref, missing)


def extra_import_error(ref: str, exc: ModuleNotFoundError) -> MissingExtra | None:
    """A ModuleNotFoundError for a package of the extra, met while loading `ref`, as MissingExtra."""
    root = (exc.name or "").partition(".")[0]
    return MissingExtra(ref, [root]) if root in _EXTRA_ROOTS else None
