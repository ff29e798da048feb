/**
 * Cost summing for cells and notebooks, kept free of JupyterLab imports so
 * it runs (and is unit-tested) in plain node.
 *
 * A cell may show the same prediction more than once (a display updated in
 * place, or the same prediction displayed again), so predictions are counted
 * by distinct id. Only a prediction in a final status is billed: its
 * `metrics.predict_time` and `metrics.cost_usd` count, a running one's don't.
 * A running one's cost so far (the kernel's `running` figure, sent with each
 * live update) is summed apart, and shown as `≈ $x so far` until the exact
 * final replaces it; a billed cost the kernel marked as an estimate shows
 * as `≈ $x est.`.
 */
import {
  FINAL_STATUSES,
  ICellCost,
  IPrediction,
  MIME_TYPE,
  RUNNING_STATUSES,
  SWEEP_MIME_TYPE
} from './types';
import { formatCost, formatSeconds, plural } from './format';

/** One prediction as far as cost is concerned. */
export interface IPredictionRecord {
  id: string;
  status: string;
  predictTime: number;
  costUsd: number;
  hardware: string | null;
  /** The billed cost rests on an assumption. */
  estimate?: boolean;
  /** While running: time and cost so far. */
  runningTime?: number;
  runningCost?: number;
}

/** What a cell (or a notebook) adds up to. */
export interface ISummary extends ICellCost {
  /** Predictions still starting/processing. */
  running: number;
  /** Hardware of the billed and running predictions (distinct, sorted). */
  hardware: string[];
  /** Seconds and USD so far of the running predictions (not billed yet). */
  running_predict_time?: number;
  running_cost_usd?: number;
  /** How many billed predictions are estimates. */
  estimated?: number;
}

