/**
 * Two recorded predictions compared, without a kernel: what `%replicate rerun
 * ID --compare` says (notebook/rerun.py `Comparison`), in its words, for any two
 * cards of any notebook. Identical means every output's recorded sha256
 * matches; for outputs that differ, images get a pixel difference (the same
 * figures as prediction/record.py `pixel_difference`: `mean_abs`, `max`,
 * `changed_pixels`) and texts a word diff with a similarity; beside them the
 * facts of each (backend, hardware, version, seed, time, cost, hash) and the
 * inputs that differ.
 *
 * Pure functions with no DOM, so node tests them; compare.ts draws them.
 */
import { formatCost, formatSeconds } from './format';
import { digestsOf, outputHash, recorded } from './records';
import { IPrediction } from './types';

/** One output position: its hash on each side and whether they match. */
export interface IOutputRow {
  index: number;
  a: string | null;
  b: string | null;
  same: boolean;
}

export interface IComparison {
  identical: boolean;
  rows: IOutputRow[];
  verdict: string;
}

function sha(value: unknown): string | null {
  return typeof value === 'string' && value ? value : null;
}

/** Whether `a` and `b` gave the same outputs, per output and as a whole, and the verdict in rerun.py's words. */
export function compareOutputs(a: IPrediction, b: IPrediction): IComparison {
  const da = digestsOf(a);
  const db = digestsOf(b);
  const rows: IOutputRow[] = [];
  for (let i = 0; i < Math.max(da.length, db.length); i++) {
    const x = sha(da[i]?.sha256);
    const y = sha(db[i]?.sha256);
    rows.push({ index: i, a: x, b: y, same: x !== null && x === y });
  }
  const ha = outputHash(a);
  const identical =
    da.length > 0 && a.status === 'succeeded' && b.status === 'succeeded' && ha !== null && ha === outputHash(b);
  let verdict: string;
  if (identical) {
    verdict = `identical: every output hash matches (${rows.length} output${rows.length === 1 ? '' : 's'})`;
  } else if (b.status !== 'succeeded' || a.status !== 'succeeded') {
    const failed = a.status !== 'succeeded' ? a : b;
    verdict = `${failed.id ?? 'one'} ${failed.status ?? 'did not finish'}${failed.error ? `: ${String(failed.error)}` : ''}`;
  } else {
    verdict = `different: ${rows.filter(r => !r.same).length} of ${rows.length} outputs differ`;
  }
  return { identical, rows, verdict };
}

