/**
 * Builds the prediction card's DOM.
 *
 * Every string that comes from a model or a notebook is put into the page
 * with `textContent` or as an attribute value, never parsed as HTML; media
 * elements only get `src` values that `safeMediaUrl` accepted (data: URLs of
 * the matching media type). A notebook from anyone can be opened safely.
 */
import { IPrediction, FINAL_STATUSES, RUNNING_STATUSES } from './types';
import { renderCostDetails, renderMetrics } from './costview';
import { el, isObject, showOverlay } from './dom';
import { formatBytes, formatSeconds } from './format';
import { MediaKind, OutputItem, isFile, outputItems, safeMediaUrl } from './outputs';

function asText(value: unknown): string {
  if (typeof value === 'string') {
    return value;
  }
  try {
    return JSON.stringify(value, null, 2) ?? String(value);
  } catch {
    return String(value);
  }
}

function truncate(text: string, length: number): string {
  return text.length > length ? `${text.slice(0, length)}\u2026` : text;
}

/** Shows an image at full size over the page; a click or Escape closes it. */
export function openLightbox(url: string, name: string): void {
  const safe = safeMediaUrl(url, 'image');
  if (!safe) {
    return;
  }
  const img = el('img', 'rj-lightbox-image');
  img.src = safe;
  img.alt = name;
  showOverlay('rj-lightbox', name, img, true);
}

function renderMedia(item: Extract<OutputItem, { kind: MediaKind }>): HTMLElement {
  if (item.kind === 'image') {
    const figure = el('figure', 'rj-image');
    const img = el('img');
    img.src = item.url;
    img.alt = item.name;
    img.title = `${item.name} \u2014 click for full size`;
    img.addEventListener('click', () => openLightbox(item.url, item.name));
    figure.appendChild(img);
    return figure;
  }
  const player = el(item.kind, `rj-${item.kind}`);
  player.controls = true;
  player.src = item.url;
  player.title = item.name;
  return player;
}

function renderFileLink(item: Extract<OutputItem, { kind: 'file' }>): HTMLElement {
  const row = el('div', 'rj-file');
  if (item.url) {
    const link = el('a', 'rj-file-link', item.name);
    link.href = item.url;
    link.target = '_blank';
    link.rel = 'noopener noreferrer';
    link.download = item.name;
    row.appendChild(link);
  } else {
    row.appendChild(el('span', 'rj-file-link', item.name));
  }
  const details = [item.contentType, item.size !== null ? formatBytes(item.size) : '']
    .filter(Boolean)
    .join(', ');
  if (details) {
    row.appendChild(el('span', 'rj-file-size', ` (${details})`));
  }
  return row;
}

/** The outputs as the card shows them (images in a grid, players, file links, text), or null. */
export function renderOutputs(prediction: IPrediction): HTMLElement | null {
  const items = outputItems(prediction.output, prediction.output_display);
  if (items.length === 0) {
    return null;
  }
  const box = el('div', 'rj-outputs');
  let grid: HTMLElement | null = null;
  for (const item of items) {
    if (item.kind === 'image') {
      if (!grid) {
        grid = el('div', 'rj-grid');
        box.appendChild(grid);
      }
      grid.appendChild(renderMedia(item));
      continue;
    }
    grid = null;
    if (item.kind === 'audio' || item.kind === 'video') {
      box.appendChild(renderMedia(item));
    } else if (item.kind === 'file') {
      box.appendChild(renderFileLink(item));
    } else if (item.kind === 'text') {
      box.appendChild(el('pre', 'rj-text', item.text));
    } else if (item.kind === 'json') {
      box.appendChild(el('pre', 'rj-json', asText(item.value)));
    }
  }
  box.querySelectorAll('.rj-grid').forEach(g => {
    g.classList.toggle('rj-grid-single', g.children.length === 1);
  });
  return box;
}

function describeInput(value: unknown): string {
  if (isFile(value)) {
    const parts = [
      typeof value.name === 'string' ? value.name : 'file',
      typeof value.size === 'number' ? formatBytes(value.size) : '',
      typeof value.sha256 === 'string' ? `sha256 ${value.sha256.slice(0, 12)}\u2026` : ''
    ];
    return parts.filter(Boolean).join(', ');
  }
  return truncate(asText(value), 500);
}

function renderInputs(prediction: IPrediction, open: boolean): HTMLElement | null {
  if (!isObject(prediction.input) || Object.keys(prediction.input).length === 0) {
    return null;
  }
  const details = el('details', 'rj-inputs');
  details.open = open;
  details.appendChild(el('summary', undefined, 'Inputs'));
  const table = el('table');
  for (const [key, value] of Object.entries(prediction.input)) {
    const row = el('tr');
    row.appendChild(el('th', undefined, key));
    row.appendChild(el('td', undefined, describeInput(value)));
    table.appendChild(row);
  }
  details.appendChild(table);
  return details;
}

function renderLogs(prediction: IPrediction, open: boolean): HTMLElement | null {
  if (typeof prediction.logs !== 'string' || !prediction.logs) {
    return null;
  }
  const lines = prediction.logs.replace(/\n$/, '').split('\n').length;
  const details = el('details', 'rj-logs');
  details.open = open;
  details.appendChild(el('summary', undefined, `Logs (${lines} line${lines === 1 ? '' : 's'})`));
  const pre = el('pre', undefined, prediction.logs);
  details.appendChild(pre);
  return details;
}

