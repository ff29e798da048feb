/**
 * The JupyterLab plugin: per-cell cost (written into `metadata.replicate`
 * and shown under the cell), the notebook total in the status bar, and the
 * cards' Rerun and Compare buttons (rerun.ts).
 *
 * Everything is derived from the cells' outputs, which hold the full
 * prediction JSON, so a notebook opened without a kernel (or saved and
 * reopened) shows the same figures. While a prediction runs, each live update
 * of its output carries its cost so far (`running`), so the line and the
 * total tick with it; the final output's exact cost replaces it. Metadata is only written when outputs
 * change, never on open, so opening a notebook never marks it dirty.
 */
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Cell, ICellModel, ICodeCellModel } from '@jupyterlab/cells';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { ISignal, Signal } from '@lumino/signaling';
import { PanelLayout, Widget } from '@lumino/widgets';
import {
  ICellInput,
  IShownCost,
  ISummary,
  describeCost,
  parseCellCost,
  roundCost,
  sameCost,
  summarizeNotebook,
  summarizeOutputs
} from './cost';
import { getCurrencyDecimals, setCurrencyDecimals } from './format';
import { connectCardActions } from './rerun';

const PLUGIN_ID = 'replicate-jupyter:plugin';
const METADATA_KEY = 'replicate';
const UPDATE_DELAY_MS = 50;

interface IOptions {
  showCellLine: boolean;
}

function isCodeModel(model: ICellModel): model is ICodeCellModel {
  return model.type === 'code';
}

function outputsOf(model: ICodeCellModel): { data?: unknown }[] {
  const list: { data?: unknown }[] = [];
  for (let i = 0; i < model.outputs.length; i++) {
    list.push(model.outputs.get(i));
  }
  return list;
}

/** The line shown under a code cell, like jupyterlab-execute-time's. */
class CellCostLine extends Widget {
  constructor() {
    super();
    this.addClass('rj-cell-cost');
    this.hide();
  }

  show_(text: string | null, visible: boolean, running = 0): void {
    this.node.textContent = text ?? '';
    this.node.dataset.running = String(running);
    this.setHidden(!visible || !text);
  }
}

/** What the extension knows about one code cell. */
class CellState {
  summary: ISummary | null = null;
  lines = new Set<CellCostLine>();

  constructor(readonly model: ICodeCellModel, readonly owner: NotebookWatcher) {
    model.outputs.changed.connect(this._onOutputs, this);
    this.summary = summarizeOutputs(outputsOf(model));
  }

  dispose(): void {
    this.model.outputs.changed.disconnect(this._onOutputs, this);
  }

  /** What the line shows: from outputs, else the cost saved in metadata. */
  shown(): IShownCost | null {
    if (this.summary && this.summary.predictions > 0) {
      return this.summary;
    }
    return parseCellCost(this.model.getMetadata(METADATA_KEY));
  }

  refreshLines(): void {
    const shown = this.shown();
    const text = shown && shown.predictions > 0 ? describeCost(shown) : null;
    for (const line of this.lines) {
      line.show_(text, this.owner.options.showCellLine, shown?.running ?? 0);
    }
  }

  private _onOutputs(): void {
    if (this._timer !== null) {
      return;
    }
    this._timer = window.setTimeout(() => {
      this._timer = null;
      if (this.model.isDisposed) {
        return;
      }
      this.summary = summarizeOutputs(outputsOf(this.model));
      this._writeMetadata();
      this.refreshLines();
      this.owner.notify();
    }, UPDATE_DELAY_MS);
  }

  private _writeMetadata(): void {
    const saved = parseCellCost(this.model.getMetadata(METADATA_KEY));
    if (!this.summary || this.summary.predictions === 0) {
      if (this.model.getMetadata(METADATA_KEY) !== undefined) {
        this.model.deleteMetadata(METADATA_KEY);
      }
      return;
    }
    const next = roundCost(this.summary);
    if (!sameCost(saved, next)) {
      this.model.setMetadata(METADATA_KEY, { ...next });
    }
  }

  private _timer: number | null = null;
}

