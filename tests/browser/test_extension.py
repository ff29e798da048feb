"""The JupyterLab extension in a real JupyterLab, driven by headless Chromium.

Cells produce `application/vnd.replicate.prediction+json` outputs (see
payloads.py: emitted bundles now, `%%replicate local/shapes` once DRIVER is
"magic"); the tests check what a user sees: the card, the line under the
cell, the status bar, and that they survive save + reload.
"""

from __future__ import annotations

import json
import subprocess
import sys

import nbformat
import pytest
from browser_helpers import (
    TIMEOUT_MS,
    cell,
    cell_metadata,
    format_cost,
    format_seconds,
    open_notebook,
    run_all,
    run_cell,
    save,
    write_notebook,
)
from browser_payloads import (
    bundle,
    display_source,
    png_data_uri,
    prediction,
    prediction_cell,
    setup_cell,
    sweep_source,
)

pytestmark = pytest.mark.browser

DOT = "\u00b7"


def test_labextension_listed_enabled(lab):
    out = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"],
        env=lab.env, capture_output=True, text=True, timeout=120,
    )
    text = out.stdout + out.stderr
    line = next((ln for ln in text.splitlines() if "replicate-jupyter" in ln), "")
    assert "enabled" in line and "OK" in line, text


def test_card_cell_line_status_bar_and_reload(lab, page, artifacts):
    name = "two_predictions.ipynb"
    write_notebook(
        lab.root,
        name,
        [setup_cell(), prediction_cell("a red circle on a blue background", 1),
         prediction_cell("a green square", 2)],
    )
    open_notebook(page, lab, name)
    run_all(page)

    # The card: model, succeeded, an image that loaded, the cost.
    first = cell(page, 1)
    card = first.locator(".rj-card").first
    card.wait_for(timeout=TIMEOUT_MS)
    assert card.get_attribute("data-status") == "succeeded"
    assert "local/shapes" in card.locator(".rj-model").inner_text()
    img = card.locator(".rj-image img").first
    img.wait_for()
    assert page.evaluate("(el) => el.complete && el.naturalWidth > 0", img.element_handle())
    assert img.get_attribute("src").startswith("data:image/")
    card_cost = card.locator(".rj-metric-cost .rj-metric-value").inner_text()
    assert card_cost.startswith("$")

    # The line under the cell shows the same cost, and the metadata holds it.
    line = first.locator(".rj-cell-cost")
    page.wait_for_function(
        "(el) => el.textContent.includes('1 prediction')", arg=line.element_handle(), timeout=TIMEOUT_MS
    )
    assert card_cost in line.inner_text()
    meta1 = cell_metadata(page, 1)
    meta2 = cell_metadata(page, 2)
    assert meta1["predictions"] == 1 and meta2["predictions"] == 1
    assert format_cost(meta1["cost_usd"]) == card_cost
    assert format_seconds(meta1["predict_time"]) in line.inner_text()
    assert cell_metadata(page, 0) is None

    # The status bar sums both cells.
    total_cost = format_cost(meta1["cost_usd"] + meta2["cost_usd"])
    total_time = format_seconds(meta1["predict_time"] + meta2["predict_time"])
    status = page.locator(".rj-status-item")
    page.wait_for_function(
        "(el) => el.textContent.includes('2 predictions')", arg=status.element_handle(), timeout=TIMEOUT_MS
    )
    status_text = status.inner_text()
    assert total_cost in status_text and total_time in status_text, status_text

    card.screenshot(path=str(artifacts / "card.png"))
    first.screenshot(path=str(artifacts / "cell-line.png"))
    page.locator("#jp-main-statusbar").screenshot(path=str(artifacts / "status-bar.png"))
    page.screenshot(path=str(artifacts / "notebook.png"))

    # Click opens the image at full size; click closes it.
    img.click()
    box = page.locator(".rj-lightbox img")
    box.wait_for()
    page.locator(".rj-lightbox").click()
    page.locator(".rj-lightbox").wait_for(state="detached")

    # Saved to disk with the cost in the cell metadata.
    save(page)
    on_disk = lab.notebook(name)
    assert on_disk["cells"][1]["metadata"]["replicate"] == meta1
    assert on_disk["cells"][2]["metadata"]["replicate"] == meta2

    # After a reload the line, the card and the total are still there.
    open_notebook(page, lab, name, wait_kernel=False)
    line = cell(page, 1).locator(".rj-cell-cost")
    page.wait_for_function(
        "(el) => el.textContent.includes('1 prediction')", arg=line.element_handle(), timeout=TIMEOUT_MS
    )
    assert card_cost in line.inner_text()
    assert cell(page, 1).locator(".rj-card .rj-image img").count() == 1
    page.wait_for_function(
        "() => document.querySelector('.rj-status-item')?.textContent.includes('2 predictions')",
        timeout=TIMEOUT_MS,
    )
    assert total_cost in page.locator(".rj-status-item").inner_text()
    assert not page.evaluate("window.jupyterapp.shell.currentWidget.context.model.dirty")
    page.screenshot(path=str(artifacts / "after-reload.png"))
    assert page.page_errors == []


