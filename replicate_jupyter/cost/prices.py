"""The price table: what a second of hardware, or a unit of a model's output, costs.

Replicate bills two ways, and the table holds both (shipped as `prices.json`, each entry with
its source and the date it was read):

- hardware: USD per second of a SKU (`gpu-t4`, `cpu`, …); multi-GPU SKUs (`gpu-h100-8x`) scale
  the single-GPU price. What a model on our own runners, or a community model, costs.
- models: `owner/name` or `owner/name:version` → USD per unit (`image`, `megapixel`, `video`,
  `video_second`, `audio_second`, `input_token`, `output_token`, `second`, `prediction`, or a
  metric the model records). Replicate's official models are billed this way; an entry here
  overrides hardware pricing for that model.

Three layers, later ones winning: the shipped table, a user's table file (`load`, from
`c.ReplicateMagics.price_file` or `%replicate price --file`), and this kernel's overrides
(`%replicate price …`). `overrides` stays the SKU → USD/s dict the session's `prices` trait
views, so `c.ReplicateMagics.prices` keeps working.
"""
from __future__ import annotations

import json
import math
import pathlib
import re
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from typing import Any

from replicate_jupyter.errors import InputError, Problem

__all__ = ["PriceTable", "ModelPrice", "UNITS", "prices", "price", "cost_of"]

_MULTI = re.compile(r"^(?P<base>.+?)-(?P<n>\d+)x$")
_MODEL = re.compile(r"^[\w.-]+/[\w.-]+(:[\w.-]+)?$")
_UNIT = re.compile(r"^[a-z][a-z0-9_]*$")

#: the units measured from a prediction (any other unit is read from the metrics the model records)
UNITS = {
    "second": "second of predict time",
    "prediction": "prediction",
    "image": "output image",
    "megapixel": "megapixel of output images",
    "video": "output video",
    "video_second": "second of output video",
    "audio_second": "second of output audio",
    "input_token": "input token",
    "output_token": "output token",
}
_META = ("source", "date")


@dataclass(frozen=True)
class ModelPrice:
    """A model billed per unit: `units` maps a unit to USD per unit."""

    model: str
    units: dict[str, float]
    source: str = ""
    date: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "units": dict(self.units), "source": self.source, "date": self.date}


@dataclass
class _Layer:
    name: str
    hardware: dict[str, float] = field(default_factory=dict)
    hardware_meta: dict[str, tuple[str, str]] = field(default_factory=dict)
    models: dict[str, ModelPrice] = field(default_factory=dict)


def _money(field_name: str, value: Any, allowed: str) -> float:
    """A price: a finite number >= 0 (a NaN would turn every cost into NaN, silently)."""
    try:
        usd = float(value)
    except (TypeError, ValueError):
        usd = math.nan
    number = isinstance(value, (int, float, str)) and not isinstance(value, bool) and not (
        isinstance(value, str) and math.isnan(usd) and value.strip().lower() != "nan")
    rule = "number" if not number else "finite" if not math.isfinite(usd) else "minimum" if usd < 0 else ""
    if rule:
        raise InputError([Problem(field_name, rule, value, allowed)])
    return usd


def _check_model(ref: Any) -> str:
    if not isinstance(ref, str) or not _MODEL.match(ref):
        raise InputError([Problem("model", "format", ref, "owner/name or owner/name:version")])
    return ref


def _check_units(ref: str, units: dict[str, Any]) -> dict[str, float]:
    if not units:
        raise InputError([Problem(ref, "required", units, "at least one UNIT=USD, units: " + ", ".join(UNITS))])
    problems, out = [], {}
    for unit, usd in units.items():
        if not isinstance(unit, str) or not _UNIT.match(unit):
            problems.append(Problem(f"{ref}.{unit}", "unit", unit, "a unit name: " + ", ".join(UNITS)
                                    + ", or a metric the model records (lowercase, digits, _)"))
            continue
        try:
            out[unit] = _money(f"{ref}.{unit}", usd, f"a finite number >= 0 (USD per {UNITS.get(unit, unit)})")
        except InputError as exc:
            problems += exc.problems
    if problems:
        raise InputError(problems)
    return out


