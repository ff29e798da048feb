"""`Client` and the namespaces of replicate-python 1.0.7: `models` (+ `versions`, `predictions`),
`deployments`, `files`, `hardware`, `webhooks`, beside `predictions` (in `api.py`).

    from replicate_jupyter import Client
    client = Client(api_token="r8_...")          # its own token, on the replicate backend
    client.run("owner/name", input={...})

A `Client` is bound to the replicate backend with its own token and base URL: the token lives
on its runner's `Token` only (masked in every repr, never pickled, never in an output, metadata
or widget state). The module-level namespaces (`replicate_jupyter.models`, `.files`, …) are the
same classes on the session's target: calls only Replicate can answer (files, hardware,
deployments) go to the session's replicate runner, and an explicit other backend is refused
naming it. Predictions made through a Client are this kernel's like any other: tracked, in the
ledger, with a cost line.
"""
from __future__ import annotations

import builtins
import os
from typing import Any, AsyncIterator, Iterator

from replicate_jupyter import api
from replicate_jupyter.errors import InputError, Problem
from replicate_jupyter.prediction.events import Event
from replicate_jupyter.prediction.prediction import Prediction
from replicate_jupyter.runners.replicate.resources import Deployment, File, Hardware, Model, Page, Version, WebhookSigningSecret
from replicate_jupyter.runners.replicate.routing import ClientTarget, Target

__all__ = ["Client", "Models", "Versions", "ModelsPredictions", "Deployments", "DeploymentPredictions",
           "DeploymentsPredictions", "Files", "HardwareNamespace", "Webhooks", "models", "deployments", "files",
           "hardware"]


def _split(ref: Any) -> tuple[str, str]:
    if isinstance(ref, tuple) and len(ref) == 2:
        return str(ref[0]), str(ref[1])
    if isinstance(ref, Model):
        return str(ref.owner), str(ref.name)
    if isinstance(ref, str) and ref.count("/") == 1 and ":" not in ref:
        owner, name = ref.split("/")
        return owner, name
    raise InputError([Problem("model", "format", ref, "owner/name, (owner, name) or a Model")])


def _remember(runner: Any, model: str, version: dict, data: dict | None = None, *, pinned: bool) -> None:
    """What the user fetched is what a run of it needs: cached, so the run asks nothing again."""
    try:
        runner.remember(model, version, data, pinned=pinned)
    except Exception:  # noqa: BLE001 — a version without a schema: the run will say so
        pass


class _Namespace:
    def __init__(self, target: Target) -> None:
        self._target = target

    def _api(self, what: str) -> Any:
        return self._target.replicate(None, what).api


class Versions(_Namespace):
    """`model.versions`: `get(id)`, `list()`."""

    def __init__(self, target: Target, model: Any) -> None:
        super().__init__(target)
        self.model = _split(model)

    def get(self, id: str) -> Version:
        runner = self._target.replicate(None, "model versions")
        data = runner.api.get_version(*self.model, id)
        _remember(runner, "/".join(self.model), data, pinned=True)
        return Version(data, model="/".join(self.model))

    def list(self) -> Page[Version]:
        page = self._api("model versions").list_versions(*self.model)
        return Page([Version(v, model="/".join(self.model)) for v in page.get("results") or []],
                    next=page.get("next"), previous=page.get("previous"))


class ModelsPredictions(_Namespace):
    """`models.predictions.create(model=..., input=...)`: run a model's latest version by its name."""

    def create(self, model: Any, input: dict[str, Any] | None = None, **params: Any) -> Prediction:
        return api.Predictions(self._target).create(model="/".join(_split(model)), input=input, **params)

    async def async_create(self, model: Any, input: dict[str, Any] | None = None, **params: Any) -> Prediction:
        return await api.Predictions(self._target).async_create(model="/".join(_split(model)), input=input, **params)


