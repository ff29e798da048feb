"""`cog.yaml` → what running the model needs: its target, environment, concurrency, packages.

Read as Cog 0.23 reads it: `run:` (or the older `predict:`) names `file.py:Class` or
`file.py:function`; `environment:` is a list of `NAME=value` (a mapping is accepted too);
`concurrency.max` caps concurrent predictions. `build.python_packages` and
`build.python_requirements` are what `cog build` would install; here nothing is installed, so a
package the kernel lacks (or has at a version outside the pin) is reported by name, once per
load, as a `MissingPackageWarning` and a log line, instead of surfacing later as an ImportError
deep in `setup()`.
"""
from __future__ import annotations

import importlib.metadata
import logging
import pathlib
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

from replicate_jupyter.errors import ModelNotFound

__all__ = ["CogConfig", "read_config", "check_packages", "MissingPackageWarning"]

log = logging.getLogger("replicate_jupyter.model")


class MissingPackageWarning(UserWarning):
    """A package cog.yaml asks for is not installed in this kernel (or not at that version)."""


@dataclass
class CogConfig:
    """The parts of a cog.yaml a runner uses."""

    folder: pathlib.Path
    target: str
    environment: dict[str, str] = field(default_factory=dict)
    concurrency: int | None = None
    packages: list[str] = field(default_factory=list)  # requirement strings, as written
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def read_config(folder: pathlib.Path) -> CogConfig:
    """The cog.yaml of a model folder; `ModelNotFound` naming what is missing."""
    import yaml

    path = folder / "cog.yaml"
    if not path.exists():
        raise ModelNotFound(str(folder), detail="the folder has no cog.yaml")
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ModelNotFound(str(path), detail=f"cog.yaml is not valid YAML: {exc}") from None
    if not isinstance(cfg, dict):
        raise ModelNotFound(str(path), detail="cog.yaml is not a mapping")
    target = cfg.get("run") or cfg.get("predict")
    if not target or not isinstance(target, str):
        raise ModelNotFound(str(path), detail="cog.yaml has no 'run:' (or 'predict:') entry")
    conc = (cfg.get("concurrency") or {}).get("max") if isinstance(cfg.get("concurrency"), dict) else None
    return CogConfig(folder=folder, target=target.strip(), environment=_environment(cfg.get("environment"), path),
                     concurrency=int(conc) if conc is not None else None, packages=_packages(cfg, folder), raw=cfg)


def _environment(env: Any, path: pathlib.Path) -> dict[str, str]:
    if env is None:
        return {}
    if isinstance(env, dict):
        return {str(k): "" if v is None else str(v) for k, v in env.items()}
    out: dict[str, str] = {}
    for item in env if isinstance(env, list) else [env]:
        name, sep, value = str(item).partition("=")
        if not sep or not name.strip():
            raise ModelNotFound(str(path), detail=f"environment entry {item!r} is not NAME=value")
        out[name.strip()] = value
    return out


def _packages(cfg: dict, folder: pathlib.Path) -> list[str]:
    build = cfg.get("build") or {}
    reqs = [str(p) for p in build.get("python_packages") or []]
    req_file = build.get("python_requirements")
    if req_file:
        try:
            lines = (folder / req_file).read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith(("#", "-")):
                reqs.append(line)
    return reqs


_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def check_packages(requirements: list[str], where: str) -> list[str]:
    """The requirements this environment does not meet, each warned about and logged by name."""
    problems = []
    for req in requirements:
        problem = _unmet(req)
        if problem:
            problems.append(problem)
            text = f"{where}: cog.yaml asks for {problem}; install it in this kernel's environment (pip install '{req}')"
            warnings.warn(text, MissingPackageWarning, stacklevel=3)
            log.warning(text)
    return problems


def _unmet(req: str) -> str | None:
    if "://" in req or req.startswith(("git+", "file:")):
        m = re.search(r"#egg=([A-Za-z0-9._-]+)", req)
        if not m:
            return None  # a URL without a name: nothing to check
        req = m.group(1)
    try:
        from packaging.requirements import Requirement

        parsed = Requirement(req)
        if parsed.marker is not None and not parsed.marker.evaluate():
            return None
        name, spec = parsed.name, parsed.specifier
    except Exception:  # noqa: BLE001 — no packaging, or a line it cannot parse: check the name only
        m = _NAME.match(req)
        if not m:
            return None
        name, spec = m.group(1), None
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return f"{req!r}, which is not installed"
    if spec is not None and str(spec) and not spec.contains(installed, prereleases=True):
        return f"{req!r}, but {name} {installed} is installed"
    return None
