/**
 * The mime renderer for `application/vnd.replicate.prediction+json`.
 *
 * JupyterLab calls `renderModel` again on the same widget when the kernel
 * sends `update_display_data` for the display, so the card is rebuilt in
 * place (keeping the folds the user opened).
 */
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';
import { IFoldState, readFolds, renderCard } from './card';
import { onFormatChanged } from './format';
import { IPrediction, MIME_TYPE } from './types';

export class PredictionRenderer extends Widget implements IRenderMime.IRenderer {
  private _folds: IFoldState = { logs: false, inputs: false };

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
    const prediction = (typeof data === 'object' && data !== null ? data : {}) as IPrediction;
    this._folds = readFolds(this.node, this._folds);
    renderCard(this.node, prediction, this._folds);
    return Promise.resolve();
  }

  private _mimeType: string;
  private _model: IRenderMime.IMimeModel | null = null;
  private _unsubscribe: () => void;
}

export const rendererFactory: IRenderMime.IRendererFactory = {
  // Nothing from the data is ever parsed as HTML, so untrusted notebooks may use it.
  safe: true,
  mimeTypes: [MIME_TYPE],
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
