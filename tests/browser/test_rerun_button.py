"""The card's Rerun button and Compare view in a real JupyterLab, driven by headless Chromium.

A `%%replicate local/shapes` cell (seed given) runs in a real kernel; its card's Rerun inserts
`%replicate rerun <id>` below the cell and runs it, and the new card shows the same output hash.
After a save and a kernel restart (no kernel state: the record comes from the saved notebook)
Rerun works the same. Compare on two cards opens a panel beside the notebook: the same seed
reads "identical", another seed "different" with a pixel figure, the kernel's own figure
(prediction/record.py `pixel_difference`) for the same two images.
Screenshots land in test-artifacts/ (rerun-button.png, compare-identical.png, compare-different.png).
"""

from __future__ import annotations

import re

import pytest
from browser_helpers import (
    TIMEOUT_MS,
    card_in,
    click_rerun,
    compare_verdict,
    open_notebook,
    run_all,
    save,
    write_notebook,
)

pytestmark = pytest.mark.browser

SHAPES = "%%replicate local/shapes --seed {seed}\nprompt: a red circle on a cream background\nnum_inference_steps: 4"


def _sources(page) -> list[str]:
    return page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.content.widgets.map(c => c.model.sharedModel.getSource())"
    )


def test_rerun_inserts_and_runs_the_cell_below_with_the_same_output_hash(lab, page, artifacts):
    name = "rerun_button.ipynb"
    write_notebook(lab.root, name, ["%load_ext replicate_jupyter", SHAPES.format(seed=7), "1 + 1"])
    open_notebook(page, lab, name)
    run_all(page)
    first = card_in(page, 1)
    original_id = first.get_attribute("data-prediction-id")
    sha = first.locator(".rj-output-hash").get_attribute("data-sha256")
    assert original_id and sha and re.fullmatch(r"[0-9a-f]{64}", sha)
    assert first.locator(".rj-output-hash").inner_text() == f"output sha256 {sha[:12]}"

    click_rerun(page, 1)
    # the new cell is right below the card's cell (before "1 + 1") and it ran
    page.wait_for_function("() => window.jupyterapp.shell.currentWidget.content.widgets.length === 4",
                           timeout=TIMEOUT_MS)
    assert _sources(page)[2] == f"%replicate rerun {original_id}"
    assert _sources(page)[3] == "1 + 1"
    rerun_card = card_in(page, 2)
    assert rerun_card.get_attribute("data-prediction-id") != original_id
    assert rerun_card.locator(".rj-output-hash").get_attribute("data-sha256") == sha
    assert "local/shapes" in rerun_card.locator(".rj-model").inner_text()
    page.screenshot(path=str(artifacts / "rerun-button.png"))

    # Saved, kernel restarted: no kernel state; the record is found in the saved notebook.
    save(page)
    page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart()")
    page.wait_for_function(
        """() => { const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
                   return k && k.status === 'idle'; }""",
        timeout=TIMEOUT_MS,
    )  # a fresh kernel: not even %load_ext ran in it
    click_rerun(page, 1)
    page.wait_for_function("() => window.jupyterapp.shell.currentWidget.content.widgets.length === 5",
                           timeout=TIMEOUT_MS)
    assert _sources(page)[2] == f"%replicate rerun {original_id}"
    again = card_in(page, 2)
    assert again.locator(".rj-output-hash").get_attribute("data-sha256") == sha
    assert not page.page_errors  # type: ignore[attr-defined]


def test_compare_two_cards_identical_then_different_with_the_kernels_pixel_figure(lab, page, artifacts):
    from replicate_jupyter.notebook.records import records
    from replicate_jupyter.prediction.record import pixel_difference

    name = "compare_cards.ipynb"
    write_notebook(lab.root, name, ["%load_ext replicate_jupyter", SHAPES.format(seed=7), SHAPES.format(seed=7),
                                    SHAPES.format(seed=8)])
    open_notebook(page, lab, name)
    run_all(page)
    cards = [card_in(page, i) for i in (1, 2, 3)]

    cards[0].locator(".rj-compare-toggle").click()
    assert cards[0].locator(".rj-compare-toggle").get_attribute("aria-pressed") == "true"
    cards[1].locator(".rj-compare-toggle").click()
    verdict = compare_verdict(page)
    assert verdict.inner_text() == "identical: every output hash matches (1 output)"
    panel = page.locator(".rj-compare-panel:visible")
    assert panel.locator(".rj-compare-side img").count() == 2
    assert panel.locator(".rj-compare-note").count() == 0
    facts = panel.locator(".rj-compare-facts").inner_text()
    assert "predict time" in facts and "cost" in facts and "$" in facts
    assert cards[0].locator(".rj-compare-toggle").get_attribute("aria-pressed") == "false"
    page.screenshot(path=str(artifacts / "compare-identical.png"))

    cards[0].locator(".rj-compare-toggle").click()
    cards[2].locator(".rj-compare-toggle").click()
    page.wait_for_function("() => document.querySelectorAll('.rj-compare-panel').length === 2", timeout=TIMEOUT_MS)
    verdict = compare_verdict(page)
    assert verdict.inner_text() == "different: 1 of 1 outputs differ"
    panel = page.locator(".rj-compare-panel:visible")
    note = panel.locator(".rj-compare-note[data-pixels='done']")
    note.wait_for(timeout=TIMEOUT_MS)
    shown = re.fullmatch(r"output 0: pixels mean_abs ([0-9.]+), max (\d+), changed_pixels ([0-9.]+)",
                         note.inner_text())
    assert shown, note.inner_text()
    inputs = panel.locator(".rj-compare-inputs").inner_text()
    assert "seed" in inputs and "7" in inputs and "8" in inputs
    page.screenshot(path=str(artifacts / "compare-different.png"))

    # the browser's figure is the kernel's, for the same two images
    save(page)
    recs = records(lab.root / name)
    kernel = pixel_difference(recs[0].output()[0], recs[2].output()[0])
    assert float(shown.group(1)) == pytest.approx(kernel["mean_abs"], abs=1e-3) and kernel["mean_abs"] > 0
    assert int(shown.group(2)) == kernel["max"]
    assert not page.page_errors  # type: ignore[attr-defined]
