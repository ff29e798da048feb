"""Model reference → predictor class.

References: a class or an instance handed in; `path/to/predict.py:Predictor`; `predict.py`
(the one predictor class in it); a folder (or `cog.yaml`) whose `predict:`/`run:` names the class;
`local/NAME` for the embedded models; `hf:REPO_ID` for Hugging Face pipelines. The same file
runs unchanged on Cog, so nothing here asks more of a predictor than Cog does.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib.util
import inspect
import os
import pathlib
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from replicate_jupyter.errors import ModelNotFound

__all__ = ["PredictorSpec", "load", "known_names", "register", "predict_method"]

_registered: dict[str, Any] = {}
_cache: dict[Any, "PredictorSpec"] = {}
_lock = threading.Lock()


@dataclass
class PredictorSpec:
    """Everything a runner needs to run a predictor: how to make it, what it's called, its schema."""

    name: str
    key: str
    cls: type
    version: str | None = None
    instance: Any = None  # when an object (not a class) was handed in
    source: str | None = None  # "file.py:Class" when it came from disk (workers serve this)
    _schema: dict | None = field(default=None, repr=False)

    def make(self) -> Any:
        return self.instance if self.instance is not None else self.cls()

    @property
    def schema(self) -> dict:
        if self._schema is None:
            from replicate_jupyter.model.schema import build_schema

            self._schema = build_schema(self.cls, name=self.name)
        return self._schema


def register(name: str, predictor: Any) -> None:
    """Give a predictor (class, instance or reference string) a model name, e.g. `me/captioner`."""
    with _lock:
        _registered[name] = predictor
        _cache.pop(name, None)


def known_names() -> list[str]:
    from replicate_jupyter.models import EMBEDDED

    return sorted(set(EMBEDDED) | set(_registered))


def predict_method(obj: Any) -> Callable:
    """`run` for cog's BaseRunner style, else `predict` (bound or unbound)."""
    cls = obj if isinstance(obj, type) else type(obj)
    for name in ("run", "predict"):
        fn = getattr(cls, name, None)
        if fn is None:
            continue
        owner = next((k for k in cls.__mro__ if name in k.__dict__), None)
        if owner is not None and owner.__module__.startswith("cog."):
            continue  # the SDK's abstract placeholder, not the model's own method
        return getattr(obj, name)
    raise TypeError(f"{cls.__name__} has no predict() or run() method")


def load(ref: Any, name: str | None = None) -> PredictorSpec:
    """Resolve a model reference to a PredictorSpec (cached: resolving is on every run's path)."""
    key = ref if isinstance(ref, (str, type)) else id(ref)
    spec = _cache.get((key, name))
    if spec is not None:
        return spec
    spec = _load(ref, name)
    with _lock:
        _cache[(key, name)] = spec
    return spec


def _load(ref: Any, name: str | None) -> PredictorSpec:
    if isinstance(ref, type):
        return PredictorSpec(name=name or f"local/{_slug(ref.__name__)}", key=f"class:{id(ref)}", cls=ref,
                             version=_class_version(ref))
    if not isinstance(ref, (str, os.PathLike)):
        if hasattr(ref, "predict") or hasattr(ref, "run"):
            return PredictorSpec(name=name or f"local/{_slug(type(ref).__name__)}", key=f"object:{id(ref)}",
                                 cls=type(ref), instance=ref, version=_class_version(type(ref)))
        raise TypeError(f"Not a model reference: {ref!r} (give a name, a path, or a predictor class)")
    ref = os.fspath(ref)
    if ref in _registered:
        target = _registered[ref]
        return _load(target, name or ref)
    if ref.startswith("hf:"):
        from replicate_jupyter import hf

        cls = hf.predictor_class(ref[3:])
        return PredictorSpec(name=name or ref, key=ref, cls=cls, version=getattr(cls, "version", None))
    if ref.startswith("local/"):
        from replicate_jupyter.models import EMBEDDED

        if ref in EMBEDDED:
            return _from_file_ref(EMBEDDED[ref], name or ref)
    path_part = ref.split(":", 1)[0] if ":" in ref and not _looks_like_windows_drive(ref) else ref
    if os.path.exists(path_part):
        p = pathlib.Path(path_part)
        if p.is_dir() or p.name == "cog.yaml":
            return _from_cog_yaml(p if p.is_dir() else p.parent, name)
        return _from_file_ref(ref, name)
    if ref.endswith(".py") or ".py:" in ref:
        raise ModelNotFound(ref, detail=f"no such file: {path_part}")
    raise ModelNotFound(ref, suggestions=difflib.get_close_matches(ref, known_names(), n=3, cutoff=0.4), backend="local")


