"""`prediction.progress`: replicate-python's `Prediction.Progress`, and still our `(step, total)`.

replicate-python gives `Progress(percentage, current, total)`, parsed from the tqdm lines in a
prediction's logs; this project's code (the card, `eta()`, the payload) and its users unpack
`step, total = p.progress`. A NamedTuple of `(current, total)` with `percentage` and `step`
as properties is both, so neither kind of code has to change. The replicate backend builds it
from the tqdm lines its models print (`parse_line`), as replicate-python does, since Replicate
sends no progress events; the kernel's own backends from the predictor's `progress()` calls.
"""
from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["Progress", "parse_line", "parse"]

#: replicate-python's pattern for a tqdm line: ` 40%|████      | 4/10 [00:01<00:02, ...]`
_TQDM = re.compile(r"^\s*(?P<percentage>\d+)%\s*\|.+?\|\s*(?P<current>\d+)\/(?P<total>\d+)")


class Progress(NamedTuple):
    """Step `current` of `total` (None when unknown); unpacks as `(step, total)`."""

    current: int
    total: int | None

    @property
    def percentage(self) -> float | None:
        """The fraction done, 0.0 to 1.0 (replicate-python's field; None with no total)."""
        if not self.total:
            return None
        return min(1.0, max(0.0, self.current / self.total))

    @property
    def step(self) -> int:
        """Our name for `current` (what `progress(step, total)` reported)."""
        return self.current

    def __repr__(self) -> str:
        return f"Progress(percentage={self.percentage}, current={self.current}, total={self.total})"


def parse_line(line: str) -> Progress | None:
    """The progress a tqdm log line shows, else None. A line holding several redraws joined by
    carriage returns (tqdm's way on a terminal) gives its last one."""
    for part in reversed(line.split("\r")):
        m = _TQDM.match(part.strip())
        if m is not None and len(_TQDM.findall(part.strip())) == 1:
            return Progress(int(m["current"]), int(m["total"]))
    return None


def parse(logs: str) -> Progress | None:
    """The progress of the last tqdm line in `logs` (replicate-python's `Progress.parse`)."""
    for line in reversed(logs.split("\n")):
        got = parse_line(line)
        if got is not None:
            return got
    return None