class Models(_Namespace):
    """`models`: `get`, `list`, `predictions`. Called, the models the backend can run (ours:
    `models(on=...)`, what `%replicate models` lists)."""

    def __call__(self, *, on: str | None = None) -> list:
        return api.models(on=on)

    @property
    def predictions(self) -> ModelsPredictions:
        return ModelsPredictions(self._target)

    def get(self, *args: str, **kwargs: str) -> Model:
        """`get("owner/name")` or `get("owner", "name")`."""
        key = "/".join(args) if args else kwargs.get("key") or f"{kwargs.get('owner')}/{kwargs.get('name')}"
        owner, name = _split(key)
        runner = self._target.replicate(None, "models")
        data = runner.api.get_model(owner, name)
        if isinstance(data.get("latest_version"), dict):
            _remember(runner, f"{owner}/{name}", data["latest_version"], data, pinned=False)
        return Model.from_json(data, versions=lambda m: Versions(self._target, m))

    async def async_get(self, *args: str, **kwargs: str) -> Model:
        import asyncio

        return await asyncio.to_thread(lambda: self.get(*args, **kwargs))

    def list(self, cursor: Any = ...) -> Page[Model]:
        if cursor is None:
            raise ValueError("cursor cannot be None")
        page = self._api("models").list_models(None if cursor is ... else str(cursor))
        return Page([Model.from_json(m, versions=lambda m: Versions(self._target, m)) for m in page.get("results") or []],
                    next=page.get("next"), previous=page.get("previous"))


class DeploymentPredictions(_Namespace):
    """`deployment.predictions.create(input=...)`."""

    def __init__(self, target: Target, deployment: str) -> None:
        super().__init__(target)
        self._deployment = deployment

    def create(self, input: dict[str, Any] | None = None, **params: Any) -> Prediction:
        return api.Predictions(self._target).create(deployment=self._deployment, input=input, **params)

    async def async_create(self, input: dict[str, Any] | None = None, **params: Any) -> Prediction:
        return await api.Predictions(self._target).async_create(deployment=self._deployment, input=input, **params)


class DeploymentsPredictions(_Namespace):
    """`deployments.predictions.create(deployment=..., input=...)`."""

    def create(self, deployment: Any, input: dict[str, Any] | None = None, **params: Any) -> Prediction:
        return api.Predictions(self._target).create(deployment=deployment, input=input, **params)

    async def async_create(self, deployment: Any, input: dict[str, Any] | None = None, **params: Any) -> Prediction:
        return await api.Predictions(self._target).async_create(deployment=deployment, input=input, **params)


class Deployments(_Namespace):
    """`deployments`: `get(name)` and `predictions.create(...)` (Replicate only)."""

    @property
    def predictions(self) -> DeploymentsPredictions:
        return DeploymentsPredictions(self._target)

    def get(self, name: str) -> Deployment:
        owner, short = _split(name)
        d = Deployment(self._api("deployments").get_deployment(owner, short))
        d._predictions = DeploymentPredictions(self._target, d.id)
        return d

    async def async_get(self, name: str) -> Deployment:
        import asyncio

        return await asyncio.to_thread(self.get, name)


class Files(_Namespace):
    """`files`: `create(file, filename=, content_type=, metadata=)`, `get`, `list`, `delete`."""

    def create(self, file: Any, *, filename: str | None = None, content_type: str | None = None,
               metadata: dict[str, Any] | None = None) -> File:
        import mimetypes

        if isinstance(file, (str, os.PathLike)):
            with open(file, "rb") as fh:
                data = fh.read()
            filename = filename or os.path.basename(os.fspath(file))
        elif hasattr(file, "read"):
            if hasattr(file, "seek"):
                file.seek(0)
            data = file.read()
            data = data.encode() if isinstance(data, str) else data
            filename = filename or os.path.basename(str(getattr(file, "name", "file")))
        else:
            raise InputError([Problem("file", "type", file, "a path or a file opened in binary mode")])
        ctype = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        return File(self._api("files").upload(data, filename, ctype, metadata))

    async def async_create(self, file: Any, **params: Any) -> File:
        import asyncio

        return await asyncio.to_thread(lambda: self.create(file, **params))

    def get(self, file_id: str) -> File:
        return File(self._api("files").get_file(file_id))

    def list(self) -> builtins.list[File]:
        return [File(f) for f in self._api("files").list_files().get("results") or []]

    def delete(self, file_id: str) -> bool:
        return bool(self._api("files").delete_file(file_id))


class HardwareNamespace(_Namespace):
    """`hardware.list()`: Replicate's SKUs (`{name, sku}`)."""

    def list(self) -> builtins.list[Hardware]:
        return [Hardware(h) for h in self._api("hardware").list_hardware()]

    async def async_list(self) -> builtins.list[Hardware]:
        import asyncio

        return await asyncio.to_thread(self.list)


class _DefaultWebhook(_Namespace):
    def secret(self) -> WebhookSigningSecret:
        """Replicate's signing secret for your account (`GET /v1/webhooks/default/secret`)."""
        return WebhookSigningSecret(self._api("webhooks").webhook_secret())

    async def async_secret(self) -> WebhookSigningSecret:
        import asyncio

        return await asyncio.to_thread(self.secret)


