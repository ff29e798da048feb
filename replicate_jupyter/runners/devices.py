"""Which device the kernel computes on, and which Replicate hardware SKU that is billed as.

Only looks at torch if something already imported it: a kernel running only remote backends or
torch-free predictors must never pay torch's 2.5 s import for a cost line.
"""
from __future__ import annotations

import sys
import warnings
from typing import Any

__all__ = ["sku_for_name", "current_sku", "device_name", "FALLBACK_GPU_SKU", "synchronize", "free_device_memory",
           "memory_in_use", "total_memory", "estimate_bytes", "to_cpu"]

# Most specific first: "A100-SXM4-80GB" must match before "A100".
_GPU_SKUS: list[tuple[tuple[str, ...], str]] = [
    (("H100", "H200", "GH200"), "gpu-h100"),
    (("A100",), "gpu-a100-large"),
    (("L40S",), "gpu-l40s"),
    (("L40", "L4", "A40", "A6000", "RTX 6000", "A10"), "gpu-a40-large"),
    (("T4", "V100", "P100"), "gpu-t4"),
]
FALLBACK_GPU_SKU = "gpu-a40-large"
_warned: set[str] = set()


def sku_for_name(name: str, count: int = 1) -> str:
    """Map a device name (`torch.cuda.get_device_name()`, or 'cpu'/'mps') to a price SKU."""
    upper = name.upper()
    if upper in ("CPU", "") or upper.startswith("CPU"):
        return "cpu"
    if upper == "MPS" or "APPLE" in upper:
        return "cpu"  # Replicate has no Apple SKU; the Mac's own time is billed like a CPU
    sku = None
    for keys, candidate in _GPU_SKUS:
        if any(k in upper for k in keys):
            sku = candidate
            break
    if sku is None:
        sku = FALLBACK_GPU_SKU
        if name not in _warned:
            _warned.add(name)
            warnings.warn(
                f"Unknown GPU {name!r}: billed as {FALLBACK_GPU_SKU}. "
                f"Set a price with %replicate price {FALLBACK_GPU_SKU}=USD_PER_S if that is wrong.",
                stacklevel=2,
            )
    if count > 1:
        sku = f"{sku}-{count}x"
    return sku


def device_name() -> str:
    torch = sys.modules.get("torch")
    if torch is None:
        return "cpu"
    try:
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(torch.cuda.current_device())
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
    except Exception:
        pass
    return "cpu"


def current_sku() -> str:
    return sku_for_name(device_name())


def synchronize() -> None:
    """Wait for queued GPU work, so a clock read after it counts the work."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()
        except Exception:
            pass


def free_device_memory() -> None:
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.empty_cache()
            mps = getattr(torch, "mps", None)
            if mps is not None and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
                mps.empty_cache()
        except Exception:
            pass


def memory_in_use() -> int | None:
    """Bytes this process holds on the accelerator, or None on CPU."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                return int(torch.cuda.memory_allocated())
        except Exception:
            pass
    return None


def total_memory() -> int | None:
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                return int(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)
        except Exception:
            pass
    return None


def estimate_bytes(obj: Any, depth: int = 2) -> int:
    """Bytes of torch weights an object holds (modules, tensors, diffusers pipeline components)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return 0
    seen: set[int] = set()

    def size_of(value: Any, d: int) -> int:
        if id(value) in seen:
            return 0
        seen.add(id(value))
        if isinstance(value, torch.nn.Module):
            return sum(t.numel() * t.element_size() for t in list(value.parameters()) + list(value.buffers()))
        if isinstance(value, torch.Tensor):
            return value.numel() * value.element_size()
        if d <= 0:
            return 0
        comps = getattr(value, "components", None)
        if isinstance(comps, dict):
            return sum(size_of(v, d - 1) for v in comps.values())
        if isinstance(value, (list, tuple)):
            return sum(size_of(v, d - 1) for v in value)
        if isinstance(value, dict):
            return sum(size_of(v, d - 1) for v in value.values())
        attrs = getattr(value, "__dict__", None)
        if attrs and not isinstance(value, type):
            return sum(size_of(v, d - 1) for v in attrs.values())
        return 0

    return size_of(obj, depth)


def to_cpu(instance: Any) -> None:
    """Move the instance's torch weights off the accelerator before dropping it."""
    torch = sys.modules.get("torch")
    if torch is None or not (torch.cuda.is_available()):
        return
    for value in list(getattr(instance, "__dict__", {}).values()):
        to = getattr(value, "to", None)
        if callable(to) and (isinstance(value, torch.nn.Module) or hasattr(value, "components")):
            try:
                to("cpu")
            except Exception:
                pass
