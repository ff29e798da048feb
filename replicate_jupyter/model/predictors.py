"""Model reference → `PredictorSpec`: what a runner needs to run a predictor, as Cog would.

References: a class, an instance or a function handed in; `path/to/predict.py:Name` (a class or
a function); `predict.py` (its `Runner`, else its `Predictor`, else its one predictor class); a
folder (or its `cog.yaml`) whose `run:`/`predict:` names the target; `local/NAME` for the
embedded models; `hf:REPO_ID` for Hugging Face pipelines; a name given with `register()`.

The embedded and `hf:` models need the `[local]` extra (torch, diffusers, transformers). On the
base install, resolving one is a `MissingExtra` (a `ModelNotFound`) that says the pip command,
before anything is dispatched or charged, never a raw `ModuleNotFoundError` from inside a
predictor's file or its setup; `needs_extra(name)` says the same for a listing, without
importing anything heavy (both from model/extras.py).

Loading (the import of a predictor file, and of torch with it) runs off the main thread, so a
kernel interrupt never lands inside an import (model/loader.py). Resolving is on every run's
path, so specs are cached, but never past an edit: a file-based spec is reused only while its
files (the predictor file and the siblings it imports) are unchanged (one `stat` each); after
an edit `load()` returns a new spec with a new class, a new `version` and a new `key`, whose
`replaces` names the key it supersedes (so a runner can release the old warm instance).
Objects handed in are not kept alive by the cache or by finished predictions.
"""
from __future__ import annotations

import difflib
import hashlib
import inspect
import os
import pathlib
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from replicate_jupyter.errors import ModelNotFound
from replicate_jupyter.model import loader, sources
from replicate_jupyter.model.extras import EMBEDDED_NEEDS, HF_NEEDS, MissingExtra, extra_import_error, needs_extra, require

__all__ = ["PredictorSpec", "load", "known_names", "register", "predict_method", "function_predictor",
           "MissingExtra", "needs_extra"]


@dataclass(eq=False)
class PredictorSpec:
    """Everything a runner needs to run a predictor: how to make it, what it's called, its
    schema, and the Cog context it runs in (folder, environment, concurrency, weights)."""

    name: str
    key: str  # changes with `version`: a warm cache keyed by it never serves stale code
    cls: type
    version: str | None = None  # content hash of the code that runs
    instance: Any = None  # an object handed in (held weakly once made; see `make`)
    source: str | None = None  # "/abs/file.py:Name" when it came from disk (workers serve this)
    folder: pathlib.Path | None = None  # the model's folder (cog.yaml's, else the file's)
    target: str | None = None  # cog.yaml's run:/predict: string, or "file.py:Name"
    environment: dict[str, str] = field(default_factory=dict)  # cog.yaml environment:
    concurrency: int | None = None  # cog.yaml concurrency.max or @cog.concurrent(max=N)
    weights: str | None = None  # a path or URL for setup(weights=...), else COG_WEIGHTS
    function: Callable[..., Any] | None = None  # the function, for function targets
    files: tuple[pathlib.Path, ...] = ()  # the files the version hashes
    missing_packages: list[str] = field(default_factory=list)  # cog.yaml packages not installed
    replaces: str | None = None  # the key of the spec this one superseded after an edit
    _schema: dict | None = field(default=None, repr=False)

    def make(self) -> Any:
        """The predictor object (not set up): the instance handed in, else a new one."""
        if getattr(self, "_weak_instance", False):
            obj = self.instance
            if obj is None:
                raise ReferenceError(f"the predictor object behind {self.name} no longer exists; pass it again")
            self._strong = None  # from now on the runner that asked keeps it alive
            return obj
        return self.cls()

    @property
    def schema(self) -> dict:
        if self._schema is None:
            from replicate_jupyter.model.schema import build_schema

            self._schema = build_schema(self.function or self.cls, name=self.name)
        return self._schema

    def setup_kwargs(self, instance: Any) -> dict[str, Any]:
        """Keyword arguments for `instance.setup(...)`: `weights` when setup takes it, from the
        path/URL given, else `COG_WEIGHTS` (cog.yaml's environment, then the process's), as Cog
        passes it; a local path becomes a `cog.Path` (relative to the model's folder)."""
        setup = getattr(instance, "setup", None)
        if setup is None or not callable(setup):
            return {}
        try:
            if "weights" not in inspect.signature(setup).parameters:
                return {}
        except (TypeError, ValueError):
            return {}
        value = self.weights or self.environment.get("COG_WEIGHTS") or os.environ.get("COG_WEIGHTS") or None
        if value is None or "://" in value:
            return {"weights": value}
        from cog import Path

        p = pathlib.Path(value).expanduser()
        if not p.is_absolute() and self.folder is not None:
            p = self.folder / p
        return {"weights": Path(p)}


