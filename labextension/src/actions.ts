/**
 * The action row of a finished card: its output hash, "Rerun" (with an
 * optional backend) and a "Compare" toggle.
 *
 * The card is drawn by the mime renderer, which knows nothing of notebooks, so
 * the buttons say what the user asked for with DOM events that bubble from the
 * card (`RERUN_EVENT`, `COMPARE_EVENT`); the notebook plugin (rerun.ts)
 * listens, finds the cell whose output holds the card and acts. An event nobody
 * handled (the card shown outside a notebook) falls back here: Rerun shows the
 * line to run, Compare opens the comparison over the page.
 */
import { openCompareOverlay } from './compare';
import { el } from './dom';
import { BACKENDS, comparable, outputHash, rerunId, rerunSource } from './records';
import { IPrediction } from './types';

/** Bubbles from a card's Rerun button; `detail`: `IRerunRequest`. Cancel it to say it was handled. */
export const RERUN_EVENT = 'rj-rerun';
/** Dispatched on `document` once two cards are picked; `detail`: `ICompareRequest`. */
export const COMPARE_EVENT = 'rj-compare';

export interface IRerunRequest {
  id: string;
  backend: string;
  source: string;
}

export interface ICompareRequest {
  a: IPrediction;
  b: IPrediction;
}

/** Cards picked for a comparison, by prediction id, in the order they were picked. */
const picked = new Map<string, IPrediction>();

function syncToggles(): void {
  document.querySelectorAll<HTMLButtonElement>('button.rj-compare-toggle').forEach(button => {
    const on = picked.has(button.dataset.predictionId ?? '');
    button.setAttribute('aria-pressed', String(on));
    button.textContent = on ? (picked.size === 1 ? 'Compare: pick another card' : 'Compare \u2713') : 'Compare';
  });
}

/** Pick (or unpick) a card; the second pick asks for the comparison and clears the picks. */
export function togglePick(p: IPrediction): void {
  const id = rerunId(p);
  if (!id) {
    return;
  }
  if (picked.has(id)) {
    picked.delete(id);
  } else {
    picked.set(id, p);
  }
  if (picked.size >= 2) {
    const [a, b] = Array.from(picked.values());
    picked.clear();
    const event = new CustomEvent<ICompareRequest>(COMPARE_EVENT, { detail: { a, b }, cancelable: true });
    if (document.dispatchEvent(event)) {
      openCompareOverlay(a, b); // no plugin opened a panel for it
    }
  }
  syncToggles();
}

function rerunControls(id: string): HTMLElement {
  const box = el('span', 'rj-rerun');
  const button = el('button', 'rj-button rj-rerun-button', 'Rerun');
  button.type = 'button';
  const on = el('select', 'rj-rerun-on');
  on.title = 'Backend to rerun on';
  on.setAttribute('aria-label', 'Rerun on');
  on.appendChild(new Option('same backend', ''));
  BACKENDS.forEach(b => on.appendChild(new Option(`on ${b}`, b)));
  const describe = () => {
    button.title = `Insert and run a cell below: ${rerunSource(id, on.value) ?? ''}`;
  };
  on.addEventListener('change', describe);
  describe();
  button.addEventListener('click', () => {
    const source = rerunSource(id, on.value);
    if (!source) {
      return;
    }
    const event = new CustomEvent<IRerunRequest>(RERUN_EVENT, {
      detail: { id, backend: on.value, source },
      bubbles: true,
      cancelable: true
    });
    if (button.dispatchEvent(event)) {
      box.querySelector('.rj-rerun-hint')?.remove();
      box.appendChild(el('code', 'rj-rerun-hint', source)); // not in a notebook: say what to run
    }
  });
  box.append(button, on);
  return box;
}

/** The row under a finished card, or null for a card with no record (nothing to rerun from). */
export function renderActions(p: IPrediction): HTMLElement | null {
  const id = rerunId(p);
  if (!id) {
    return null;
  }
  const row = el('div', 'rj-actions');
  const sha = outputHash(p);
  if (sha) {
    const hash = el('span', 'rj-output-hash', `output sha256 ${sha.slice(0, 12)}`);
    hash.title = `sha256 over every output's sha256: ${sha}`;
    hash.dataset.sha256 = sha;
    row.appendChild(hash);
  }
  row.appendChild(rerunControls(id));
  if (comparable(p)) {
    const toggle = el('button', 'rj-button rj-compare-toggle', 'Compare');
    toggle.type = 'button';
    toggle.dataset.predictionId = id;
    toggle.title = 'Pick two cards to see them side by side with what differs';
    toggle.setAttribute('aria-pressed', String(picked.has(id)));
    toggle.addEventListener('click', () => togglePick(p));
    row.appendChild(toggle);
    if (picked.has(id)) {
      picked.set(id, p); // the card was redrawn: compare what it shows now
    }
  }
  queueMicrotask(syncToggles);
  return row;
}
