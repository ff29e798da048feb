"""Replicate's API objects as replicate-python gives them: `Page`, `Model`, `Version`,
`Deployment`, `File`, `Hardware`, `WebhookSigningSecret`.

Plain objects built from the API's JSON: every field of the answer is an attribute (as on
replicate-python's pydantic models, which accept unknown fields), `dict(obj)` gives them all,
and the few methods replicate-python's objects have (`model.versions`, `deployment.predictions`,
`model.latest_version`) are bound to the namespace that fetched them. No pydantic: importing the
package stays light.
"""
from __future__ import annotations

from typing import Any, Callable, Generic, Iterator, TypeVar

__all__ = ["Resource", "Page", "Model", "Version", "Deployment", "File", "Hardware", "WebhookSigningSecret"]

T = TypeVar("T")


class Resource:
    """An API object: its JSON fields as attributes."""

    _fields: tuple[str, ...] = ()

    def __init__(self, data: dict[str, Any] | None = None, **fields: Any) -> None:
        data = {**(data or {}), **fields}
        for name in self._fields:
            data.setdefault(name, None)
        self.__dict__.update(data)

    def __getattr__(self, name: str) -> Any:  # a field the answer did not have (typed for mypy)
        raise AttributeError(name)

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter([(k, v) for k, v in self.__dict__.items() if not k.startswith("_")])

    def dict(self) -> dict[str, Any]:
        return dict(self)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and dict(self) == dict(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        key = next((getattr(self, k) for k in ("id", "sku", "name") if getattr(self, k, None)), "")
        return f"<{type(self).__name__}: {key}>"


class Page(Generic[T]):
    """One page of a listing: `results`, and the `next`/`previous` cursors to pass to `list()`.
    Iterates, indexes and has a length like its results (replicate-python's Page)."""

    def __init__(self, results: list[T], next: str | None = None, previous: str | None = None) -> None:
        self.results = results
        self.next = next
        self.previous = previous

    def __iter__(self) -> Iterator[T]:
        return iter(self.results)

    def __getitem__(self, index: Any) -> Any:
        return self.results[index]

    def __len__(self) -> int:
        return len(self.results)

    def __bool__(self) -> bool:
        return True  # a page is a page even when empty (`while page:` loops on `next`)

    def __repr__(self) -> str:
        return f"<Page of {len(self.results)}{' (more: next)' if self.next else ''}>"


class Version(Resource):
    _fields = ("id", "created_at", "cog_version", "openapi_schema")

    #: "owner/name" when known (a version fetched through its model): `owner/name:id` runs it
    model: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.model}:{self.id}" if self.model else str(self.id)


class Model(Resource):
    _fields = ("url", "owner", "name", "description", "visibility", "github_url", "paper_url", "license_url",
               "run_count", "cover_image_url", "default_example", "latest_version")

    _versions: Callable[[Model], Any] | None = None
    latest_version: Version | None

    @classmethod
    def from_json(cls, data: dict[str, Any], versions: Callable[[Model], Any] | None = None) -> Model:
        m = cls(data)
        latest = data.get("latest_version")
        m.latest_version = Version(latest, model=m.id) if isinstance(latest, dict) else None
        m._versions = versions
        return m

    @property
    def id(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def versions(self) -> Any:
        """`model.versions.get(id)` / `.list()`."""
        if self._versions is None:
            raise AttributeError("versions")
        return self._versions(self)

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter([(k, v) for k, v in self.__dict__.items() if not k.startswith("_")])


class Deployment(Resource):
    _fields = ("owner", "name", "current_release")

    _predictions: Any = None

    @property
    def id(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def predictions(self) -> Any:
        """`deployment.predictions.create(input=...)`."""
        return self._predictions


class File(Resource):
    _fields = ("id", "name", "content_type", "size", "etag", "checksums", "metadata", "created_at", "expires_at", "urls")


class Hardware(Resource):
    _fields = ("sku", "name")


class WebhookSigningSecret(Resource):
    """`{key}`: the secret Replicate signs its webhooks with (`whsec_…`). Its repr hides it."""

    _fields = ("key",)

    def __repr__(self) -> str:
        return "<WebhookSigningSecret: whsec_***>"