class Webhooks(_Namespace):
    """A Client's `webhooks`: `default.secret()` asks Replicate; `validate(...)` checks a delivery."""

    @property
    def default(self) -> _DefaultWebhook:
        return _DefaultWebhook(self._target)

    @staticmethod
    def validate(*args: Any, **kwargs: Any) -> Any:
        from replicate_jupyter import webhooks

        return webhooks.validate(*args, **kwargs)


def _v1(base_url: str | None) -> str | None:
    """replicate-python's base URL is the host (`https://api.replicate.com`); ours ends in /v1."""
    base = base_url or os.environ.get("REPLICATE_BASE_URL") or None
    if not base:
        return None
    base = base.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


class Client:
    """replicate-python's `Client(api_token=None, *, base_url=None, timeout=None, headers=None,
    transport=None)`, on the replicate backend. Without `api_token`: the kernel's login token,
    else REPLICATE_API_TOKEN. `headers` go with every request (a `User-Agent` replaces ours);
    an `Authorization` header is refused: the token is `api_token`."""

    def __init__(self, api_token: str | None = None, *, base_url: str | None = None, timeout: Any = None,
                 **kwargs: Any) -> None:
        from replicate_jupyter.runners.replicate.runner import ReplicateRunner
        from replicate_jupyter.runners.replicate.token import Token

        unknown = sorted(set(kwargs) - {"headers", "transport"})
        if unknown:
            raise InputError([Problem(k, "unknown", kwargs[k], "api_token, base_url, timeout, headers, transport")
                              for k in unknown])
        options: dict[str, Any] = {"credentials": Token(api_token) if api_token else None}
        if _v1(base_url):
            options["base_url"] = _v1(base_url)
        if timeout is not None:
            options["timeout"] = timeout
        headers = dict(kwargs.get("headers") or {})
        if any(str(k).lower() == "authorization" for k in headers):
            raise InputError([Problem("headers", "forbidden", "Authorization: <hidden>", "no Authorization header",
                                      message="give the token as api_token= (it is masked and never kept in the "
                                              "notebook); headers= takes the others, such as User-Agent")])
        self._runner = ReplicateRunner(**options)
        if headers or kwargs.get("transport") is not None:  # replicate-python passes them to httpx
            self._runner.api.configure(headers=headers, transport=kwargs.get("transport"))
        self._target = ClientTarget(self._runner)
        self.poll_interval = self._runner.poll_interval

    def __repr__(self) -> str:
        masked = "'r8_***'" if self._runner.credentials else "None"
        return f"Client(api_token={masked}, base_url={self._runner.base_url!r})"

    def __reduce__(self) -> Any:
        raise TypeError("a Client holds an API token and is never pickled")

    # ----- namespaces ----------------------------------------------------------------------------
    @property
    def predictions(self) -> api.Predictions:
        return api.Predictions(self._target)

    @property
    def models(self) -> Models:
        return Models(self._target)

    @property
    def deployments(self) -> Deployments:
        return Deployments(self._target)

    @property
    def files(self) -> Files:
        return Files(self._target)

    @property
    def hardware(self) -> HardwareNamespace:
        return HardwareNamespace(self._target)

    @property
    def webhooks(self) -> Webhooks:
        return Webhooks(self._target)

    # ----- running ---------------------------------------------------------------------------------
    def run(self, ref: Any, input: dict[str, Any] | None = None, **params: Any) -> Any:
        return api.run(ref, input, _target=self._target, **params)

    async def async_run(self, ref: Any, input: dict[str, Any] | None = None, **params: Any) -> Any:
        return await api.async_run(ref, input, _target=self._target, **params)

    def stream(self, ref: Any, *, input: dict[str, Any] | None = None, **params: Any) -> Iterator[Event]:
        return api.stream(ref, input, _target=self._target, **params)

    async def async_stream(self, ref: Any, input: dict[str, Any] | None = None, **params: Any) -> AsyncIterator[Event]:
        return await api.async_stream(ref, input, _target=self._target, **params)

    def use(self, ref: str, **kwargs: Any) -> Any:
        """This client's `use(ref)` (replicate-python 1.1): the model as a function."""
        from replicate_jupyter.use import use

        return use(ref, _target=self._target, **kwargs)

    def close(self) -> None:
        self._runner.close()


models = Models(api.SESSION)
deployments = Deployments(api.SESSION)
files = Files(api.SESSION)
hardware = HardwareNamespace(api.SESSION)