def test_notebook_without_kernel_shows_saved_cost(lab, page, artifacts):
    """A shared notebook opened with no kernel: lines and total come from outputs/metadata."""
    name = "shared.ipynb"
    preds = [prediction(f"p-shared-{i}", "a red circle", i, predict_time=2.0 + i) for i in (1, 2)]
    write_notebook(lab.root, name, ["pass", "pass"], with_kernelspec=False)
    nb = nbformat.read(lab.root / name, as_version=4)
    for cell_, pred in zip(nb.cells, preds):
        cell_.outputs = [nbformat.v4.new_output("display_data", data=bundle(pred))]
        cell_.execution_count = 1
    # The second cell's outputs were stripped; only its saved metadata is left.
    nb.cells[1].outputs = []
    nb.cells[1].metadata["replicate"] = {"predict_time": 3.0, "cost_usd": 0.000675, "predictions": 1}
    nbformat.write(nb, lab.root / name)

    page.goto(f"{lab.url}/lab/tree/{name}?reset", wait_until="domcontentloaded")
    # No kernelspec in the notebook: JupyterLab asks; choose "No Kernel".
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=TIMEOUT_MS)
    page.locator(".jp-Dialog .jp-mod-reject, .jp-Dialog button:has-text('No Kernel')").first.click()
    open_notebook(page, lab, name, wait_kernel=False)
    assert page.evaluate("!window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel")

    first_cost = format_cost(preds[0]["metrics"]["cost_usd"])
    line0 = cell(page, 0).locator(".rj-cell-cost")
    page.wait_for_function("(el) => el.textContent.includes('$')", arg=line0.element_handle(), timeout=TIMEOUT_MS)
    assert first_cost in line0.inner_text()
    assert format_cost(0.000675) in cell(page, 1).locator(".rj-cell-cost").inner_text()
    page.wait_for_function(
        "() => document.querySelector('.rj-status-item')?.textContent.includes('2 predictions')",
        timeout=TIMEOUT_MS,
    )
    assert format_cost(preds[0]["metrics"]["cost_usd"] + 0.000675) in page.locator(".rj-status-item").inner_text()
    # Opening never writes cell metadata (choosing "No Kernel" itself dirties the
    # notebook's kernelspec, so compare cells rather than the dirty flag).
    assert cell_metadata(page, 0) is None
    assert cell_metadata(page, 1) == lab.notebook(name)["cells"][1]["metadata"]["replicate"]
    page.screenshot(path=str(artifacts / "no-kernel.png"))


