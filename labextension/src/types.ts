/**
 * The JSON carried by `application/vnd.replicate.prediction+json`
 * (see docs/ARCHITECTURE.md). Every field may be missing or of the wrong
 * type when it comes from an arbitrary notebook, so readers must check.
 */
export const MIME_TYPE = 'application/vnd.replicate.prediction+json';

/**
 * A `--sweep` cell: `{"predictions": [{"label": "seed=1", "prediction": {...}}, ...]}`,
 * each prediction in the shape above.
 */
export const SWEEP_MIME_TYPE = 'application/vnd.replicate.sweep+json';

/** Statuses after which a prediction never changes again (and is billed). */
export const FINAL_STATUSES = ['succeeded', 'failed', 'canceled'];

/** Statuses of a prediction that is still going. */
export const RUNNING_STATUSES = ['starting', 'processing'];

export interface IFileValue {
  type: 'file';
  url?: string;
  name?: string;
  content_type?: string;
  size?: number;
  sha256?: string;
}

export interface IMetrics {
  predict_time?: number;
  setup_time?: number;
  hardware?: string;
  cost_usd?: number;
  /** True when the cost rests on an assumption (then `billing.assumptions` says which). */
  cost_estimate?: boolean;
  /** How the ledger billed it (cost/billing.py `Bill.to_json`). */
  billing?: IBilling;
  [key: string]: unknown;
}

export interface IBilling {
  mode?: string; // "per-unit" | "hardware"
  units?: Record<string, number>;
  prices?: Record<string, number>;
  sku?: string | null;
  sku_assumed?: boolean;
  estimate?: boolean;
  assumptions?: string[];
  source?: string;
  date?: string;
}

/** While a prediction runs: what it has cost so far (provisional; the final metrics replace it). */
export interface IRunning {
  predict_time?: number;
  cost_usd?: number;
  hardware?: string | null;
}

/** Before it runs: what it is expected to cost, and on what basis. */
export interface IForecast {
  cost_usd?: number;
  basis?: string;
}

export interface IProgress {
  step?: number;
  total?: number;
  eta_s?: number | null;
}

export interface IPrediction {
  id?: string;
  model?: string;
  version?: string;
  status?: string;
  backend?: string;
  input?: Record<string, unknown>;
  output?: unknown;
  output_display?: string | null;
  logs?: string;
  error?: unknown;
  created_at?: string;
  started_at?: string;
  completed_at?: string;
  metrics?: IMetrics;
  progress?: IProgress | null;
  preview?: string | null;
  running?: IRunning | null;
  forecast?: IForecast | null;
  /** What reruns it (prediction/record.py `record_of`); only on a final payload. */
  record?: IRecord;
}

/** One output item's digest in a record: files by the sha256 of their bytes, text of its UTF-8. */
export interface IOutputDigest {
  index?: number | null;
  kind?: string; // "file" | "text" | "json"
  name?: string;
  content_type?: string;
  size?: number;
  sha256?: string | null;
}

/** The record a final payload carries (the fields the extension reads; every one may be missing). */
export interface IRecord {
  id?: string;
  model?: { ref?: string; name?: string; version?: string | null };
  backend?: string;
  status?: string;
  input?: Record<string, unknown>;
  seed?: number | null;
  metrics?: IMetrics;
  outputs?: IOutputDigest[];
  output_sha256?: string | null;
}

/** What the extension writes into a cell's metadata under `replicate`. */
export interface ICellCost {
  predict_time: number;
  cost_usd: number;
  predictions: number;
}