def _get_instance(self: PredictorSpec) -> Any:
    ref = self.__dict__.get("_instance_ref")
    if ref is None:
        return self.__dict__.get("_instance_obj")
    return ref()


def _set_instance(self: PredictorSpec, obj: Any) -> None:
    self.__dict__["_weak_instance"] = obj is not None
    self.__dict__["_strong"] = obj  # kept until the first make(): a temporary must survive until set up
    try:
        self.__dict__["_instance_ref"] = weakref.ref(obj) if obj is not None else None
        self.__dict__["_instance_obj"] = None
    except TypeError:  # not weak-referenceable: hold it
        self.__dict__["_instance_ref"] = None
        self.__dict__["_instance_obj"] = obj


setattr(PredictorSpec, "instance", property(_get_instance, _set_instance))  # noqa: B010  (a dataclass field turned property)
setattr(PredictorSpec, "_weak_instance", False)  # noqa: B010
setattr(PredictorSpec, "_strong", None)  # noqa: B010


def function_predictor(fn: Callable[..., Any]) -> type:
    """A class around a function predictor (`run: "predict.py:run"`), so runners that make and
    call classes run it unchanged: `run` is the function itself (no `self`, no setup)."""
    return type(fn.__name__, (), {"run": staticmethod(fn), "__doc__": fn.__doc__,
                                  "__module__": fn.__module__, "__qualname__": fn.__qualname__})


def predict_method(obj: Any) -> Callable:
    """The bound `run` (cog's BaseRunner) or `predict` of a predictor, chosen as Cog chooses."""
    from replicate_jupyter.model.schema import _user_method, predict_function

    cls = obj if isinstance(obj, type) else type(obj)
    predict_function(cls)  # raises Cog's error for neither or both
    return getattr(obj, "run" if _user_method(cls, "run") is not None else "predict")


# --------------------------------------------------------------------------------------------
# registry + cache
# --------------------------------------------------------------------------------------------

_registered: dict[str, Any] = {}
_lock = threading.RLock()
_by_ref: dict[tuple[str, str | None, str], tuple[sources.Fingerprint, PredictorSpec]] = {}
_by_object: "weakref.WeakKeyDictionary[Any, dict[str | None, PredictorSpec]]" = weakref.WeakKeyDictionary()
_by_id: dict[tuple[int, str | None], PredictorSpec] = {}  # objects that cannot be weak-referenced


def register(name: str, predictor: Any) -> None:
    """Give a predictor (class, instance, function or reference string) a model name, e.g.
    `me/captioner`; registering a name again replaces the predictor it stood for."""
    with _lock:
        _registered[name] = predictor
        for key in [k for k in _by_ref if name in k]:
            del _by_ref[key]
        for per_name in list(_by_object.values()):
            per_name.pop(name, None)


def known_names() -> list[str]:
    from replicate_jupyter.models import EMBEDDED

    return sorted(set(EMBEDDED) | set(_registered))


