"""Which backend runs a call, and when a bare `owner/name` goes to Replicate.

A replicate-python user writes `replicate.run("meta/meta-llama-3-8b-instruct", ...)` with a token
in the environment and expects it to run on Replicate. Our default backend is `local`, which has
never heard of that model. So, for a call that names no backend (`on=`, `--on`) while the user
has chosen none either (`rj.backend(...)`, `%replicate use`, `default_backend` in config), a
bare name goes to the first source that knows it — the kernel (embedded, registered, a file),
then the worker pool, then Ray when one is configured — and to Replicate when none does and a
token is configured. A bare version id (64 hex digits, as Replicate's HTTP docs create
predictions: `predictions.create(version="5c7d…")`) names a version only Replicate has: it
goes there when a token is configured; without one the error says a token is needed. The
Prediction's `backend` then says `replicate`, so its card and its cost line say where it ran.
`on=` always pins.

A `Target` is where one caller's calls go: `SessionTarget` (the module-level functions: the
session's runners, routed as above) or `ClientTarget` (a `Client(api_token=...)`: its own
replicate runner, its own token).
"""
from __future__ import annotations

import os
import re
import threading
from typing import TYPE_CHECKING, Any

from replicate_jupyter.errors import BackendError, InputError, ModelNotFound, Problem
from replicate_jupyter.runners.replicate import token as tokens

if TYPE_CHECKING:
    from replicate_jupyter.runners.base import ModelHandle, Runner
    from replicate_jupyter.runners.replicate.runner import ReplicateRunner

__all__ = ["Target", "SessionTarget", "ClientTarget", "note_choice", "backend_chosen", "reset_choice",
           "is_bare_name", "is_version_id", "model_ref", "create_ref", "parse_duration", "cancel_after_header",
           "check_params", "CREATE_PARAMS"]

_BARE = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(:[0-9a-f]{8,})?$")
_VERSION_ID = re.compile(r"^[0-9a-f]{64}$")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")
_chosen = threading.Event()

Resolved = tuple[str, "Runner", "ModelHandle"]


def note_choice(*_args: Any) -> None:
    """The user chose a default backend: from now on every call without `on=` goes there."""
    _chosen.set()


def backend_chosen() -> bool:
    return _chosen.is_set()


def reset_choice() -> None:
    """Back to routing by name (as in a fresh kernel)."""
    _chosen.clear()


def is_bare_name(ref: Any) -> bool:
    """`owner/name` or `owner/name:version`, not an embedded `local/…`, an `hf:` ref or a path."""
    return (isinstance(ref, str) and bool(_BARE.match(ref)) and not ref.startswith("local/")
            and not os.path.exists(ref.split(":", 1)[0]))


def is_version_id(ref: Any) -> bool:
    """A bare Replicate version id: 64 lowercase hex digits."""
    return isinstance(ref, str) and bool(_VERSION_ID.match(ref.strip()))


def model_ref(ref: Any) -> Any:
    """replicate-python's ways to name a model as `run`/`stream`/`use` take them (its
    `identifier._resolve`): a `Model` → `owner/name`, a `Version` → `owner/name:id` when its
    model is known, else its bare id, a `ModelVersionIdentifier` → `owner/name[:version]`; ours
    or replicate-python's objects alike. Anything else (a name, a path, a predictor) as it is."""
    if isinstance(ref, (str, type)) or ref is None:
        return ref
    if hasattr(ref, "openapi_schema") and isinstance(getattr(ref, "id", None), str):  # a Version
        ours = getattr(ref, "ref", None)
        return ours if isinstance(ours, str) else ref.id
    owner, name = getattr(ref, "owner", None), getattr(ref, "name", None)
    if isinstance(owner, str) and isinstance(name, str):  # a Model, a ModelVersionIdentifier
        version = getattr(ref, "version", None)
        return f"{owner}/{name}:{version}" if isinstance(version, str) and version else f"{owner}/{name}"
    return ref