def test_live_update_and_running_count(lab, page, artifacts):
    """update_display_data re-renders the card in place; running predictions show in the status bar."""
    name = "live.ipynb"
    running = prediction(
        "p-live", "a blue triangle", 5, status="processing",
        progress={"step": 3, "total": 20, "eta_s": 1.4}, preview=png_data_uri("yellow", "black"),
    )
    done = prediction("p-live", "a blue triangle", 5, predict_time=2.5)
    write_notebook(lab.root, name, [display_source(running, display_id="p-live")])
    open_notebook(page, lab, name)
    run_all(page)
    card = cell(page, 0).locator(".rj-card")
    card.wait_for(timeout=TIMEOUT_MS)
    assert card.get_attribute("data-status") == "processing"
    assert "step 3/20" in card.locator(".rj-progress-label").inner_text()
    assert "ETA 1.4 s" in card.locator(".rj-progress-label").inner_text()
    assert card.locator(".rj-preview img").count() == 1
    page.wait_for_function(
        "() => document.querySelector('.rj-status-item')?.textContent.includes('1 running')",
        timeout=TIMEOUT_MS,
    )
    card.screenshot(path=str(artifacts / "card-running.png"))
    page.locator("#jp-main-statusbar").screenshot(path=str(artifacts / "status-bar-running.png"))

    # Open the logs, mark the renderer's node, then update the display from another cell.
    card.locator("details.rj-logs summary").click()
    page.evaluate("() => { document.querySelector('.jp-RenderedReplicatePrediction').__rjMark = 1; }")
    page.evaluate(
        """(src) => {
            const nb = window.jupyterapp.shell.currentWidget.content;
            nb.activeCellIndex = 0;
            return window.jupyterapp.commands.execute('notebook:insert-cell-below').then(() => {
                nb.activeCell.model.sharedModel.setSource(src);
            });
        }""",
        display_source(done, display_id="p-live", update=True),
    )
    run_cell(page, 1)
    page.wait_for_function(
        "() => document.querySelector('.jp-Cell .rj-card')?.dataset.status === 'succeeded'",
        timeout=TIMEOUT_MS,
    )
    card = cell(page, 0).locator(".rj-card")
    assert card.locator(".rj-progress").count() == 0
    assert card.locator(".rj-image img").count() == 1
    # Re-rendered in place: same renderer node, the fold the user opened stays open.
    assert page.evaluate("() => document.querySelector('.jp-RenderedReplicatePrediction').__rjMark === 1")
    assert card.locator("details.rj-logs").get_attribute("open") is not None
    page.wait_for_function(
        "() => !document.querySelector('.rj-status-item')?.textContent.includes('running')"
        " && document.querySelector('.rj-status-item')?.textContent.includes('1 prediction')",
        timeout=TIMEOUT_MS,
    )
    line = cell(page, 0).locator(".rj-cell-cost")
    page.wait_for_function(
        "(el) => !el.textContent.includes('running')", arg=line.element_handle(), timeout=TIMEOUT_MS
    )
    assert format_cost(done["metrics"]["cost_usd"]) in line.inner_text()
    assert format_seconds(2.5) in line.inner_text()


def test_model_strings_render_as_text(lab, page, artifacts):
    """HTML in any model-provided string shows as text; nothing executes, no element is created."""
    name = "xss.ipynb"
    evil_img = '<img src=x onerror="window.__rj_pwned=1">'
    evil_script = "<script>window.__rj_pwned=2</script>"
    pred = prediction(
        "p-evil", "x", 3,
        model='acme/<b onmouseover="window.__rj_pwned=3">bold</b>',
        output=[evil_img, evil_script,
                {"type": "file", "url": "javascript:window.__rj_pwned=4", "name": "<i>x</i>.bin",
                 "content_type": "application/octet-stream", "size": 10},
                {"type": "file", "url": "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
                 "name": "page.png", "content_type": "image/png", "size": 10}],
        logs=evil_script + "\n" + evil_img,
    )
    pred["error"] = evil_img
    pred["input"]["prompt"] = evil_script
    pred["output_display"] = "concatenate"
    write_notebook(lab.root, name, [display_source(pred)])
    open_notebook(page, lab, name)
    run_all(page)
    card = cell(page, 0).locator(".rj-card")
    card.wait_for(timeout=TIMEOUT_MS)
    card.locator("details.rj-logs summary").click()
    card.locator("details.rj-inputs summary").click()
    page.wait_for_timeout(500)
    card.screenshot(path=str(artifacts / "card-untrusted-strings.png"))

    assert evil_img + evil_script in card.locator(".rj-text").inner_text()
    assert evil_script in card.locator(".rj-logs pre").inner_text()
    assert evil_img in card.locator(".rj-error").inner_text()
    assert 'onmouseover' in card.locator(".rj-model").inner_text()
    assert card.locator("script, b, i, img[src='x'], [onerror], [onmouseover]").count() == 0
    # A javascript: URL never becomes a link; a non-image data URL never becomes an <img>.
    assert card.locator("a[href^='javascript']").count() == 0
    assert card.locator("img").count() == 0
    card.locator(".rj-model").hover()
    assert page.evaluate("window.__rj_pwned === undefined")
    assert page.page_errors == []


