/**
 * The mime renderer for `application/vnd.replicate.prediction+json`.
 *
 * JupyterLab calls `renderModel` again on the same widget when the kernel
 * sends `update_display_data` for the display, so the card is rebuilt in
 * place (keeping the folds the user opened).
 */
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';
import { renderActions } from './actions';
import { IFoldState, readFolds, renderCard } from './card';
import { onFormatChanged } from './format';
import { resolveRefs } from './refs';
import { IPrediction, MIME_TYPE, SWEEP_MIME_TYPE } from './types';

const CLOSED: IFoldState = { logs: false, inputs: false };

/** The card, with its action row (output hash, Rerun, Compare) once it is final and recorded. */
function drawCard(host: HTMLElement, prediction: IPrediction, folds: IFoldState): void {
  renderCard(host, prediction, folds);
  const actions = renderActions(prediction);
  if (actions) {
    host.querySelector('.rj-card')?.appendChild(actions);
  }
}

export class PredictionRenderer extends Widget implements IRenderMime.IRenderer {
  private _folds: IFoldState[] = [];

  constructor(options: IRenderMime.IRendererOptions) {
    super();
    this._mimeType = options.mimeType;
    this.addClass('jp-RenderedReplicatePrediction');
    this._unsubscribe = onFormatChanged(() => {
      if (this._model) {
        void this.renderModel(this._model);
      }
    });
  }

  dispose(): void {
    this._unsubscribe();
    this._model = null;
    super.dispose();
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    this._model = model;
    let data: unknown = model.data[this._mimeType];
    if (typeof data === 'string') {
      try {
        data = JSON.parse(data);
      } catch {
        data = {};
      }
    }
    const object = (typeof data === 'object' && data !== null ? data : {}) as Record<string, unknown>;
    if (this._mimeType === SWEEP_MIME_TYPE) {
      this._renderSweep(Array.isArray(object.predictions) ? object.predictions : []);
    } else {
      this._folds[0] = readFolds(this.node, this._folds[0] ?? CLOSED);
      const resolved = resolveRefs(object, model.data as Record<string, unknown>) as IPrediction;
      drawCard(this.node, resolved, this._folds[0]);
    }
    return Promise.resolve();
  }

  /** A sweep: one card per prediction, labelled, in a grid. */
  private _renderSweep(entries: unknown[]): void {
    const old = Array.from(this.node.querySelectorAll<HTMLElement>(':scope > .rj-sweep-grid > .rj-sweep-item'));
    old.forEach((item, i) => {
      this._folds[i] = readFolds(item, this._folds[i] ?? CLOSED);
    });
    const grid = document.createElement('div');
    grid.className = 'rj-sweep-grid';
    entries.forEach((entry, i) => {
      const record = (typeof entry === 'object' && entry !== null ? entry : {}) as Record<string, unknown>;
      const item = document.createElement('div');
      item.className = 'rj-sweep-item';
      const label = document.createElement('div');
      label.className = 'rj-sweep-label';
      label.textContent = typeof record.label === 'string' ? record.label : `#${i + 1}`;
      const host = document.createElement('div');
      const prediction = record.prediction;
      drawCard(
        host,
        (typeof prediction === 'object' && prediction !== null ? prediction : {}) as IPrediction,
        this._folds[i] ?? CLOSED
      );
      item.append(label, host);
      grid.appendChild(item);
    });
    this.node.replaceChildren(grid);
  }

  private _mimeType: string;
  private _model: IRenderMime.IMimeModel | null = null;
  private _unsubscribe: () => void;
}

export const rendererFactory: IRenderMime.IRendererFactory = {
  // Nothing from the data is ever parsed as HTML, so untrusted notebooks may use it.
  safe: true,
  mimeTypes: [MIME_TYPE, SWEEP_MIME_TYPE],
  defaultRank: 10,
  createRenderer: options => new PredictionRenderer(options)
};

const extension: IRenderMime.IExtension = {
  id: 'replicate-jupyter:prediction-renderer',
  description: 'Renders Replicate predictions as cards.',
  rendererFactory,
  rank: 10,
  dataType: 'json'
};

export default extension;