def create_ref(args: tuple, model: Any, version: Any, deployment: Any) -> tuple[Any, Any]:
    """replicate-python's ways to name what `predictions.create` runs: `create(version, input)`
    positionally (ours: `create(ref, input)`), or exactly one of `model=`, `version=`,
    `deployment=` → (the model reference, the deployment)."""
    given = [x for x in (args[0] if args else None, model, version, deployment) if x is not None]
    if len(given) != 1:
        raise InputError([Problem("model", "required", None, "exactly one of: a model reference, model=, "
                                  "version= or deployment=")])
    if deployment is not None:
        return None, deployment
    ref = given[0]
    if isinstance(ref, tuple) and len(ref) == 2 and not hasattr(ref, "owner"):  # (owner, name)
        return f"{ref[0]}/{ref[1]}", None
    return model_ref(ref), None


def parse_duration(text: str) -> float:
    """`30s`, `5m`, `1h30m45s` or a bare number of seconds → seconds (Replicate's Cancel-After)."""
    text = str(text).strip()
    try:
        return float(text)
    except ValueError:
        pass
    m = _DURATION.match(text)
    if not text or not m:
        raise ValueError("a duration such as 30s, 5m or 1h30m45s, or a number of seconds")
    h, mi, s = m.groups()
    return int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)


def cancel_after_header(value: Any) -> str:
    """`cancel_after` as the `Cancel-After` header wants it; at least 5 s, as Replicate requires."""
    if isinstance(value, bool):
        raise ValueError("a duration such as 30s, 5m or 1h30m45s, or a number of seconds")
    seconds = float(value) if isinstance(value, (int, float)) else parse_duration(value)
    if not seconds >= 5:
        raise ValueError("at least 5 seconds (Replicate's minimum)")
    if isinstance(value, (int, float)):
        return f"{seconds:g}s"
    return str(value).strip()


#: replicate-python's `Predictions.CreatePredictionParams` (+ `cancel_after`)
CREATE_PARAMS = ("webhook", "webhook_completed", "webhook_events_filter", "stream", "wait", "cancel_after",
                 "file_encoding_strategy")


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """replicate-python's create parameters, checked (InputError naming each bad one)."""
    problems = [Problem(k, "unknown", v, "one of: " + ", ".join(CREATE_PARAMS)) for k, v in params.items()
                if k not in CREATE_PARAMS]
    out = {k: v for k, v in params.items() if k in CREATE_PARAMS}
    wait = out.get("wait")
    if wait is not None and not isinstance(wait, bool) and not (isinstance(wait, int) and 1 <= wait <= 60):
        problems.append(Problem("wait", "choices", wait, "True, False, or seconds 1–60 (Prefer: wait=N)"))
    if out.get("cancel_after") is not None:
        try:
            out["cancel_after"] = cancel_after_header(out["cancel_after"])
        except ValueError as exc:
            problems.append(Problem("cancel_after", "format", out["cancel_after"], str(exc)))
    if out.get("file_encoding_strategy") not in (None, "base64", "url"):
        problems.append(Problem("file_encoding_strategy", "choices", out["file_encoding_strategy"], "'base64' or 'url'"))
    if problems:
        raise InputError(problems)
    return out


class Target:
    """Where one caller's calls go (see the module doc)."""

    kernel_predictions = True  # `predictions.get/list` look in this kernel first

    def resolve(self, ref: Any, on: str | None) -> Resolved:
        raise NotImplementedError

    def replicate(self, on: str | None = None, what: str = "this") -> ReplicateRunner:
        """The replicate runner for a call only Replicate can answer (files, hardware, deployments)."""
        raise NotImplementedError

    def deployment(self, name: Any, on: str | None) -> Resolved:
        runner = self.replicate(on, "deployments")
        name = _owner_name(name, "deployment")
        return "replicate", runner, runner.resolve_deployment(name)