class PriceTable:
    """The shipped prices, a user's table file and this kernel's overrides."""

    def __init__(self) -> None:
        self.shipped = _Layer("shipped")
        self.user = _Layer("file")
        self._read(json.loads(resources.files(__package__).joinpath("prices.json").read_text()), self.shipped)
        self.defaults: dict[str, float] = self.shipped.hardware  # the shipped SKU prices (read-only by use)
        self.overrides: dict[str, float] = {}  # SKU → USD/s set in this kernel (the session's `prices` trait)
        self.model_overrides: dict[str, ModelPrice] = {}
        self.files: list[str] = []

    # ----- reading tables ---------------------------------------------------------------------
    @staticmethod
    def _read(raw: Any, layer: _Layer, where: str = "prices.json") -> None:
        """A table: `{"hardware": {SKU: USD | {"usd_per_second", "source", "date"}}, "models":
        {ref: {unit: USD, "source", "date"}}}`; a flat `{SKU: USD}` is read as hardware."""
        if not isinstance(raw, dict):
            raise InputError([Problem(where, "format", type(raw).__name__, "a JSON object with hardware/models")])
        flat = {k: v for k, v in raw.items() if k not in ("hardware", "models") and not k.startswith("_")}
        hardware = {**flat, **(raw.get("hardware") or {})}
        problems: list[Problem] = []
        for sku, spec in hardware.items():
            meta = spec if isinstance(spec, dict) else {}
            value = meta.get("usd_per_second") if isinstance(spec, dict) else spec
            try:
                layer.hardware[str(sku)] = _money(f"{where}: {sku}", value, "USD per second, a finite number >= 0")
                layer.hardware_meta[str(sku)] = (str(meta.get("source") or where), str(meta.get("date") or ""))
            except InputError as exc:
                problems += exc.problems
        for ref, spec in (raw.get("models") or {}).items():
            try:
                _check_model(ref)
                if not isinstance(spec, dict):
                    raise InputError([Problem(f"{where}: {ref}", "format", spec, "an object of UNIT: USD")])
                units = _check_units(ref, {k: v for k, v in spec.items() if k not in _META})
                layer.models[ref] = ModelPrice(ref, units, str(spec.get("source") or where), str(spec.get("date") or ""))
            except InputError as exc:
                problems += exc.problems
        if problems:
            raise InputError(problems)

    def load(self, path: str | pathlib.Path) -> int:
        """Read a user's table file (the same shape as prices.json) over the shipped one; all or
        nothing: a bad entry refuses the file and the table stays as it was. Returns the entries."""
        p = pathlib.Path(path).expanduser()
        try:
            raw = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise InputError([Problem("price_file", "file", str(path), f"a readable JSON price table ({exc})")]) from None
        layer = _Layer("file")
        self._read(raw, layer, where=str(p))
        self.user.hardware.update(layer.hardware)
        self.user.hardware_meta.update(layer.hardware_meta)
        self.user.models.update(layer.models)
        self.files.append(str(p))
        return len(layer.hardware) + len(layer.models)

    # ----- setting ------------------------------------------------------------------------------
    def set(self, sku: str, usd_per_second: float) -> None:
        """Override one SKU's price. A price that is not a finite number ≥ 0 is refused
        (`InputError`), and nothing changes: a NaN would silently turn every cost into NaN."""
        if not sku or not isinstance(sku, str):
            raise InputError([Problem("sku", "required", sku, "a hardware SKU such as gpu-a100-large")])
        self.overrides[sku] = _money(sku, usd_per_second, "a finite number >= 0 (USD per second)")

    def set_model(self, ref: str, units: dict[str, Any], source: str = "set in this kernel (%replicate price)") -> ModelPrice:
        """Price `ref` (owner/name[:version]) per unit, replacing what the kernel set for it before."""
        entry = ModelPrice(_check_model(ref), _check_units(ref, units), source, date.today().isoformat())
        self.model_overrides[ref] = entry
        return entry

    def reset(self) -> None:
        """Forget this kernel's overrides (SKU and model); the shipped table and files stay."""
        self.overrides.clear()
        self.model_overrides.clear()

    # ----- looking up ---------------------------------------------------------------------------
    def price(self, sku: str | None) -> float:
        """USD per second for `sku`; unknown SKUs cost 0 rather than guessing (`known` tells)."""
        if not sku:
            return 0.0
        for table in (self.overrides, self.user.hardware, self.shipped.hardware):
            if sku in table:
                return table[sku]
        m = _MULTI.match(sku)
        if m:
            return int(m["n"]) * self.price(m["base"])
        return 0.0

    def known(self, sku: str | None) -> bool:
        if not sku:
            return False
        if any(sku in t for t in (self.overrides, self.user.hardware, self.shipped.hardware)):
            return True
        m = _MULTI.match(sku)
        return bool(m and self.known(m["base"]))

    def hardware_source(self, sku: str | None) -> tuple[str, str]:
        """(source, date) of the price `sku` is costed at."""
        if not sku:
            return ("", "")
        if sku in self.overrides:
            return ("set in this kernel (%replicate price)", date.today().isoformat())
        for layer in (self.user, self.shipped):
            if sku in layer.hardware:
                return layer.hardware_meta.get(sku, ("", ""))
        m = _MULTI.match(sku)
        if m:
            src, when = self.hardware_source(m["base"])
            return (f"{m['n']} × {m['base']}: {src}", when)
        return ("", "")

    def model(self, model: str | None, version: str | None = None) -> ModelPrice | None:
        """The per-unit entry for `model` (its version's first, then the model's), or None:
        then it is billed by hardware."""
        if not model:
            return None
        keys = ([f"{model}:{version}"] if version else []) + [model]
        for key in keys:
            for table in (self.model_overrides, self.user.models, self.shipped.models):
                if key in table:
                    return table[key]
        return None

    def table(self) -> dict[str, float]:
        """SKU → USD per second, every layer merged."""
        return {**self.shipped.hardware, **self.user.hardware, **self.overrides}

    def models(self) -> dict[str, ModelPrice]:
        """owner/name[:version] → its per-unit entry, every layer merged."""
        return {**self.shipped.models, **self.user.models, **self.model_overrides}


prices = PriceTable()


def price(sku: str | None) -> float:
    """USD per second for `sku` in this kernel's table."""
    return prices.price(sku)


def cost_of(predict_time: float, sku: str | None) -> float:
    """What `predict_time` seconds on `sku` cost, rounded to 1e-8 USD (Replicate's precision)."""
    return round(float(predict_time) * prices.price(sku), 8)