def load(ref: Any, name: str | None = None) -> PredictorSpec:
    """Resolve a model reference to a PredictorSpec: cached, and fresh after an edit."""
    if isinstance(ref, (str, os.PathLike)):
        return _load_ref(os.fspath(ref), name)
    try:
        per_name = _by_object.get(ref)
        weak = True
    except TypeError:
        per_name, weak = None, False
    if weak:
        if per_name is not None and name in per_name:
            return per_name[name]
        spec = _load(ref, name)
        with _lock:
            _by_object.setdefault(ref, {})[name] = spec
        return spec
    hit = _by_id.get((id(ref), name))
    if hit is not None and (hit.instance is ref or hit.cls is ref):
        return hit
    spec = _load(ref, name)
    with _lock:
        _by_id[(id(ref), name)] = spec
    return spec


def _load_ref(ref: str, name: str | None) -> PredictorSpec:
    relative = not (os.path.isabs(ref) or ref.startswith(("hf:", "local/")) or ref in _registered)
    key = (ref, name, os.getcwd() if relative else "")  # a relative path means another file elsewhere
    hit = _by_ref.get(key)
    if hit is not None:
        stamp, spec = hit
        if not spec.files:
            return spec
        now = sources.fingerprint(spec.files)
        if now == stamp:
            return spec
        root = spec.folder or spec.files[0].parent
        if sources.version_of(spec.files, root) == spec.version:  # touched, not changed
            with _lock:
                _by_ref[key] = (now, spec)
            return spec
    return loader.off_main(lambda: _load_and_cache(ref, name, key, hit), name or ref)


def _load_and_cache(ref: str, name: str | None, key: tuple[str, str | None, str],
                    hit: tuple[sources.Fingerprint, PredictorSpec] | None) -> PredictorSpec:
    """The slow part of a load (the imports) and its schema, done off the main thread
    (model/loader.py): cached here even when the caller was interrupted, for the next run."""
    with _lock:
        spec = _load(ref, name)
        if hit is not None and hit[1].key != spec.key:
            spec.replaces = hit[1].key
        _by_ref[key] = (sources.fingerprint(spec.files), spec)
    try:
        spec.schema  # noqa: B018  (built here: its annotations may import; an error shows when it is read)
    except Exception:  # noqa: BLE001
        pass
    return spec


def _load(ref: Any, name: str | None) -> PredictorSpec:
    if isinstance(ref, type):
        version = _code_version(ref)
        return PredictorSpec(name=name or f"local/{_slug(ref.__name__)}", key=f"class@{version}:{id(ref)}",
                             cls=ref, version=version)
    if inspect.isfunction(ref):
        version = _code_version(ref)
        return PredictorSpec(name=name or f"local/{_slug(ref.__name__)}", key=f"function@{version}:{id(ref)}",
                             cls=function_predictor(ref), version=version, function=ref)
    if not isinstance(ref, str):
        if hasattr(ref, "predict") or hasattr(ref, "run"):
            version = _code_version(type(ref))
            return PredictorSpec(name=name or f"local/{_slug(type(ref).__name__)}",
                                 key=f"object@{version}:{id(ref)}", cls=type(ref), instance=ref, version=version)
        raise TypeError(f"Not a model reference: {ref!r} (give a name, a path, or a predictor class)")
    if ref in _registered:
        return _load(_registered[ref], name or ref)
    if ref.startswith("hf:"):
        require(ref, HF_NEEDS[""])
        from replicate_jupyter import hf

        try:
            cls = hf.predictor_class(ref[3:])
        except ModuleNotFoundError as exc:
            raise (extra_import_error(ref, exc) or exc) from None
        require(ref, HF_NEEDS.get(getattr(cls, "kind", ""), ()))  # imported by its setup()
        return PredictorSpec(name=name or ref, key=ref, cls=cls, version=getattr(cls, "version", None))
    if ref.startswith("local/"):
        from replicate_jupyter.models import EMBEDDED

        if ref in EMBEDDED:
            require(ref, EMBEDDED_NEEDS.get(ref, ()))
            try:
                spec = _from_file_ref(EMBEDDED[ref], name or ref)
            except ModuleNotFoundError as exc:
                raise (extra_import_error(ref, exc) or exc) from None
            spec.folder = None  # runs in the kernel, from inside the package
            return spec
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
    from replicate_jupyter.model import cogyaml

    folder = folder.resolve()
    cfg = cogyaml.read_config(folder)
    file_part, _, attr = cfg.target.partition(":")
    spec = _from_file_ref(f"{folder / file_part}:{attr}" if attr else str(folder / file_part),
                          name or f"local/{_slug(folder.name)}")
    spec.folder, spec.target, spec.environment = folder, cfg.target, dict(cfg.environment)
    if cfg.concurrency is not None:
        spec.concurrency = cfg.concurrency
    spec.missing_packages = cogyaml.check_packages(cfg.packages, spec.name)
    cfg_files = (folder / "cog.yaml",)
    spec.files = spec.files + cfg_files
    spec.version = sources.version_of(spec.files, folder)
    spec.key = f"{spec.files[0]}@{spec.version}:{(spec.source or '').rpartition(':')[2]}"
    return spec