def _owner_name(value: Any, field: str) -> str:
    """A deployment or model given as `owner/name`, a `(owner, name)` tuple or an object with both."""
    if isinstance(value, tuple) and len(value) == 2:
        return f"{value[0]}/{value[1]}"
    if hasattr(value, "owner") and hasattr(value, "name"):
        return f"{value.owner}/{value.name}"
    if isinstance(value, str) and value.count("/") == 1:
        return value
    raise InputError([Problem(field, "format", value, "owner/name, a (owner, name) tuple, or its object")])


class SessionTarget(Target):
    """The module-level functions: the session's runners, a bare name routed by who knows it."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def resolve(self, ref: Any, on: str | None) -> Resolved:
        s = self.session
        ref = s.default_model if ref is None else model_ref(ref)
        if on:
            runner = s.runner(on)
            return on, runner, runner.resolve(ref)
        default = s.default_backend
        if is_version_id(ref) and not backend_chosen() and default == "local":  # only Replicate has it
            if not tokens.configured():
                raise BackendError(f"{ref.strip()[:12]}… is a Replicate version id: running it needs a Replicate API "
                                   "token — run %replicate login (or set REPLICATE_API_TOKEN), or pass owner/name")
            remote = s.runner("replicate")
            return "replicate", remote, remote.resolve(ref)
        runner = s.runner(default)
        if backend_chosen() or default != "local" or not is_bare_name(ref):
            return default, runner, runner.resolve(ref)
        try:  # the kernel first: an embedded, registered or on-disk model of that name
            return default, runner, runner.resolve(ref)
        except ModelNotFound as missing:
            found = self._elsewhere(ref)
            if found is not None:
                return found
            if not tokens.configured():
                raise ModelNotFound(missing.ref, suggestions=missing.suggestions, backend=default,
                                    detail="no local model has that name; to run it on Replicate, run "
                                           "%replicate login (or set REPLICATE_API_TOKEN)") from None
            remote = s.runner("replicate")
            return "replicate", remote, remote.resolve(ref)

    def _elsewhere(self, ref: str) -> Resolved | None:
        """The worker pool, then Ray (only when configured): a source that serves `ref`."""
        s = self.session
        import sys

        workers = sys.modules.get("replicate_jupyter.runners.workers.runner")  # a pool exists only once used
        if workers is not None and any(w.model == ref for w in workers.pool().workers()):
            runner = s.runner("workers")
            return "workers", runner, runner.resolve(ref)
        if "ray" in s.backend_options:
            runner = s.runner("ray")
            try:
                return "ray", runner, runner.resolve(ref)
            except ModelNotFound:
                return None
        return None

    def replicate(self, on: str | None = None, what: str = "this") -> ReplicateRunner:
        backend = on or (self.session.default_backend if backend_chosen() else "replicate")
        if backend != "replicate":
            raise InputError([Problem("on", "backend", backend, "replicate", message=(
                f"the {backend} backend has no {what}: they exist only on Replicate (on='replicate')"))])
        runner: ReplicateRunner = self.session.runner("replicate")
        return runner


class ClientTarget(Target):
    """A `Client`: every call on its own replicate runner (its base URL, its token)."""

    kernel_predictions = False

    def __init__(self, runner: ReplicateRunner) -> None:
        self.runner = runner

    def resolve(self, ref: Any, on: str | None) -> Resolved:
        if on not in (None, "replicate"):
            raise InputError([Problem("on", "backend", on, "replicate", message=(
                "a Client runs on Replicate only; for another backend use replicate_jupyter.run(..., on=...)"))])
        if ref is None:
            raise InputError([Problem("ref", "required", None, "a model: owner/name or owner/name:version")])
        return "replicate", self.runner, self.runner.resolve(model_ref(ref))

    def replicate(self, on: str | None = None, what: str = "this") -> ReplicateRunner:
        if on not in (None, "replicate"):
            raise InputError([Problem("on", "backend", on, "replicate", message=(
                f"a Client runs on Replicate only; the {on} backend has no {what} here"))])
        return self.runner
