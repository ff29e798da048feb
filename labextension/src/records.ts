/**
 * What the extension reads from a prediction's record (the `record` of a final
 * payload, prediction/record.py): whether a card can be rerun or compared, its
 * output hashes, and the `%replicate rerun` line that reruns it.
 *
 * The rerun line is code the notebook will run, built from notebook data, so
 * it is only ever made from an id and a backend that pass a strict check: a
 * notebook from anyone cannot put anything else into the cell.
 */
import { FINAL_STATUSES, IOutputDigest, IPrediction, IRecord } from './types';

/** The backends `--on` takes (DESIGN.md section 5), in the order the card offers them. */
export const BACKENDS = ['local', 'workers', 'ray', 'replicate'] as const;

/** Prediction ids as the backends make them (hex, Replicate's base32): nothing a shell or Python could read as more. */
const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

function recordOf(p: IPrediction): IRecord | null {
  const r = p.record;
  return typeof r === 'object' && r !== null && !Array.isArray(r) ? r : null;
}

/** The id to rerun: the record's (the prediction's own when it says none), if it is a safe one. */
export function rerunId(p: IPrediction): string | null {
  const record = recordOf(p);
  if (!record || !FINAL_STATUSES.includes(String(p.status))) {
    return null;
  }
  const id = typeof record.id === 'string' ? record.id : p.id;
  return typeof id === 'string' && SAFE_ID.test(id) ? id : null;
}

/**
 * `%replicate rerun ID [--on BACKEND]`, or null when the id is not safe or the
 * backend is not one of `BACKENDS` (an empty backend: the one that ran it).
 */
export function rerunSource(id: string, backend = ''): string | null {
  if (!SAFE_ID.test(id) || (backend && !(BACKENDS as readonly string[]).includes(backend))) {
    return null;
  }
  return `%replicate rerun ${id}${backend ? ` --on ${backend}` : ''}`;
}

/** One digest per output item, as recorded (empty without a record). */
export function digestsOf(p: IPrediction): IOutputDigest[] {
  const outputs = recordOf(p)?.outputs;
  return Array.isArray(outputs) ? outputs.filter(d => typeof d === 'object' && d !== null) : [];
}

/** The hash over every output's hash (equal exactly when every output is), or null. */
export function outputHash(p: IPrediction): string | null {
  const sha = recordOf(p)?.output_sha256;
  return typeof sha === 'string' && sha ? sha : null;
}

/** A card that can join a comparison: a succeeded prediction whose record hashes its outputs. */
export function comparable(p: IPrediction): boolean {
  return rerunId(p) !== null && p.status === 'succeeded' && outputHash(p) !== null;
}

/** The record's field, else the payload's (a record saved by an older kernel may lack it). */
export function recorded(p: IPrediction): IRecord {
  return recordOf(p) ?? {};
}