def _from_file_ref(ref: str, name: str | None) -> PredictorSpec:
    file_part, _, attr = ref.rpartition(":") if ref.count(":") and not ref.endswith(".py") else (ref, "", "")
    path = pathlib.Path(file_part).resolve()
    if not path.exists():
        raise ModelNotFound(ref, detail=f"no such file: {path}")
    module, files = sources.import_file(path)
    if attr:
        obj = getattr(module, attr, None)
        if obj is None:
            found = [n for n, v in vars(module).items()
                     if (isinstance(v, type) or inspect.isfunction(v)) and getattr(v, "__module__", None) == module.__name__]
            raise ModelNotFound(ref, suggestions=difflib.get_close_matches(attr, found, n=3, cutoff=0.3),
                                detail=f"{path.name} has no class or function {attr!r}")
    else:
        obj = _default_target(module, path)
    function = obj if inspect.isfunction(obj) else None
    if function is None and not isinstance(obj, type):
        raise ModelNotFound(ref, detail=f"{path.name}:{attr} is neither a class nor a function")
    cls = function_predictor(function) if function is not None else obj
    version = sources.version_of(files, path.parent)
    stem = path.parent.name if path.stem in ("predict", "run", "runner", "predictor") else path.stem
    target_name = obj.__name__
    concurrency = getattr(_predict_fn(function or cls), "__cog_concurrent_max__", None)
    return PredictorSpec(
        name=name or f"local/{_slug(stem)}", key=f"{path}@{version}:{target_name}", cls=cls, version=version,
        source=f"{path}:{target_name}", folder=path.parent, target=f"{path.name}:{target_name}",
        concurrency=concurrency, function=function, files=files,
    )


def _predict_fn(obj: Any) -> Any:
    from replicate_jupyter.model.schema import predict_function

    try:
        return predict_function(obj)[0]
    except TypeError:
        return None


def _default_target(module: Any, path: pathlib.Path) -> Any:
    """As Cog: `Runner`, else `Predictor`; failing both, the file's one predictor class."""
    for attr in ("Runner", "Predictor"):
        obj = getattr(module, attr, None)
        if obj is not None and (inspect.isfunction(obj) or (isinstance(obj, type) and _predict_fn(obj) is not None)):
            return obj
    found = [v for v in vars(module).values()
             if isinstance(v, type) and v.__module__ == module.__name__ and (hasattr(v, "predict") or hasattr(v, "run"))]
    if len(found) == 1:
        return found[0]
    raise ModelNotFound(str(path), detail="name the class or function: file.py:Name (found "
                        + (", ".join(c.__name__ for c in found) or "no Runner or Predictor") + ")")


def _code_version(obj: Any) -> str | None:
    try:
        return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]
    except (OSError, TypeError):
        return None


def _slug(text: str) -> str:
    out = []
    for i, ch in enumerate(text):
        if ch.isupper() and i and (text[i - 1].islower() or text[i - 1].isdigit()):
            out.append("-")
        out.append(ch.lower() if ch.isalnum() else "-")
    return "".join(out).strip("-") or "model"
