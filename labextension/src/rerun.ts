/**
 * The notebook side of the card's buttons (actions.ts): Rerun inserts a
 * `%replicate rerun ID` cell below the cell whose output holds the card and
 * runs it; Compare opens the comparison of two cards in a panel beside the
 * notebook.
 *
 * The card only says which prediction; the kernel finds its record (in its own
 * memory, else in the saved notebook), so a notebook reopened with no kernel
 * state reruns the same way. Which cell a card belongs to is found from the
 * DOM: the notebook's cell widget whose node contains the button.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';
import { COMPARE_EVENT, ICompareRequest, IRerunRequest, RERUN_EVENT } from './actions';
import { renderComparison } from './compare';
import { rerunSource } from './records';

const LOAD_EXT = '%load_ext replicate_jupyter';

/** Insert `source` as a code cell below cell `index` of `panel` and run it. */
export async function insertAndRun(panel: NotebookPanel, index: number, source: string): Promise<boolean> {
  const notebook = panel.content;
  const model = notebook.model;
  if (!model) {
    return false;
  }
  model.sharedModel.insertCell(index + 1, { cell_type: 'code', source, metadata: {} });
  const cell = notebook.widgets[index + 1];
  if (!cell || cell.model.sharedModel.getSource() !== source) {
    return false;
  }
  notebook.activeCellIndex = index + 1;
  notebook.deselectAll();
  void notebook.scrollToItem(index + 1);
  await loadMagics(panel);
  return NotebookActions.runCells(notebook, [cell], panel.sessionContext);
}

/**
 * `%load_ext replicate_jupyter` in the notebook's kernel, silently: a notebook
 * reopened on a fresh kernel has not loaded the magics, and loading them again
 * is a no-op whose note goes to no cell. Without a kernel yet, running the cell
 * starts one, and its error then says what is missing.
 */
async function loadMagics(panel: NotebookPanel): Promise<void> {
  const kernel = panel.sessionContext.session?.kernel;
  if (!kernel) {
    return;
  }
  await kernel.requestExecute({ code: LOAD_EXT, silent: true, store_history: false }).done;
}

function onRerun(tracker: INotebookTracker, event: Event): void {
  const target = event.target;
  const detail = (event as CustomEvent<IRerunRequest>).detail;
  if (!(target instanceof Node) || !detail) {
    return;
  }
  const panel = tracker.find(p => p.node.contains(target));
  const index = panel ? panel.content.widgets.findIndex(c => c.node.contains(target)) : -1;
  // built again here: a line from the event is never run as it came
  const source = rerunSource(detail.id, detail.backend);
  if (!panel || index < 0 || !source) {
    return;
  }
  event.preventDefault();
  void insertAndRun(panel, index, source).catch(reason => {
    console.error('replicate-jupyter: rerun failed.', reason);
  });
}

let opened = 0;
let last: Widget | null = null;

function onCompare(app: JupyterFrontEnd, event: Event): void {
  const detail = (event as CustomEvent<ICompareRequest>).detail;
  if (!detail) {
    return;
  }
  event.preventDefault();
  const widget = new Widget();
  widget.id = `rj-compare-${++opened}`;
  widget.addClass('rj-compare-panel');
  const ids = `${detail.a.id ?? ''} \u2194 ${detail.b.id ?? ''}`;
  widget.title.label = `Compare ${(detail.a.id ?? '').slice(-6)}\u2194${(detail.b.id ?? '').slice(-6)}`;
  widget.title.caption = `Compare ${ids}`;
  widget.title.closable = true;
  widget.node.appendChild(renderComparison(detail.a, detail.b));
  // the first comparison opens beside the notebook, the next ones as tabs with it
  const open = last !== null && !last.isDisposed && last.isAttached;
  app.shell.add(widget, 'main', open ? { mode: 'tab-after', ref: last!.id } : { mode: 'split-right' });
  last = widget;
  app.shell.activateById(widget.id);
}

/** Listen for the cards' Rerun and Compare requests (once, for every notebook). */
export function connectCardActions(app: JupyterFrontEnd, tracker: INotebookTracker): void {
  document.addEventListener(RERUN_EVENT, event => onRerun(tracker, event));
  document.addEventListener(COMPARE_EVENT, event => onCompare(app, event));
}
