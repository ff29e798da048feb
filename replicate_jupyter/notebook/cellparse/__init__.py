"""Turn a `%%replicate` cell (its option line and its body) into typed values.

This package only parses: it never runs a model and never touches the display, so every rule
of the cell language is testable without a kernel, and a bad cell is refused before anything
is dispatched or charged.

    %%replicate hf:stabilityai/sdxl-turbo --on local -o pic --sweep seed=1,2
    prompt: a lighthouse at dusk, {style}
    image: $init_image

- `line`: the option line, split by `shlex` and read by argparse; then every value is checked
  (`--seed` an integer in SEED_RANGE, `--max-cost` a finite USD > 0, `-o` a Python name, `--on`
  a known backend, `--sweep KEY=V1,V2` well-formed). A `LineError` names the option and rule.
- `body`: a YAML mapping of inputs, or else plain text for the model's first string input.
  A body meant as YAML (it starts with `{`/`[`, or has a `name:` line) that does not parse is an
  error, never sent as the prompt. `{name}`, `{name.attr}`, `{name[key]}` are filled from the
  user namespace (plain names only, widths capped); a whole value `$name` is that object itself.
- `safe_yaml`: the YAML loader both use: no tags, no duplicate keys, limits on aliases, nesting
  and size, each refusal naming its line.
- `limits`: the numbers behind those rules, read at each call (a notebook may raise them).
"""
from __future__ import annotations

from replicate_jupyter.notebook.cellparse import limits
from replicate_jupyter.notebook.cellparse.body import parse_body
from replicate_jupyter.notebook.cellparse.line import (
    CellArgs,
    LineError,
    model_axis,
    parse_line,
    parse_options,
    parse_sweep,
    parse_usd,
    sweep_grid,
    yaml_scalar,
)

__all__ = ["CellArgs", "LineError", "model_axis", "parse_line", "parse_body", "parse_sweep", "sweep_grid", "parse_options",
           "parse_usd", "yaml_scalar", "limits", "clear_memo"]


def clear_memo() -> None:
    """Forget the memoised readings of option lines and bodies (a cell run again reuses its
    line's argparse reading and its body's YAML reading): for a benchmark of a first parse."""
    from replicate_jupyter.notebook.cellparse import body, line

    line._read.cache_clear()
    body._protect.cache_clear()
    body._load.cache_clear()
