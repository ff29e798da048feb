"""Cost in a real JupyterLab while a prediction runs, and the ledger as a table.

A ~5 s prediction (`tests/predictors/steps.py`, 50 steps of 0.1 s, on the kernel's CPU) runs
from a cell; while it runs, the line under the cell and the status bar must show a cost that
is not zero and grows (`≈ $… so far`); once it is done, both show the exact final figure the
kernel billed. `%replicate cost` must show the ledger's HTML table, not a JSON tree.
Screenshots land in test-artifacts/ (cost-running-cell.png, cost-running-status.png,
cost-final-cell.png, ledger-table.png).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from browser_helpers import TIMEOUT_MS, cell, cell_metadata, format_cost, open_notebook, run_cell, write_notebook

pytestmark = pytest.mark.browser

STEPS = Path(__file__).resolve().parents[1] / "predictors" / "steps.py"
SO_FAR = re.compile(r"≈ \$([0-9.]+) so far")


def _texts(page) -> tuple[str, str]:
    return page.evaluate(
        """() => {
            const w = window.jupyterapp.shell.currentWidget;
            const line = w.content.widgets[1].node.querySelector('.rj-cell-cost');
            const status = document.querySelector('.rj-status-item');
            return [line ? line.textContent : '', status ? status.textContent : ''];
        }"""
    )


def test_running_cost_ticks_in_the_cell_line_and_status_bar_then_the_exact_final(lab, page, artifacts):
    name = "live_cost.ipynb"
    write_notebook(lab.root, name, [
        "%load_ext replicate_jupyter",
        f"%%replicate {STEPS}:Predictor\nsteps: 50\ndelay: 0.1",
        "%replicate cost",
    ])
    open_notebook(page, lab, name)
    run_cell(page, 0)
    page.evaluate(
        """() => {
            const w = window.jupyterapp.shell.currentWidget;
            w.content.activeCellIndex = 1;
            window.jupyterapp.commands.execute('notebook:run-cell');  // not awaited: we watch it run
        }"""
    )
    line_costs: list[float] = []
    status_costs: list[float] = []
    shot = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line, status = _texts(page)
        m_line, m_status = SO_FAR.search(line), SO_FAR.search(status)
        if m_line:
            line_costs.append(float(m_line.group(1)))
            assert "1 running" in line and line.startswith("CPU "), line  # the kernel's CPU, not "GPU 0 s"
        if m_status:
            status_costs.append(float(m_status.group(1)))
        if m_line and m_status and len(set(line_costs)) >= 3 and not shot:
            cell(page, 1).screenshot(path=str(artifacts / "cost-running-cell.png"))
            page.locator("#jp-main-statusbar").screenshot(path=str(artifacts / "cost-running-status.png"))
            shot = True
        if line_costs and not m_line and "1 prediction" in line:
            break  # final
        page.wait_for_timeout(250)
    assert len(set(line_costs)) >= 3, line_costs
    assert len(set(status_costs)) >= 3, status_costs
    for seen in (line_costs, status_costs):
        assert seen[0] > 0 and all(b >= a for a, b in zip(seen, seen[1:])) and seen[-1] > seen[0], seen

    # the exact final replaces it, in the line, the status bar and the card, equal to the metadata
    page.wait_for_function(
        """() => {
            const w = window.jupyterapp.shell.currentWidget;
            const line = w.content.widgets[1].node.querySelector('.rj-cell-cost');
            const status = document.querySelector('.rj-status-item');
            return line && !line.textContent.includes('so far') && line.textContent.includes('1 prediction')
                && status && !status.textContent.includes('running');
        }""",
        timeout=TIMEOUT_MS,
    )
    meta = cell_metadata(page, 1)
    final = format_cost(meta["cost_usd"])
    line, status = _texts(page)
    assert f"· {final} · 1 prediction" in line and "≈" not in line, line
    assert final in status and "≈" not in status, status
    card_cost = cell(page, 1).locator(".rj-card .rj-metric-cost .rj-metric-value").inner_text()
    assert card_cost == final
    assert meta["cost_usd"] > line_costs[0]
    assert meta["predict_time"] >= 4.5  # the ~5 s run, billed as it ran
    cell(page, 1).screenshot(path=str(artifacts / "cost-final-cell.png"))

    # %replicate cost: the HTML table (by cell, model, backend, day), not a JSON tree
    run_cell(page, 2)
    out = cell(page, 2).locator(".jp-OutputArea-output")
    out.locator(".rj-ledger table").first.wait_for(timeout=TIMEOUT_MS)
    assert cell(page, 2).locator(".jp-RenderedJSON").count() == 0
    tables = cell(page, 2).locator(".rj-ledger table")
    assert tables.count() == 4
    text = cell(page, 2).locator(".rj-ledger").inner_text()
    for title in ("By cell", "By model", "By backend", "By day"):
        assert title in text
    assert "local/steps" in text and final in text and "[2]" in text
    cell(page, 2).screenshot(path=str(artifacts / "ledger-table.png"))
    assert page.page_errors == []
