/**
 * The compare view of two cards: both outputs side by side, the verdict
 * (identical hashes or not), per output that differs its pixel difference
 * (computed here from the two images on a canvas) or its word diff, and the
 * facts of each (comparison.ts). The notebook plugin shows it in a panel beside
 * the notebook; outside a notebook it opens over the page.
 *
 * Every string goes in as text; images only as data: URLs `safeMediaUrl` accepts.
 */
import { renderOutputs } from './card';
import { compareOutputs, describePixels, facts, inputDifferences, pixelDifference, wordDiff } from './comparison';
import { el, showOverlay } from './dom';
import { OutputItem, outputItems, safeMediaUrl } from './outputs';
import { IPrediction } from './types';

async function pixelsOf(url: string): Promise<ImageData> {
  const img = new Image();
  img.src = url;
  await img.decode();
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const context = canvas.getContext('2d', { willReadFrequently: true });
  if (!context) {
    throw new Error('no 2d canvas');
  }
  context.drawImage(img, 0, 0);
  return context.getImageData(0, 0, canvas.width, canvas.height);
}

/** `output i: pixels …`, filled in once both images are decoded. */
async function imageNote(note: HTMLElement, x: string, y: string): Promise<void> {
  try {
    const [a, b] = await Promise.all([pixelsOf(x), pixelsOf(y)]);
    if (a.width !== b.width || a.height !== b.height) {
      note.textContent += `pixels size ${a.width}\u00d7${a.height} vs ${b.width}\u00d7${b.height}`;
    } else {
      note.textContent += describePixels(pixelDifference(a.data, b.data));
    }
    note.dataset.pixels = 'done';
  } catch (reason) {
    note.textContent += `pixels not compared (${String(reason)})`;
    note.dataset.pixels = 'failed';
  }
}

function textNote(note: HTMLElement, x: string, y: string): HTMLElement {
  const { similarity, runs } = wordDiff(x, y);
  note.textContent += `similarity ${similarity}`;
  const diff = el('div', 'rj-compare-diff');
  runs.forEach(([op, old, added], i) => {
    if (i > 0) {
      diff.append(' ');
    }
    if (op === 'equal') {
      diff.append(old);
      return;
    }
    if (old) {
      diff.appendChild(el('del', undefined, old));
    }
    if (old && added) {
      diff.append(' ');
    }
    if (added) {
      diff.appendChild(el('ins', undefined, added));
    }
  });
  return diff;
}

function table(className: string, head: string[], rows: string[][]): HTMLTableElement {
  const t = el('table', className);
  const tr = el('tr');
  head.forEach(h => tr.appendChild(el('th', undefined, h)));
  t.appendChild(tr);
  for (const row of rows) {
    const r = el('tr');
    row.forEach((cell, i) => r.appendChild(el(i === 0 ? 'th' : 'td', undefined, cell)));
    r.classList.toggle('rj-compare-differs', row.length === 3 && row[1] !== row[2]);
    t.appendChild(r);
  }
  return t;
}

function side(p: IPrediction, label: string): HTMLElement {
  const box = el('div', 'rj-compare-side');
  const head = el('div', 'rj-compare-side-head', `${label}: ${p.model ?? 'prediction'}`);
  head.appendChild(el('span', 'rj-id', ` ${p.id ?? ''}`));
  box.appendChild(head);
  box.appendChild(renderOutputs(p) ?? el('div', 'rj-compare-empty', 'no output'));
  return box;
}

/** The comparison of `a` and `b` (pixel figures arrive once the images decode). */
export function renderComparison(a: IPrediction, b: IPrediction): HTMLElement {
  const root = el('div', 'jp-RenderedReplicatePrediction rj-compare-view');
  const result = compareOutputs(a, b);
  const verdict = el('div', 'rj-compare-verdict', result.verdict);
  verdict.dataset.identical = String(result.identical);
  root.appendChild(verdict);
  const sides = el('div', 'rj-compare-sides');
  sides.append(side(a, 'A'), side(b, 'B'));
  root.appendChild(sides);

  const notes = el('div', 'rj-compare-notes');
  const ia = outputItems(a.output, a.output_display);
  const ib = outputItems(b.output, b.output_display);
  for (const row of result.rows) {
    if (row.same) {
      continue;
    }
    const note = el('div', 'rj-compare-note', `output ${row.index}: `);
    notes.appendChild(note);
    const x: OutputItem | undefined = ia[row.index];
    const y: OutputItem | undefined = ib[row.index];
    const ux = x && x.kind === 'image' ? safeMediaUrl(x.url, 'image') : null;
    const uy = y && y.kind === 'image' ? safeMediaUrl(y.url, 'image') : null;
    if (ux && uy) {
      void imageNote(note, ux, uy);
    } else if (x?.kind === 'text' && y?.kind === 'text') {
      notes.appendChild(textNote(note, x.text, y.text));
    } else {
      note.textContent += `sha256 ${(row.a ?? '?').slice(0, 12)} vs ${(row.b ?? '?').slice(0, 12)}`;
    }
  }
  if (notes.childElementCount) {
    root.appendChild(notes);
  }
  root.appendChild(table('rj-compare-facts', ['', `A ${a.id ?? ''}`, `B ${b.id ?? ''}`], facts(a, b)));
  const inputs = inputDifferences(a, b);
  if (inputs.length) {
    root.appendChild(el('div', 'rj-compare-subtitle', 'Inputs that differ'));
    root.appendChild(table('rj-compare-inputs', ['input', 'A', 'B'], inputs));
  }
  return root;
}

/** The comparison over the page (a card outside a notebook); a click on the backdrop or Escape closes it. */
export function openCompareOverlay(a: IPrediction, b: IPrediction): void {
  const panel = el('div', 'rj-compare-dialog');
  const close = el('button', 'rj-button rj-compare-close', 'Close');
  close.type = 'button';
  panel.append(close, renderComparison(a, b));
  close.addEventListener('click', showOverlay('rj-compare-overlay', 'Compare predictions', panel, false));
}
