"""What a prediction cost: predict_time × the SKU's price per second.

The table ships as data (`prices.json`, Replicate's public prices) and can be overridden per
kernel (`%replicate price SKU=USD_PER_S`), because teams run their own GPUs at their own rates.
Multi-GPU SKUs (`gpu-a100-large-2x`, `gpu-h100-8x`) scale the single-GPU price.
"""
from __future__ import annotations

import json
import math
import re
from importlib import resources

from replicate_jupyter.errors import InputError, Problem

__all__ = ["PriceTable", "prices", "price", "cost_of"]

_MULTI = re.compile(r"^(?P<base>.+?)-(?P<n>\d+)x$")


class PriceTable:
    """The shipped prices plus this kernel's overrides, looked up by SKU."""

    def __init__(self) -> None:
        raw = json.loads(resources.files(__package__).joinpath("prices.json").read_text())
        self.defaults: dict[str, float] = {k: float(v) for k, v in raw.items() if not k.startswith("_")}
        self.overrides: dict[str, float] = {}

    def set(self, sku: str, usd_per_second: float) -> None:
        """Override one SKU's price. A price that is not a finite number ≥ 0 is refused
        (`InputError`), and nothing changes: a NaN would silently turn every cost into NaN."""
        try:
            value = float(usd_per_second)
        except (TypeError, ValueError):
            value = math.nan
        if not sku or not isinstance(sku, str):
            raise InputError([Problem("sku", "required", sku, "a hardware SKU such as gpu-a100-large")])
        if not math.isfinite(value) or value < 0:
            raise InputError([Problem(sku, "minimum", usd_per_second, "a finite number >= 0 (USD per second)")])
        self.overrides[sku] = value

    def reset(self) -> None:
        self.overrides.clear()

    def price(self, sku: str | None) -> float:
        """USD per second for `sku`; unknown SKUs cost 0 rather than guessing."""
        if not sku:
            return 0.0
        if sku in self.overrides:
            return self.overrides[sku]
        if sku in self.defaults:
            return self.defaults[sku]
        m = _MULTI.match(sku)
        if m:
            return int(m["n"]) * self.price(m["base"])
        return 0.0

    def known(self, sku: str | None) -> bool:
        if not sku:
            return False
        m = _MULTI.match(sku)
        return sku in self.overrides or sku in self.defaults or bool(m and self.known(m["base"]))

    def table(self) -> dict[str, float]:
        return {**self.defaults, **self.overrides}


prices = PriceTable()


def price(sku: str | None) -> float:
    """USD per second for `sku` in this kernel's table."""
    return prices.price(sku)


def cost_of(predict_time: float, sku: str | None) -> float:
    """What `predict_time` seconds on `sku` cost, rounded to 1e-8 USD (Replicate's precision)."""
    return round(float(predict_time) * prices.price(sku), 8)
