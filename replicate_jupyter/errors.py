"""The one exception tree of replicate-jupyter.

    ReplicateJupyterError    (`exceptions.ReplicateException`, replicate-python's base)
     ├── InputError          bad input: every problem (field, rule, value, allowed) at once; nothing ran
     │                       (also a ValueError)
     ├── UnknownBackend      a backend name that is not one; names the closest (also a ValueError)
     ├── ReplicateError      replicate-python's: what Replicate's API answered, with its RFC 7807
     │    │                  fields (`type`, `title`, `status`, `detail`, `instance`)
     │    ├── ModelNotFound  unknown model reference; names the closest matches (a 404, as
     │    │                  Replicate answers; also a LookupError)
     │    └── PredictionNotFound  `predictions.get/cancel` of an id neither this kernel nor Replicate
     │                       knows (a 404; also a KeyError)
     ├── PredictionTimeout   `wait(timeout)` / `events(timeout=)` ran out; the prediction goes on
     │                       (also a TimeoutError)
     ├── ModelError          the model itself raised; carries the Prediction (its logs and traceback)
     ├── BackendError        a worker or service could not be used; names the URL and what was tried
     │    ├── BackendTimeout (also a ConnectionError; BackendTimeout also a TimeoutError)
     │    └── runners.replicate.api.APIError  a non-2xx answer of Replicate (also a ReplicateError)
     ├── BudgetExceeded      the ledger is at the budget; nothing was dispatched
     └── Canceled            raised inside a predictor by progress() when its prediction was canceled

Every failure the package raises on purpose is one of these, so `except ReplicateJupyterError`
catches them all; each also derives from the builtin a Python user would try first (`KeyError`
for a lookup by id, `TimeoutError` for a wait), so code written for those keeps working, and
`replicate_jupyter.exceptions` names them as replicate-python does (`ReplicateException`,
`ModelError`, `ReplicateError`), so its `except replicate.exceptions.ReplicateError as e:
e.status` runs unchanged.

Errors are raised before anything is dispatched wherever the problem can be known in advance,
so a bad cell never costs money and never leaves a half-run prediction behind.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ReplicateJupyterError",
    "Problem",
    "InputError",
    "ModelNotFound",
    "UnknownBackend",
    "ReplicateError",
    "PredictionNotFound",
    "PredictionTimeout",
    "ModelError",
    "BackendError",
    "BackendTimeout",
    "BudgetExceeded",
    "Canceled",
    "Interrupted",
    "LoadInterrupted",
    "looks_secret",
    "shown_value",
    "SHOWN_MAX",
]

#: the words that make a name (an input field, an option, an environment variable) secret-looking
_SECRET_WORDS = frozenset({"token", "key", "apikey", "secret", "secrets", "password", "passwd", "pwd",
                           "passphrase", "credential", "credentials", "bearer", "pat"})
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
#: names with a secret-looking word that are not secrets: the shell's working directories
_NOT_SECRET = frozenset({"PWD", "OLDPWD"})
#: the longest repr of a value an error about an unknown name shows; longer ones by type and size
SHOWN_MAX = 16
_MASK = "**********"


def looks_secret(name: Any) -> bool:
    """Whether `name` looks like it holds a credential: one of its words (split at `_`, `-`, `.`,
    spaces and camelCase) is token, key, secret, password, … (`api_key`, `hfToken`,
    `REPLICATE_API_TOKEN`; not `max_tokens` or `keyframes`), or it contains "secret"/"password"."""
    text = str(name)
    if text in _NOT_SECRET:
        return False
    low = text.lower()
    if "secret" in low or "password" in low or "apikey" in low:
        return True
    return any(w.lower() in _SECRET_WORDS for w in _WORD.findall(text))


def shown_value(name: Any, value: Any, limit: int = SHOWN_MAX) -> str:
    """How an error may show `value` given under `name` that it cannot check against a schema
    (an unknown field, an option): never for a secret-looking name, and only a short value in
    full (a long one may be a key pasted under a misspelled name: its type and size instead)."""
    if looks_secret(name) or hasattr(value, "get_secret_value"):
        return _MASK
    text = " ".join(repr(value).split())
    if len(text) <= limit:
        return text
    if isinstance(value, str):
        return f"<str, {len(value)} chars>"
    try:
        return f"<{type(value).__name__} of {len(value)}>"
    except TypeError:
        return f"<{type(value).__name__}>"


class ReplicateJupyterError(Exception):
    """Base of every error this package raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One broken rule of one input field."""

    field: str
    rule: str  # e.g. "maximum", "type", "required", "unknown", "choices", "pattern"
    value: Any
    allowed: str  # human text: "<= 50", "one of: png, webp", "an integer"
    message: str = ""

    def __post_init__(self) -> None:
        # a secret-looking field's value is never kept where an error's repr could show it
        v = self.value
        if hasattr(v, "get_secret_value") or (isinstance(v, str) and v.strip("*") and looks_secret(self.field)):
            object.__setattr__(self, "value", _MASK)

    def __str__(self) -> str:
        if self.message:
            return f"{self.field}: {self.message}"
        shown = _MASK if looks_secret(self.field) else _short(self.value)
        return f"{self.field}: {self.rule} — got {shown}, allowed: {self.allowed}"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class InputError(ReplicateJupyterError, ValueError):
    """Invalid input for a model. `problems` lists every broken rule, not just the first."""

    def __init__(self, problems: list[Problem], model: str | None = None):
        self.problems = list(problems)
        self.model = model
        head = f"Invalid input for {model}" if model else "Invalid input"
        lines = [f"{head} ({len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}):"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))

    @property
    def fields(self) -> list[str]:
        return [p.field for p in self.problems]


class ReplicateError(ReplicateJupyterError):
    """replicate-python's `ReplicateError`: an error Replicate's API answered, as RFC 7807 problem
    details (`type`, `title`, `status`, `detail`, `instance`; None when not given), so code
    written for it (`except replicate.exceptions.ReplicateError as e: e.status`) runs unchanged.

    Ours (`APIError`, a model or a prediction Replicate does not know) read as their own message;
    one built with the fields alone, as replicate-python builds it, reads as replicate-python's
    ("ReplicateError Details: ...")."""

    type: str | None = None
    title: str | None = None
    status: int | None = None
    detail: str | None = None
    instance: str | None = None

    def __init__(self, *args: Any, type: str | None = None, title: str | None = None, status: int | None = None,
                 detail: str | None = None, instance: str | None = None) -> None:
        super().__init__(*args)
        self.type, self.title, self.status, self.detail, self.instance = type, title, status, detail, instance

    @classmethod
    def from_response(cls, response: Any) -> ReplicateError:
        """From an httpx response holding problem JSON (replicate-python's constructor)."""
        try:
            data = response.json()
        except ValueError:
            data = {}
        data = data if isinstance(data, dict) else {}
        return cls(type=data.get("type"), title=data.get("title"), detail=data.get("detail"),
                   status=response.status_code, instance=data.get("instance"))

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set (replicate-python's `to_dict`)."""
        fields = {"type": self.type, "title": self.title, "status": self.status, "detail": self.detail,
                  "instance": self.instance}
        return {k: v for k, v in fields.items() if v is not None}

    def __str__(self) -> str:
        if self.args:
            return super().__str__()
        return "ReplicateError Details:\n" + "\n".join(f"{k}: {v}" for k, v in self.to_dict().items())


class ModelNotFound(ReplicateError, LookupError):
    """An unknown model reference, naming the closest matches. A 404 `ReplicateError` too, as
    replicate-python's answer to an unknown model is: code written for Replicate (`except
    ReplicateError as e: e.status == 404`) keeps catching it, on every backend."""

    def __init__(self, ref: str, suggestions: list[str] | None = None, backend: str | None = None, detail: str = ""):
        self._init_args = (ref, list(suggestions or []), backend, detail)
        self.ref = ref
        self.suggestions = list(suggestions or [])
        self.backend = backend
        msg = f"Unknown model {ref!r}"
        if backend:
            msg += f" on backend {backend!r}"
        if detail:
            msg += f": {detail}"
        if self.suggestions:
            msg += ". Did you mean: " + ", ".join(self.suggestions) + "?"
        super().__init__(msg, status=404, title="Not found", detail=detail or msg)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:  # pickled by its arguments, not its message
        return type(self), self._init_args


class UnknownBackend(ReplicateJupyterError, ValueError):
    """A backend name that is not one (or one this install lacks); names the closest."""

    def __init__(self, name: str, known: list[str] | tuple[str, ...] = (), detail: str = ""):
        import difflib

        self._init_args = (name, tuple(known), detail)
        self.name = name
        self.known = list(known)
        close = difflib.get_close_matches(name, self.known, n=1)
        self.suggestion = close[0] if close else None
        if detail:
            msg = f"The {name!r} backend {detail}"
        else:
            hint = f" — did you mean {self.suggestion!r}?" if self.suggestion else ""
            msg = f"Unknown backend {name!r}{hint} (backends: {', '.join(self.known)})"
        super().__init__(msg)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:  # pickled by its arguments, not its message
        return type(self), self._init_args


class PredictionNotFound(ReplicateError, KeyError):
    """No prediction with this id in this kernel (nor on Replicate, when a token is set): a 404
    `ReplicateError`, as replicate-python's `predictions.get` raises. A KeyError too (it is a
    lookup by key), but shown as its message rather than KeyError's quoted repr."""

    def __init__(self, id: str):
        self.id = id
        super().__init__(f"No prediction {id!r} in this kernel", status=404, title="Not found",
                         detail=f"No prediction {id!r}")

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.id,)


class PredictionTimeout(ReplicateJupyterError, TimeoutError):
    """Waiting for a prediction ran out of time. The prediction itself is not touched: it goes
    on running, and can be waited for again or canceled."""

    def __init__(self, prediction_id: str, status: str = "running", timeout: float | None = None,
                 what: str = "prediction"):
        self.prediction_id = prediction_id
        self.status = status
        self.timeout = timeout
        self._init_args = (prediction_id, status, timeout, what)
        super().__init__(f"{what} {prediction_id} still {status} after {timeout}s")

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), self._init_args


