"""`cog.yaml` → what running the model needs: its target, environment, concurrency, packages.

The one reader of cog.yaml: the loader (model/predictors.py), serve and the kernel-side Cog
processes (serve/folder.py) all get their config from `read_config`, so a folder means the same
thing everywhere. Read as Cog 0.23 reads it: `run:` (or the older `predict:`) names
`file.py:Class` or `file.py:function`; `environment:` (top level, or `build.environment` as
later Cog writes it; not both) is a list of `NAME=value` strings, checked by
`parse_environment` with Cog's own rules (cog's pkg/config/env.go) and expanded by
`expand_environment` as the Docker `ENV` lines Cog writes them into are;
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

from replicate_jupyter.errors import InputError, ModelNotFound, Problem

__all__ = ["CogConfig", "read_config", "check_packages", "MissingPackageWarning", "parse_environment",
           "expand_environment", "reserved_name", "RESERVED"]

log = logging.getLogger("replicate_jupyter.model")


class MissingPackageWarning(UserWarning):
    """A package cog.yaml asks for is not installed in this kernel (or not at that version)."""


@dataclass
class CogConfig:
    """The parts of a cog.yaml a runner uses."""

    folder: pathlib.Path
    target: str
    environment: dict[str, str] = field(default_factory=dict)  # as written, in order; `expand_environment` applies it
    concurrency: int | None = None
    packages: list[str] = field(default_factory=list)  # requirement strings, as written
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def read_config(folder: pathlib.Path) -> CogConfig:
    """The cog.yaml of a model folder; `ModelNotFound` naming what is missing, `InputError`
    (naming the variable) for an environment Cog would refuse."""
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
    return CogConfig(folder=folder, target=target.strip(), environment=parse_environment(_environment_entries(cfg)),
                     concurrency=int(conc) if conc is not None else None, packages=_packages(cfg, folder), raw=cfg)


_FIELD = "cog.yaml environment"

#: names Cog refuses in cog.yaml's environment: used by Cog or Replicate at build or run time
#: (cog's pkg/config/env.go, EnvironmentVariableDenyList); `*` ends a prefix
RESERVED = ("PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONUNBUFFERED", "R8_*", "REPLICATE_*",
            "LIBRARY_PATH", "CUDA_*", "NVIDIA_*", "NV_*", "PGET_*", "HF_ENDPOINT", "HF_HUB_ENABLE_HF_TRANSFER",
            "KUBERNETES_*")


def _environment_entries(cfg: dict) -> Any:
    """`environment:` at the top level (Cog 0.23) or under `build:` (later Cog); both is refused, as Cog does."""
    top, build = cfg.get("environment"), (cfg.get("build") or {}) if isinstance(cfg.get("build"), dict) else {}
    nested = build.get("environment")
    if top is not None and nested is not None:
        raise InputError([Problem(_FIELD, "conflict", "environment", "either top-level environment or "
                                  "build.environment", message="environment is set both at the top level and under "
                                  "build; keep one (Cog refuses both)")])
    return top if top is not None else nested


def reserved_name(name: str) -> bool:
    """Whether Cog reserves this variable name (exactly, or by one of its `PREFIX_*` patterns)."""
    return any(name.startswith(p[:-1]) if p.endswith("*") else name == p for p in RESERVED)


def parse_environment(entries: Any) -> dict[str, str]:
    """cog.yaml `environment:` → {name: value as written}, in order, with Cog's rules: a list of
    `KEY=VALUE` strings (the value may hold `=`, spaces or nothing), a non-empty name, none Cog
    reserves (`RESERVED`), none given twice. Every broken rule is one Problem of an InputError
    naming the variable, with Cog's own wording."""
    if entries is None:
        return {}
    if not isinstance(entries, list):
        raise InputError([Problem(_FIELD, "type", type(entries).__name__, "a list of KEY=VALUE strings",
                                  message="environment must be a list of KEY=VALUE strings (as Cog requires), "
                                          f"not a {type(entries).__name__}")])
    out: dict[str, str] = {}
    problems: list[Problem] = []
    for entry in entries:
        text = entry if isinstance(entry, str) else str(entry)
        name, sep, value = text.partition("=")
        if not isinstance(entry, str) or not sep or not name:
            shown = text if not sep else "=…"  # a value is never echoed: it may be a credential
            problems.append(Problem(_FIELD, "format", shown, "KEY=VALUE",
                                    message=f"environment variable {shown!r} is not in the KEY=VALUE format"))
        elif reserved_name(name):
            problems.append(Problem(_FIELD, "reserved", name, "a name Cog does not reserve",
                                    message=f"environment variable {name!r} is not allowed (Cog reserves it)"))
        elif name in out:
            problems.append(Problem(_FIELD, "duplicate", name, "each name once",
                                    message=f"environment variable {name!r} is already defined"))
        elif "\x00" in text:
            problems.append(Problem(_FIELD, "value", name, "a value without NUL bytes",
                                    message=f"environment variable {name!r} holds a NUL byte"))
        else:
            out[name] = value
    if problems:
        raise InputError(problems)
    return out


_SUB = re.compile(r"\\\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand_environment(entries: dict[str, str], base: Any) -> dict[str, str]:
    """The variables cog.yaml sets, with references expanded as Docker expands the `ENV` lines Cog
    builds them into: `$NAME` and `${NAME}` take the value of an earlier entry, else of `base`
    (the environment the model starts from, the image's under Cog), else empty;
    `${NAME:-word}` is `word` when that is empty or unset, `${NAME:+word}` is `word` when it
    is set and not empty; `\\$` is a literal `$`. Order is significant: an entry sees only
    those above it. Returns only cog.yaml's names (values expanded), in order."""
    out: dict[str, str] = {}

    def lookup(name: str) -> str:
        return out[name] if name in out else str(base.get(name, "") or "")

    for name, value in entries.items():
        out[name] = _SUB.sub(lambda m: _expand_one(m, lookup), value)
    return out


def _expand_one(m: re.Match, lookup: Any) -> str:
    whole, braced, op, word, bare = m.group(0), m.group(1), m.group(2), m.group(3), m.group(4)
    if whole == "\\$":
        return "$"
    if bare is not None:
        return lookup(bare)
    value = lookup(braced)
    if op == "-":
        return value or word
    if op == "+":
        return word if value else ""
    return value


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
