"""Driving JupyterLab through its own commands (window.jupyterapp), not by typing."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat

TIMEOUT_MS = 60_000


def write_notebook(root: Path, name: str, sources: list[str], with_kernelspec: bool = True) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    if with_kernelspec:
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = root / name
    nbformat.write(nb, path)
    return path


def open_notebook(page, lab, name: str, wait_kernel: bool = True) -> None:
    page.goto(f"{lab.url}/lab/tree/{name}?reset", wait_until="domcontentloaded")
    page.wait_for_function(
        """(name) => {
            const app = window.jupyterapp;
            const w = app && app.shell.currentWidget;
            return !!(w && w.context && w.context.path === name && w.content && w.content.widgets
                      && w.content.widgets.length > 0 && w.context.isReady);
        }""",
        arg=name,
        timeout=TIMEOUT_MS,
    )
    if wait_kernel:
        page.wait_for_function(
            """() => {
                const w = window.jupyterapp.shell.currentWidget;
                const k = w.sessionContext.session && w.sessionContext.session.kernel;
                return !!k && k.status === 'idle';
            }""",
            timeout=TIMEOUT_MS,
        )


def run_all(page) -> None:
    """Run every cell and wait until all have executed and the kernel is idle."""
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(
        """() => {
            const w = window.jupyterapp.shell.currentWidget;
            const k = w.sessionContext.session && w.sessionContext.session.kernel;
            const cells = w.content.widgets.filter(c => c.model.type === 'code');
            return cells.every(c => c.model.executionCount !== null && !c.node.querySelector('.jp-InputArea-prompt')?.textContent.includes('*'))
                && k && k.status === 'idle';
        }""",
        timeout=TIMEOUT_MS,
    )


def save(page) -> None:
    page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_function(
        "() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=TIMEOUT_MS
    )


def cell_metadata(page, index: int) -> dict | None:
    value = page.evaluate(
        "(i) => JSON.stringify(window.jupyterapp.shell.currentWidget.content.widgets[i].model.getMetadata('replicate') ?? null)",
        index,
    )
    return json.loads(value)


def cell(page, index: int):
    return page.locator(".jp-Notebook .jp-Cell").nth(index)


def format_cost(usd: float) -> str:
    """The extension writes dollars exactly as the kernel's cost line does (display.usd)."""
    from replicate_jupyter.notebook.display import usd as kernel_usd

    return kernel_usd(usd)


def format_seconds(seconds: float) -> str:
    """Mirror of format.ts formatSeconds."""
    if seconds < 10:
        return f"{float(f'{seconds:.2f}'):g} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = int(seconds // 60)
    return f"{minutes} min {round(seconds - minutes * 60)} s"


def run_cell(page, index: int) -> None:
    """Run one cell (not the others) and wait until it has executed and the kernel is idle."""
    page.evaluate(
        """(i) => {
            const w = window.jupyterapp.shell.currentWidget;
            w.content.activeCellIndex = i;
            w.content.widgets[i].model.sharedModel.execution_count = null;
            return window.jupyterapp.commands.execute('notebook:run-cell');
        }""",
        index,
    )
    page.wait_for_function(
        """(i) => {
            const w = window.jupyterapp.shell.currentWidget;
            const k = w.sessionContext.session && w.sessionContext.session.kernel;
            return w.content.widgets[i].model.executionCount !== null && k && k.status === 'idle';
        }""",
        arg=index,
        timeout=TIMEOUT_MS,
    )


def card_in(page, index: int):
    """The final card in cell `index` (waits until it is drawn with its output hash)."""
    card = cell(page, index).locator(".rj-card[data-status='succeeded']:has(.rj-output-hash)").first
    card.wait_for(timeout=TIMEOUT_MS)
    return card


def click_rerun(page, index: int) -> None:
    """Click Rerun on the card of cell `index` and wait until the cell it inserts below has run."""
    count = page.evaluate("() => window.jupyterapp.shell.currentWidget.content.widgets.length")
    card_in(page, index).locator(".rj-rerun-button").click()
    page.wait_for_function(
        """([i, n]) => {
            const w = window.jupyterapp.shell.currentWidget;
            const k = w.sessionContext.session && w.sessionContext.session.kernel;
            const c = w.content.widgets[i + 1];
            return w.content.widgets.length === n + 1 && c && c.model.executionCount !== null
                && k && k.status === 'idle';
        }""",
        arg=[index, count],
        timeout=TIMEOUT_MS,
    )


def compare_verdict(page):
    """The verdict of the compare panel on show (waits until it opened)."""
    verdict = page.locator(".rj-compare-panel:visible .rj-compare-verdict")
    verdict.wait_for(timeout=TIMEOUT_MS)
    return verdict
