"""No tqdm bars from diffusers/transformers while a pipeline loads (used by the hf predictors)."""
from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator

__all__ = ["quiet_progress_bars"]


@contextlib.contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """No tqdm bars from diffusers/transformers while loading: in a prediction's logs they are
    dozens of carriage-return lines that say nothing the setup_time metric does not."""
    restore = []
    for name in ("diffusers.utils.logging", "transformers.utils.logging"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if mod.is_progress_bar_enabled():
            mod.disable_progress_bar()
            restore.append(mod.enable_progress_bar)
    try:
        yield
    finally:
        for enable in restore:
            enable()
