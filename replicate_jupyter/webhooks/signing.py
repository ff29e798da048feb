"""Webhook signing secrets, signatures and their check, per Standard Webhooks.

Replicate signs every webhook as Standard Webhooks says: `webhook-signature: v1,<base64
HMAC-SHA256 of "id.timestamp.body">`, keyed with the base64 after `whsec_`. The kernel signs its
own deliveries the same way with the same package, so a consumer written for Replicate (with
replicate-python's `Webhooks.validate` or `standardwebhooks`) verifies ours unchanged.

The kernel's own secret comes from `REPLICATE_JUPYTER_WEBHOOK_SECRET`, or from what
`set_default_secret` was given (the magics' traitlet), else it is generated once per user and
kept in a 0600 file: a user's server then keeps one key across kernels and restarts.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import os
import pathlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from standardwebhooks import Webhook

from replicate_jupyter.errors import InputError, Problem, ReplicateJupyterError

__all__ = [
    "Secret",
    "WebhookValidationError",
    "MissingWebhookHeaderError",
    "MissingWebhookBodyError",
    "InvalidSecretKeyError",
    "InvalidTimestampError",
    "InvalidSignatureError",
    "ENV_SECRET",
    "new_secret",
    "default_secret",
    "set_default_secret",
    "secret_path",
    "check_secret",
    "sign",
    "validate",
]

ENV_SECRET = "REPLICATE_JUPYTER_WEBHOOK_SECRET"
_PREFIX = "whsec_"


@dataclass(frozen=True)
class Secret:
    """A signing secret, shaped like replicate-python's `WebhookSigningSecret` (`.key`).
    Its repr hides the key, so printing it in a notebook never saves it into the file."""

    key: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Secret(key='{_PREFIX}…')"

    __str__ = __repr__


class WebhookValidationError(ReplicateJupyterError, ValueError):
    """A delivery that does not verify. The subclasses carry replicate-python 1.0.7's names, so
    code that catches them by name (or as ValueError) works with either package."""


class MissingWebhookHeaderError(WebhookValidationError):
    """webhook-id, webhook-timestamp or webhook-signature is missing."""


class MissingWebhookBodyError(WebhookValidationError):
    """No body was given."""


class InvalidSecretKeyError(WebhookValidationError):
    """The key is not `whsec_<base64>` (or none was given)."""


class InvalidTimestampError(WebhookValidationError):
    """webhook-timestamp is not a number, or is further from now than the tolerance."""


class InvalidSignatureError(WebhookValidationError):
    """No signature matches: a wrong secret, or the body or headers were changed."""


def new_secret() -> Secret:
    """A fresh random key: 24 bytes, as Svix and Replicate issue them (no base64 padding)."""
    return Secret(_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode("ascii"))


def _check_key(key: str, where: str) -> str:
    key = key.strip()
    raw = key[len(_PREFIX):] if key.startswith(_PREFIX) else ""
    try:  # unpadded base64 is accepted, as standardwebhooks does
        ok = bool(raw) and "_" not in raw and bool(base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True))
    except (binascii.Error, ValueError):
        ok = False
    if not ok:  # the value itself is a secret: never echoed
        raise InputError([Problem(where, "format", "<hidden>", "whsec_ followed by base64 (e.g. from new_secret())")])
    return key


_configured: Secret | None = None
_cached: tuple[str, Secret] | None = None  # (the env value or the file's path, its key)
_lock = threading.Lock()


def set_default_secret(key: str | None) -> None:
    """Set the kernel's signing key (the magics' traitlet calls this); None goes back to the
    environment variable or the per-user file."""
    global _configured
    _configured = None if key is None else Secret(_check_key(key, "webhook_secret"))


def secret_path() -> pathlib.Path:
    """Where the per-user key lives: `$XDG_CONFIG_HOME/replicate-jupyter/webhook_secret`."""
    return pathlib.Path(_path_text())


def _path_text() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.environ.get("HOME") or os.path.expanduser("~"), ".config")
    return os.path.join(base, "replicate-jupyter", "webhook_secret")


def default_secret() -> Secret:
    """The key the kernel signs its deliveries with (and the receiver checks them with). Read
    once per source: every webhook asks for it, so a repeat is two dictionary lookups."""
    global _cached
    if _configured is not None:
        return _configured
    env = os.environ.get(ENV_SECRET)
    if env:
        hit = _cached
        if hit is None or hit[0] != env:
            hit = _cached = (env, Secret(_check_key(env, ENV_SECRET)))
        return hit[1]
    path = _path_text()
    hit = _cached
    if hit is not None and hit[0] == path:
        return hit[1]
    with _lock:
        _cached = (path, _load_or_create(pathlib.Path(path)))
        return _cached[1]


def _load_or_create(path: pathlib.Path) -> Secret:
    if path.exists():
        return Secret(_check_key(path.read_text(), str(path)))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fresh = new_secret()
    try:  # O_EXCL: two kernels starting at once agree on the first key written
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # the other writer may not have written yet
            text = path.read_text().strip()
            if text:
                return Secret(_check_key(text, str(path)))
            time.sleep(0.01)
        raise
    with os.fdopen(fd, "w") as fh:
        fh.write(fresh.key + "\n")
    return fresh


_signers: dict[str, Webhook] = {}  # key → its standardwebhooks signer (the key decoded once)


def _signer(secret: Any) -> Webhook:
    key = getattr(secret, "key", secret)  # ours, replicate-python's WebhookSigningSecret, or a str
    hit = _signers.get(key) if isinstance(key, str) else None
    if hit is not None:
        return hit
    if not isinstance(key, str) or not key:
        raise InvalidSecretKeyError("Missing webhook signing secret")
    try:
        signer = Webhook(_check_key(key, "secret"))
    except InputError:
        raise InvalidSecretKeyError("Invalid secret key format: expected whsec_<base64>") from None
    if len(_signers) > 64:
        _signers.clear()
    _signers[key] = signer
    return signer


def check_secret(secret: Any) -> None:
    """Raise InvalidSecretKeyError now for a key that could not sign (so `attach` fails early)."""
    _signer(secret)


def sign(secret: Secret | str, msg_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` value for one attempt of one message."""
    return _signer(secret).sign(msg_id, datetime.fromtimestamp(timestamp, tz=timezone.utc), body)