def _looks_like_windows_drive(ref: str) -> bool:
    return len(ref) > 2 and ref[1] == ":" and ref[0].isalpha() and ref[2] in "\\/"


def _from_cog_yaml(folder: pathlib.Path, name: str | None) -> PredictorSpec:
    import yaml

    cfg_path = folder / "cog.yaml"
    if not cfg_path.exists():
        raise ModelNotFound(str(folder), detail="the folder has no cog.yaml")
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    target = cfg.get("run") or cfg.get("predict")
    if not target:
        raise ModelNotFound(str(cfg_path), detail="cog.yaml has no 'predict:' (or 'run:') entry")
    file_part, _, cls_name = str(target).partition(":")
    return _from_file_ref(f"{folder / file_part}:{cls_name}" if cls_name else str(folder / file_part),
                          name or f"local/{_slug(folder.resolve().name)}")


def _from_file_ref(ref: str, name: str | None) -> PredictorSpec:
    file_part, _, cls_name = ref.rpartition(":") if ref.count(":") and not ref.endswith(".py") else (ref, "", "")
    path = pathlib.Path(file_part).resolve()
    if not path.exists():
        raise ModelNotFound(ref, detail=f"no such file: {path}")
    module = _import_file(path)
    if cls_name:
        cls = getattr(module, cls_name, None)
        if cls is None:
            classes = [n for n, v in vars(module).items() if isinstance(v, type) and v.__module__ == module.__name__]
            raise ModelNotFound(ref, suggestions=difflib.get_close_matches(cls_name, classes, n=3, cutoff=0.3),
                                detail=f"{path.name} has no class {cls_name!r}")
    else:
        cls = _only_predictor(module, path)
    stem = path.parent.name if path.stem in ("predict", "run", "runner", "predictor") else path.stem
    return PredictorSpec(
        name=name or f"local/{_slug(stem)}",
        key=f"{path}:{cls.__name__}",
        cls=cls,
        version=hashlib.sha256(path.read_bytes()).hexdigest()[:16],
        source=f"{path}:{cls.__name__}",
    )


def _only_predictor(module: Any, path: pathlib.Path) -> type:
    found = [v for v in vars(module).values()
             if isinstance(v, type) and v.__module__ == module.__name__ and (hasattr(v, "predict") or hasattr(v, "run"))]
    if len(found) == 1:
        return found[0]
    named = [c for c in found if c.__name__ in ("Predictor", "Runner")]
    if len(named) == 1:
        return named[0]
    raise ModelNotFound(str(path), detail="name the class: file.py:ClassName (found "
                        + (", ".join(c.__name__ for c in found) or "no predictor class") + ")")


def _import_file(path: pathlib.Path) -> Any:
    mod_name = "rj_predictor_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    mtime = path.stat().st_mtime_ns
    existing = sys.modules.get(mod_name)
    if existing is not None and getattr(existing, "__rj_mtime__", None) == mtime:
        return existing
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # sibling imports work as they do under Cog
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException:
        sys.modules.pop(mod_name, None)
        raise
    module.__rj_mtime__ = mtime
    return module


def _class_version(cls: type) -> str | None:
    try:
        return hashlib.sha256(inspect.getsource(cls).encode()).hexdigest()[:16]
    except (OSError, TypeError):
        return None


def _slug(text: str) -> str:
    out = []
    for i, ch in enumerate(text):
        if ch.isupper() and i and (text[i - 1].islower() or text[i - 1].isdigit()):
            out.append("-")
        out.append(ch.lower() if ch.isalnum() else "-")
    return "".join(out).strip("-") or "model"