def test_settings_hide_line_and_set_decimals(lab, page):
    """Settings: `showCellLine: false` hides the line; `currencyDecimals` changes how dollars read."""
    name = "settings.ipynb"
    pred = prediction("p-long", "a long render", 9, predict_time=100.0)  # $0.0225 on a T4
    write_notebook(lab.root, name, [display_source(pred)])
    settings = lab.settings_dir / "replicate-jupyter" / "plugin.jupyterlab-settings"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({"showCellLine": False, "currencyDecimals": 2}))
    try:
        open_notebook(page, lab, name)
        run_all(page)
        card = cell(page, 0).locator(".rj-card").first
        card.wait_for(timeout=TIMEOUT_MS)
        page.wait_for_function(
            "() => document.querySelector('.rj-status-item')?.textContent.includes('1 prediction')",
            timeout=TIMEOUT_MS,
        )
        assert "$0.02 " in page.locator(".rj-status-item").inner_text() + " "
        assert card.locator(".rj-metric-cost .rj-metric-value").inner_text() == "$0.02"
        line = cell(page, 0).locator(".rj-cell-cost")
        assert line.count() == 1 and not line.is_visible()
        # The metadata is written all the same, at full precision.
        assert cell_metadata(page, 0)["cost_usd"] == pytest.approx(0.0225)
        # Cards rendered on open (maybe before the settings loaded) use them too.
        save(page)
        open_notebook(page, lab, name, wait_kernel=False)
        page.wait_for_function(
            "() => document.querySelector('.rj-card .rj-metric-cost .rj-metric-value')?.textContent === '$0.02'",
            timeout=TIMEOUT_MS,
        )
    finally:
        settings.unlink()


def test_sweep_grid_and_its_cost(lab, page, artifacts):
    """A --sweep output: one labelled card per prediction; the cell line counts each of them."""
    name = "sweep.ipynb"
    preds = [(f"seed={i}", prediction(f"p-sweep-{i}", "a circle", i, predict_time=1.0 + i)) for i in (1, 2, 3)]
    write_notebook(lab.root, name, [sweep_source(preds)])
    open_notebook(page, lab, name)
    run_all(page)
    grid = cell(page, 0).locator(".rj-sweep-grid")
    grid.wait_for(timeout=TIMEOUT_MS)
    assert grid.locator(".rj-card").count() == 3
    assert grid.locator(".rj-sweep-label").all_inner_texts() == ["seed=1", "seed=2", "seed=3"]
    assert grid.locator(".rj-image img").count() == 3
    line = cell(page, 0).locator(".rj-cell-cost")
    page.wait_for_function(
        "(el) => el.textContent.includes('3 predictions')", arg=line.element_handle(), timeout=TIMEOUT_MS
    )
    total = sum(p["metrics"]["cost_usd"] for _, p in preds)
    assert format_cost(total) in line.inner_text()
    assert cell_metadata(page, 0)["predictions"] == 3
    cell(page, 0).screenshot(path=str(artifacts / "sweep.png"))