/** Anything with a mime bundle: nbformat outputs and JupyterLab output models. */
export interface IHasData {
  data?: unknown;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function finiteNumber(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0
    ? value
    : 0;
}

export function isFinal(status: string): boolean {
  return FINAL_STATUSES.includes(status);
}

export function isRunning(status: string): boolean {
  return RUNNING_STATUSES.includes(status);
}

function jsonOf(value: unknown): unknown {
  if (typeof value === 'string') {
    // nbformat allows JSON mime data serialised as a string.
    try {
      return JSON.parse(value);
    } catch {
      return null;
    }
  }
  return value;
}

/** The prediction JSON in an output, if it carries the prediction mime type. */
export function predictionOf(output: IHasData | null | undefined): IPrediction | null {
  if (!output || !isObject(output.data)) {
    return null;
  }
  const value = jsonOf(output.data[MIME_TYPE]);
  return isObject(value) ? (value as IPrediction) : null;
}

/** Every prediction in an output: one, or a sweep's several. */
export function predictionsOf(output: IHasData | null | undefined): IPrediction[] {
  const single = predictionOf(output);
  if (single) {
    return [single];
  }
  if (!output || !isObject(output.data)) {
    return [];
  }
  const sweep = jsonOf(output.data[SWEEP_MIME_TYPE]);
  if (!isObject(sweep) || !Array.isArray(sweep.predictions)) {
    return [];
  }
  return sweep.predictions
    .map(entry => (isObject(entry) && isObject(entry.prediction) ? (entry.prediction as IPrediction) : null))
    .filter((p): p is IPrediction => p !== null);
}

/** Reduce one prediction JSON to what cost needs. */
export function recordOf(prediction: IPrediction, fallbackId: string): IPredictionRecord {
  const status = typeof prediction.status === 'string' ? prediction.status : 'unknown';
  const metrics = isObject(prediction.metrics) ? prediction.metrics : {};
  const running = isObject(prediction.running) ? prediction.running : null;
  let hardware = typeof metrics.hardware === 'string' ? metrics.hardware : null;
  if (!hardware && running && typeof running.hardware === 'string') {
    hardware = running.hardware;
  }
  const record: IPredictionRecord = {
    id: typeof prediction.id === 'string' && prediction.id ? prediction.id : fallbackId,
    status,
    predictTime: finiteNumber(metrics.predict_time),
    costUsd: finiteNumber(metrics.cost_usd),
    hardware,
    estimate: metrics.cost_estimate === true
  };
  if (running && isRunning(status)) {
    record.runningTime = finiteNumber(running.predict_time);
    record.runningCost = finiteNumber(running.cost_usd);
  }
  return record;
}

/**
 * Put `record` into `records`, keeping one entry per id: a final state wins
 * over a running one (the display may have been duplicated before it was
 * updated), otherwise the later one wins.
 */
export function addRecord(
  records: Map<string, IPredictionRecord>,
  record: IPredictionRecord
): void {
  const previous = records.get(record.id);
  if (previous && isFinal(previous.status) && !isFinal(record.status)) {
    return;
  }
  records.set(record.id, record);
}

/** Distinct predictions shown in a list of outputs. */
export function recordsOfOutputs(
  outputs: Iterable<IHasData>,
  keyPrefix = ''
): Map<string, IPredictionRecord> {
  const records = new Map<string, IPredictionRecord>();
  let index = 0;
  for (const output of outputs) {
    predictionsOf(output).forEach((prediction, position) => {
      addRecord(records, recordOf(prediction, `${keyPrefix}#${index}.${position}`));
    });
    index += 1;
  }
  return records;
}

/** Round away float noise (0.1 + 0.2) so metadata stays stable and readable. */
export function roundCost(cost: ICellCost): ICellCost {
  return {
    predict_time: Math.round(cost.predict_time * 1e6) / 1e6,
    cost_usd: Math.round(cost.cost_usd * 1e10) / 1e10,
    predictions: cost.predictions
  };
}

/** Add up distinct predictions. */
export function summarize(records: Iterable<IPredictionRecord>): ISummary {
  let predictTime = 0;
  let costUsd = 0;
  let predictions = 0;
  let running = 0;
  let runningTime = 0;
  let runningCost = 0;
  let estimated = 0;
  const hardware = new Set<string>();
  for (const record of records) {
    predictions += 1;
    if (isFinal(record.status)) {
      predictTime += record.predictTime;
      costUsd += record.costUsd;
      estimated += record.estimate ? 1 : 0;
      if (record.hardware) {
        hardware.add(record.hardware);
      }
    } else if (isRunning(record.status)) {
      running += 1;
      runningTime += record.runningTime ?? 0;
      runningCost += record.runningCost ?? 0;
      if (record.hardware) {
        hardware.add(record.hardware);
      }
    }
  }
  return {
    ...roundCost({ predict_time: predictTime, cost_usd: costUsd, predictions }),
    running,
    hardware: [...hardware].sort(),
    running_predict_time: Math.round(runningTime * 1e6) / 1e6,
    running_cost_usd: Math.round(runningCost * 1e10) / 1e10,
    estimated
  };
}

/** The cost of one cell's outputs. */
export function summarizeOutputs(outputs: Iterable<IHasData>): ISummary {
  return summarize(recordsOfOutputs(outputs).values());
}

/** Read `metadata.replicate` written earlier; null when absent or malformed. */
export function parseCellCost(value: unknown): ICellCost | null {
  if (!isObject(value)) {
    return null;
  }
  const { predict_time, cost_usd, predictions } = value;
  if (
    typeof predict_time !== 'number' ||
    typeof cost_usd !== 'number' ||
    typeof predictions !== 'number' ||
    ![predict_time, cost_usd, predictions].every(n => Number.isFinite(n) && n >= 0)
  ) {
    return null;
  }
  return { predict_time, cost_usd, predictions };
}

export function sameCost(a: ICellCost | null, b: ICellCost | null): boolean {
  if (a === null || b === null) {
    return a === b;
  }
  return (
    a.predictions === b.predictions &&
    Math.abs(a.predict_time - b.predict_time) < 1e-9 &&
    Math.abs(a.cost_usd - b.cost_usd) < 1e-12
  );
}

/** A cell as the notebook total sees it. */
export interface ICellInput {
  /** The cell's outputs (may be empty). */
  outputs: IHasData[];
  /** The cell's `metadata.replicate` (used when outputs hold no prediction). */
  metadata?: unknown;
}

/**
 * The notebook total: distinct predictions across all cells' outputs, plus
 * the saved cost of cells whose outputs no longer hold the predictions
 * (e.g. outputs stripped before sharing).
 */
export function summarizeNotebook(cells: Iterable<ICellInput>): ISummary {
  const records = new Map<string, IPredictionRecord>();
  let extra: ICellCost = { predict_time: 0, cost_usd: 0, predictions: 0 };
  let cellIndex = 0;
  for (const cell of cells) {
    const own = recordsOfOutputs(cell.outputs, `cell${cellIndex}`);
    if (own.size > 0) {
      for (const record of own.values()) {
        addRecord(records, record);
      }
    } else {
      const saved = parseCellCost(cell.metadata);
      if (saved) {
        extra = {
          predict_time: extra.predict_time + saved.predict_time,
          cost_usd: extra.cost_usd + saved.cost_usd,
          predictions: extra.predictions + saved.predictions
        };
      }
    }
    cellIndex += 1;
  }
  const fromOutputs = summarize(records.values());
  return {
    ...roundCost({
      predict_time: fromOutputs.predict_time + extra.predict_time,
      cost_usd: fromOutputs.cost_usd + extra.cost_usd,
      predictions: fromOutputs.predictions + extra.predictions
    }),
    running: fromOutputs.running,
    hardware: fromOutputs.hardware,
    running_predict_time: fromOutputs.running_predict_time,
    running_cost_usd: fromOutputs.running_cost_usd,
    estimated: fromOutputs.estimated
  };
}

/**
 * "CPU" when every billed prediction ran on a cpu SKU, else "GPU" (Replicate
 * bills GPU seconds; a notebook of unknown hardware reads as GPU time).
 */
export function computeLabel(hardware: string[]): string {
  return hardware.length > 0 && hardware.every(h => h.toLowerCase().startsWith('cpu'))
    ? 'CPU'
    : 'GPU';
}

/** What `describeCost` reads: a summary, or a cell's saved cost. */
export type IShownCost = ICellCost & Partial<Omit<ISummary, keyof ICellCost>>;

/**
 * The text of a cell's cost line: `GPU 3.2 s · $0.0045 · 2 predictions`.
 * While predictions run and the kernel has sent their cost so far, the time
 * and cost include it: `CPU 2.4 s · ≈ $0.00024 so far · 1 prediction · 1
 * running`. A billed estimate reads `≈ $0.0012 est.`.
 */
export function describeCost(summary: IShownCost, decimals?: number): string {
  const runningTime = summary.running ? summary.running_predict_time ?? 0 : 0;
  const runningCost = summary.running ? summary.running_cost_usd ?? 0 : 0;
  let money = formatCost(summary.cost_usd, decimals);
  if (runningTime > 0 || runningCost > 0) {
    money = `\u2248 ${formatCost(summary.cost_usd + runningCost, decimals)} so far`;
  } else if (summary.estimated) {
    money = `\u2248 ${money} est.`;
  }
  const parts = [
    `${computeLabel(summary.hardware ?? [])} ${formatSeconds(summary.predict_time + runningTime)}`,
    money,
    plural(summary.predictions, 'prediction')
  ];
  if (summary.running) {
    parts.push(`${summary.running} running`);
  }
  return parts.join(' \u00b7 ');
}