function num(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

function shown(value: unknown): string {
  if (value === undefined || value === null) {
    return '';
  }
  return typeof value === 'string' ? value : JSON.stringify(value) ?? String(value);
}

/** (what, a, b) rows: the figures beside the outputs, as `Comparison.facts` lists them. */
export function facts(a: IPrediction, b: IPrediction): [string, string, string][] {
  const side = (p: IPrediction): string[] => {
    const record = recorded(p);
    const metrics = record.metrics ?? p.metrics ?? {};
    const time = num(metrics.predict_time);
    const cost = num(metrics.cost_usd);
    return [
      shown(record.backend ?? p.backend),
      shown(metrics.hardware),
      shown(record.model?.version ?? p.version),
      shown(record.seed),
      time === null ? '' : formatSeconds(time),
      cost === null ? '' : formatCost(cost),
      (outputHash(p) ?? '').slice(0, 16)
    ];
  };
  const labels = ['backend', 'hardware', 'version', 'seed', 'predict time', 'cost', 'output sha256'];
  const x = side(a);
  const y = side(b);
  const rows: [string, string, string][] = [['model', shown(a.model), shown(b.model)]];
  return rows.concat(labels.map((label, i): [string, string, string] => [label, x[i], y[i]]));
}

/** (input, a, b) for every input whose value differs (files by their sha256). */
export function inputDifferences(a: IPrediction, b: IPrediction): [string, string, string][] {
  const ia = recorded(a).input ?? a.input ?? {};
  const ib = recorded(b).input ?? b.input ?? {};
  const key = (v: unknown): string => {
    if (typeof v === 'object' && v !== null && (v as Record<string, unknown>).type === 'file') {
      const f = v as Record<string, unknown>;
      return `${shown(f.name)} (sha256 ${shown(f.sha256).slice(0, 12)})`;
    }
    return shown(v);
  };
  const out: [string, string, string][] = [];
  for (const name of new Set([...Object.keys(ia), ...Object.keys(ib)])) {
    const x = key(ia[name]);
    const y = key(ib[name]);
    if (x !== y) {
      out.push([name, x, y]);
    }
  }
  return out;
}

/** How far two images are apart, as prediction/record.py `pixel_difference` reports it. */
export interface IPixels {
  mean_abs: number;
  max: number;
  changed_pixels: number;
}

/**
 * Mean and max absolute difference per RGB channel (0–255) and the share of
 * pixels that differ at all, of two RGBA buffers of one size (alpha ignored,
 * as the kernel's `convert("RGB")` drops it).
 */
export function pixelDifference(a: ArrayLike<number>, b: ArrayLike<number>): IPixels {
  const pixels = Math.min(a.length, b.length) >> 2;
  let sum = 0;
  let max = 0;
  let changed = 0;
  for (let p = 0; p < pixels; p++) {
    let differs = false;
    for (let c = 0; c < 3; c++) {
      const d = Math.abs(a[p * 4 + c] - b[p * 4 + c]);
      sum += d;
      max = Math.max(max, d);
      differs = differs || d > 0;
    }
    changed += differs ? 1 : 0;
  }
  const round = (v: number, digits: number) => Number(v.toFixed(digits));
  return {
    mean_abs: pixels ? round(sum / (pixels * 3), 4) : 0,
    max,
    changed_pixels: pixels ? round(changed / pixels, 6) : 0
  };
}

/** `pixels mean_abs 12.3, max 255, changed_pixels 0.0457`: the kernel's keys, so both read alike. */
export function describePixels(px: IPixels): string {
  return `pixels mean_abs ${px.mean_abs}, max ${px.max}, changed_pixels ${px.changed_pixels}`;
}

/** A run of a word diff: op equal/replace/delete/insert, the old words, the new words. */
export type DiffRun = ['equal' | 'replace' | 'delete' | 'insert', string, string];

/** Past this many word pairs the diff only trims the common ends (a diff stays instant). */
const MAX_CELLS = 4_000_000;

/**
 * Similarity of two texts (0–1, difflib's ratio: twice the matched words over
 * all words) and their word diff as runs (words split on spaces, as rerun.py
 * does, so the runs rejoin to the texts).
 */
export function wordDiff(a: string, b: string): { similarity: number; runs: DiffRun[] } {
  const wa = a.split(' ');
  const wb = b.split(' ');
  let start = 0;
  while (start < wa.length && start < wb.length && wa[start] === wb[start]) {
    start++;
  }
  let end = 0;
  while (end < wa.length - start && end < wb.length - start && wa[wa.length - 1 - end] === wb[wb.length - 1 - end]) {
    end++;
  }
  const xa = wa.slice(start, wa.length - end);
  const xb = wb.slice(start, wb.length - end);
  // ops over the middle, one per word: '=' both, '-' old only, '+' new only
  const ops: ['=' | '-' | '+', string][] = [];
  if (xa.length * xb.length <= MAX_CELLS) {
    const n = xa.length;
    const m = xb.length;
    const lcs = new Uint32Array((n + 1) * (m + 1));
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        lcs[i * (m + 1) + j] =
          xa[i] === xb[j] ? lcs[(i + 1) * (m + 1) + j + 1] + 1 : Math.max(lcs[(i + 1) * (m + 1) + j], lcs[i * (m + 1) + j + 1]);
      }
    }
    let i = 0;
    let j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && xa[i] === xb[j]) {
        ops.push(['=', xa[i++]]);
        j++;
      } else if (j >= m || (i < n && lcs[(i + 1) * (m + 1) + j] >= lcs[i * (m + 1) + j + 1])) {
        ops.push(['-', xa[i++]]);
      } else {
        ops.push(['+', xb[j++]]);
      }
    }
  } else {
    xa.forEach(w => ops.push(['-', w]));
    xb.forEach(w => ops.push(['+', w]));
  }
  const matched = start + end + ops.filter(o => o[0] === '=').length;
  const total = wa.length + wb.length;
  return { similarity: total ? Number(((2 * matched) / total).toFixed(4)) : 1, runs: runsOf(wa, start, end, ops) };
}

function runsOf(wa: string[], start: number, end: number, ops: ['=' | '-' | '+', string][]): DiffRun[] {
  const runs: DiffRun[] = [];
  const equal = (words: string[]) => {
    if (words.length) {
      runs.push(['equal', words.join(' '), words.join(' ')]);
    }
  };
  equal(wa.slice(0, start));
  let k = 0;
  while (k < ops.length) {
    if (ops[k][0] === '=') {
      const words: string[] = [];
      while (k < ops.length && ops[k][0] === '=') {
        words.push(ops[k++][1]);
      }
      equal(words);
      continue;
    }
    const old: string[] = [];
    const added: string[] = [];
    while (k < ops.length && ops[k][0] !== '=') {
      (ops[k][0] === '-' ? old : added).push(ops[k++][1]);
    }
    const op = old.length && added.length ? 'replace' : old.length ? 'delete' : 'insert';
    runs.push([op, old.join(' '), added.join(' ')]);
  }
  equal(wa.slice(wa.length - end));
  return runs;
}
