"""Webhooks in Replicate's wire format, on every backend.

    from replicate_jupyter import webhooks
    rx = webhooks.listen()                       # a verifying receiver on 127.0.0.1
    d = webhooks.attach(prediction, rx.url)      # deliver this prediction's webhooks there
    webhooks.validate(headers=h, body=b, secret=webhooks.default.secret())

`signing` holds the secret, the signature and its check (Standard Webhooks, via the
`standardwebhooks` package); `body` the prediction as Replicate's API returns it; `delivery`
the throttled, retried, signed sending from a prediction's event stream; `receiver` the
notebook's receiver and its live table. Nothing here loads httpx, asyncio or http.server until
it is used, so importing the package stays light.
"""
from __future__ import annotations

from replicate_jupyter.webhooks.delivery import EVENTS, Deliverer, Record, RetryPolicy, WebhookDeliveryWarning, attach, check
from replicate_jupyter.webhooks.receiver import Delivery, Receiver, listen
from replicate_jupyter.webhooks.signing import (
    ENV_SECRET,
    InvalidSecretKeyError,
    InvalidSignatureError,
    InvalidTimestampError,
    MissingWebhookBodyError,
    MissingWebhookHeaderError,
    Secret,
    WebhookValidationError,
    default_secret,
    new_secret,
    set_default_secret,
    sign,
    validate,
)

__all__ = [
    "attach", "check", "Deliverer", "Record", "RetryPolicy", "WebhookDeliveryWarning", "EVENTS",
    "listen", "Receiver", "Delivery",
    "default", "default_secret", "set_default_secret", "new_secret", "Secret", "ENV_SECRET",
    "sign", "validate", "WebhookValidationError", "MissingWebhookHeaderError", "MissingWebhookBodyError",
    "InvalidSecretKeyError", "InvalidTimestampError", "InvalidSignatureError",
]


class _Default:
    """`webhooks.default.secret()`, as replicate-python spells it. This is the kernel's own key
    (what local, workers and Ray deliveries are signed with); on the replicate backend the API
    asks Replicate's `GET /v1/webhooks/default/secret` instead."""

    def secret(self) -> Secret:
        return default_secret()

    def __repr__(self) -> str:
        return "<webhooks.default>"


default = _Default()
