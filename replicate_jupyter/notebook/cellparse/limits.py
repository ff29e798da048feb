"""What one `%%replicate` cell may ask the parser to build.

Each limit stops a body or template that would otherwise hang the kernel or send megabytes to
a model (a billion-laughs body, `{x:>30000000}`, 3,000 levels of `[`); each is far above what
a cell typed by a person needs. They are read at every call, so a notebook can raise one:

    from replicate_jupyter.notebook.cellparse import limits
    limits.MAX_BODY_CHARS = 5_000_000
"""
from __future__ import annotations

__all__ = ["MAX_BODY_CHARS", "MAX_FILLED_CHARS", "MAX_FORMAT_WIDTH", "MAX_DEPTH", "MAX_ALIASES", "MAX_NODES",
           "MAX_SWEEP", "SEED_RANGE"]

MAX_BODY_CHARS = 1_000_000  # the body as typed (bigger text: pass a variable as `$name`)
MAX_FILLED_CHARS = 1_000_000  # one string after its {name} fields are filled
MAX_FORMAT_WIDTH = 1000  # width and precision in `{name:>N.M}`
MAX_DEPTH = 64  # nested YAML collections
MAX_ALIASES = 100  # `*alias` uses in one body
MAX_NODES = 100_000  # YAML values, counting every value an alias repeats
MAX_SWEEP = 10_000  # combinations in one --sweep grid
SEED_RANGE = (0, 2**32 - 1)  # what numpy, torch and cog predictors all accept