class ModelError(ReplicateJupyterError):
    """The model raised. The prediction keeps the model's own traceback and logs. It reads as
    the model's error, as replicate-python's does (`e.prediction` names the model and status)."""

    def __init__(self, prediction: Any):
        self.prediction = prediction
        super().__init__(prediction.error or f"{prediction.model} failed")


class BackendError(ReplicateJupyterError, ConnectionError):
    def __init__(self, message: str, url: str | None = None, tried: list[str] | None = None):
        self.url = url
        self.tried = list(tried or [])
        super().__init__(message)


class BackendTimeout(BackendError, TimeoutError):
    pass


class BudgetExceeded(ReplicateJupyterError):
    def __init__(self, budget: float, spent: float, what: str = "budget"):
        self.budget = budget
        self.spent = spent
        super().__init__(
            f"Refused: the {what} of ${budget:.4f} is reached (spent ${spent:.4f}); "
            f"nothing was run. Raise it with %replicate budget USD."
            if what == "budget"
            else f"Refused: {what} ${budget:.4f} reached (spent ${spent:.4f})."
        )


class Canceled(ReplicateJupyterError):
    """Raised inside a predictor (by progress()/preview()) once its prediction is canceled,
    so a loop stops at its next step."""


class Interrupted(ReplicateJupyterError, KeyboardInterrupt):
    """A kernel interrupt stopped a cell's predictions: they are canceled and billed for the time
    they ran. A KeyboardInterrupt too, so code that stops on an interrupt (`except
    KeyboardInterrupt`, Run All) stops here as well; shown as one line."""


class LoadInterrupted(Interrupted):
    """The kernel was interrupted while a model was loading. The load goes on in the background
    (nothing is half-imported) and the next run uses it."""

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(f"interrupted while loading {model}; it goes on loading in the background, "
                         "and the next run uses it")

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.model,)