function renderProgress(prediction: IPrediction): HTMLElement | null {
  const progress = prediction.progress;
  if (!isObject(progress) || !RUNNING_STATUSES.includes(String(prediction.status))) {
    return null;
  }
  const step = typeof progress.step === 'number' ? progress.step : 0;
  const total = typeof progress.total === 'number' && progress.total > 0 ? progress.total : 0;
  const box = el('div', 'rj-progress');
  const track = el('div', 'rj-progress-track');
  const bar = el('div', 'rj-progress-bar');
  const fraction = total ? Math.max(0, Math.min(1, step / total)) : 0;
  bar.style.width = `${(fraction * 100).toFixed(1)}%`;
  track.setAttribute('role', 'progressbar');
  track.setAttribute('aria-valuemin', '0');
  track.setAttribute('aria-valuemax', String(total));
  track.setAttribute('aria-valuenow', String(step));
  track.appendChild(bar);
  box.appendChild(track);
  let label = total ? `step ${step}/${total}` : `step ${step}`;
  if (typeof progress.eta_s === 'number' && Number.isFinite(progress.eta_s)) {
    label += ` \u00b7 ETA ${formatSeconds(progress.eta_s)}`;
  }
  box.appendChild(el('span', 'rj-progress-label', label));
  return box;
}

/** Which folds the user opened, kept across live re-renders. */
export interface IFoldState {
  logs: boolean;
  inputs: boolean;
  cost?: boolean;
}

/** Replace `host`'s content with the card for `prediction`. */
export function renderCard(host: HTMLElement, prediction: IPrediction, folds: IFoldState): void {
  const status = typeof prediction.status === 'string' ? prediction.status : 'unknown';
  const card = el('div', 'rj-card');
  card.dataset.status = status;
  if (typeof prediction.id === 'string') {
    card.dataset.predictionId = prediction.id;
  }

  const header = el('div', 'rj-header');
  const model = typeof prediction.model === 'string' ? prediction.model : 'prediction';
  const title = el('span', 'rj-model', model);
  if (typeof prediction.version === 'string' && prediction.version) {
    const version = el('span', 'rj-version', `@${truncate(prediction.version, 12)}`);
    version.title = prediction.version;
    title.appendChild(version);
  }
  header.appendChild(title);
  const pill = el('span', `rj-status rj-status-${status.replace(/[^a-z]/gi, '')}`, status);
  header.appendChild(pill);
  if (typeof prediction.backend === 'string' && prediction.backend) {
    header.appendChild(el('span', 'rj-backend', prediction.backend));
  }
  if (typeof prediction.id === 'string') {
    header.appendChild(el('span', 'rj-id', prediction.id));
  }
  card.appendChild(header);

  const progress = renderProgress(prediction);
  if (progress) {
    card.appendChild(progress);
  }

  const outputs = renderOutputs(prediction);
  const hasImage = !!outputs?.querySelector('.rj-image');
  const preview = safeMediaUrl(prediction.preview, 'image');
  if (preview && !FINAL_STATUSES.includes(status) && !hasImage) {
    const figure = el('figure', 'rj-preview');
    const img = el('img');
    img.src = preview;
    img.alt = 'preview';
    figure.appendChild(img);
    const step = isObject(prediction.progress) ? prediction.progress.step : undefined;
    figure.appendChild(
      el('figcaption', undefined, typeof step === 'number' ? `preview, step ${step}` : 'preview')
    );
    card.appendChild(figure);
  }
  if (outputs) {
    card.appendChild(outputs);
  }

  if (prediction.error !== null && prediction.error !== undefined && prediction.error !== '') {
    card.appendChild(el('pre', 'rj-error', asText(prediction.error)));
  }

  const metrics = renderMetrics(prediction);
  if (metrics) {
    card.appendChild(metrics);
  }
  const costDetails = renderCostDetails(prediction, folds.cost ?? false);
  if (costDetails) {
    card.appendChild(costDetails);
  }
  const logs = renderLogs(prediction, folds.logs);
  if (logs) {
    card.appendChild(logs);
    if (folds.logs) {
      const pre = logs.querySelector('pre');
      requestAnimationFrame(() => {
        if (pre) {
          pre.scrollTop = pre.scrollHeight;
        }
      });
    }
  }
  const inputs = renderInputs(prediction, folds.inputs);
  if (inputs) {
    card.appendChild(inputs);
  }
  host.replaceChildren(card);
}

/** Read which folds are open in a rendered card. */
export function readFolds(host: HTMLElement, fallback: IFoldState): IFoldState {
  const logs = host.querySelector<HTMLDetailsElement>('details.rj-logs');
  const inputs = host.querySelector<HTMLDetailsElement>('details.rj-inputs');
  const cost = host.querySelector<HTMLDetailsElement>('details.rj-cost-details');
  return {
    logs: logs ? logs.open : fallback.logs,
    inputs: inputs ? inputs.open : fallback.inputs,
    cost: cost ? cost.open : fallback.cost
  };
}