def validate(
    request: Any = None,
    headers: Mapping[str, str] | None = None,
    body: str | bytes | None = None,
    secret: Any = None,
    tolerance: float | None = 300,
) -> bool:
    """Check a delivery as replicate-python 1.0.7's `Webhooks.validate(headers=, body=, secret=,
    tolerance=)` does (or `request=` an httpx.Request), with the timestamp checked by default:
    within `tolerance` seconds of now (None: not checked), which is what stops a captured
    delivery from being replayed later. Raises a `WebhookValidationError` subclass; returns True
    (1.0.7 returns None, older versions a bool: `if validate(...)` works with both)."""
    if secret is None:
        raise InvalidSecretKeyError("Missing webhook signing secret")
    if request is not None:
        if headers is not None or body is not None:
            raise ValueError("Only one of request or headers/body can be provided")
        headers, body = request.headers, request.content
    if not headers:
        raise MissingWebhookHeaderError("Missing webhook headers")
    lower = {k.lower(): v for k, v in dict(headers).items()}
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        if not lower.get(name):
            raise MissingWebhookHeaderError(f"Missing webhook header {name!r}")
    if not body:
        raise MissingWebhookBodyError("Missing webhook body")
    text = body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else body
    try:
        ts = int(lower["webhook-timestamp"])
    except ValueError:
        raise InvalidTimestampError(f"webhook-timestamp is not a number: {lower['webhook-timestamp']!r}") from None
    age = time.time() - ts
    if tolerance is not None and abs(age) > tolerance:
        when = f"{age:.0f} s old" if age > 0 else f"{-age:.0f} s in the future"
        raise InvalidTimestampError(f"webhook-timestamp is {when} (tolerance {tolerance:g} s)")
    expected = base64.b64decode(sign(secret, lower["webhook-id"], ts, text).split(",", 1)[1])
    for candidate in lower["webhook-signature"].split():
        version, _, value = candidate.partition(",")
        if version != "v1" or not value:
            continue
        try:
            given = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(given, expected):
            return True
    raise InvalidSignatureError("No matching webhook signature (wrong secret, or the body was changed)")