/** Watches one notebook panel's cells. */
class NotebookWatcher {
  constructor(readonly panel: NotebookPanel, readonly options: IOptions) {
    void panel.context.ready.then(() => {
      if (panel.isDisposed) {
        return;
      }
      panel.content.model?.cells.changed.connect(this._onCells, this);
      this._sync();
    });
    panel.disposed.connect(() => this.dispose());
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  notify(): void {
    this._changed.emit();
  }

  /** The notebook's total over all code cells. */
  summary(): ISummary {
    const cells: ICellInput[] = [];
    const model = this.panel.content.model;
    if (model) {
      for (let i = 0; i < model.cells.length; i++) {
        const cell = model.cells.get(i);
        if (isCodeModel(cell)) {
          cells.push({ outputs: outputsOf(cell), metadata: cell.getMetadata(METADATA_KEY) });
        }
      }
    }
    return summarizeNotebook(cells);
  }

  refreshAll(): void {
    for (const state of this._states.values()) {
      state.refreshLines();
    }
    this.notify();
  }

  dispose(): void {
    for (const state of this._states.values()) {
      state.dispose();
    }
    this._states.clear();
    Signal.clearData(this);
  }

  private _onCells(): void {
    // The notebook creates the new cell widgets in its own handler of the
    // same signal; look at them once it is done.
    window.setTimeout(() => this._sync(), 0);
  }

  private _sync(): void {
    const model = this.panel.content.model;
    if (!model || this.panel.isDisposed) {
      return;
    }
    const alive = new Set<ICellModel>();
    for (let i = 0; i < model.cells.length; i++) {
      const cell = model.cells.get(i);
      alive.add(cell);
      if (isCodeModel(cell) && !this._states.has(cell)) {
        this._states.set(cell, new CellState(cell, this));
      }
    }
    for (const [cell, state] of this._states) {
      if (!alive.has(cell)) {
        state.dispose();
        this._states.delete(cell);
      }
    }
    for (const widget of this.panel.content.widgets) {
      const state = this._states.get(widget.model);
      if (state) {
        this._attachLine(widget, state);
      }
    }
    this.refreshAll();
  }

  private _attachLine(widget: Cell, state: CellState): void {
    if (this._lined.has(widget)) {
      return;
    }
    this._lined.add(widget);
    void widget.ready.then(() => {
      if (widget.isDisposed) {
        return;
      }
      const line = new CellCostLine();
      (widget.layout as PanelLayout).addWidget(line);
      state.lines.add(line);
      widget.disposed.connect(() => state.lines.delete(line));
      state.refreshLines();
    });
  }

  private _states = new Map<ICellModel, CellState>();
  private _lined = new WeakSet<Cell>();
  private _changed = new Signal<this, void>(this);
}

/** The status bar item: the current notebook's total. */
class CostStatus extends Widget {
  constructor() {
    super();
    this.addClass('rj-status-item');
    this.node.title = 'Replicate predictions in this notebook: compute time, cost, running';
  }

  update_(summary: ISummary | null): void {
    if (!summary || summary.predictions === 0) {
      this.node.textContent = '';
      this.node.dataset.predictions = '0';
      return;
    }
    this.node.textContent = `Replicate: ${describeCost(summary, getCurrencyDecimals())}`;
    this.node.dataset.predictions = String(summary.predictions);
    this.node.dataset.running = String(summary.running);
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Per-cell GPU time and cost of Replicate predictions, and the notebook total.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ISettingRegistry, IStatusBar, ILabShell],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    settingRegistry: ISettingRegistry | null,
    statusBar: IStatusBar | null
  ) => {
    connectCardActions(app, tracker);
    const options: IOptions = { showCellLine: true };
    const watchers = new Map<NotebookPanel, NotebookWatcher>();
    const status = statusBar ? new CostStatus() : null;

    const refreshStatus = () => {
      const current = tracker.currentWidget;
      const watcher = current ? watchers.get(current) : undefined;
      status?.update_(watcher ? watcher.summary() : null);
    };

    tracker.widgetAdded.connect((_, panel) => {
      const watcher = new NotebookWatcher(panel, options);
      watchers.set(panel, watcher);
      watcher.changed.connect(() => {
        if (tracker.currentWidget === panel) {
          refreshStatus();
        }
      });
      panel.disposed.connect(() => {
        watchers.delete(panel);
        refreshStatus();
      });
    });
    tracker.currentChanged.connect(refreshStatus);

    if (statusBar && status) {
      statusBar.registerStatusItem(PLUGIN_ID, {
        item: status,
        align: 'left',
        rank: 4,
        isActive: () => tracker.currentWidget !== null
      });
    }

    if (settingRegistry) {
      void settingRegistry
        .load(plugin.id)
        .then(settings => {
          const apply = () => {
            options.showCellLine = settings.get('showCellLine').composite !== false;
            setCurrencyDecimals(Number(settings.get('currencyDecimals').composite ?? 4));
            for (const watcher of watchers.values()) {
              watcher.refreshAll();
            }
            refreshStatus();
          };
          settings.changed.connect(apply);
          apply();
        })
        .catch(reason => {
          console.error('replicate-jupyter: failed to load settings.', reason);
        });
    }
  }
};

export default plugin;
