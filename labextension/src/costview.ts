/**
 * The cost part of a prediction card: predict time, hardware, cost, cold
 * start, and a fold with how the cost was reached.
 *
 * Exact figures read `$0.0012`; a cost the kernel marked as an estimate reads
 * `≈ $0.0012 est.` with its assumptions in the fold; while the prediction
 * runs, the kernel's cost so far reads `≈ $0.0003 so far`; before it starts,
 * its forecast reads `≈ $0.05 expected`. Every string goes in as text.
 */
import { el, isObject } from './dom';
import { formatCost, formatSeconds } from './format';
import { IBilling, IPrediction, RUNNING_STATUSES } from './types';

function num(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

function billingOf(metrics: Record<string, unknown>): IBilling | null {
  return isObject(metrics.billing) ? (metrics.billing as IBilling) : null;
}

function assumptionsOf(billing: IBilling | null): string[] {
  return Array.isArray(billing?.assumptions) ? billing!.assumptions.filter(a => typeof a === 'string') : [];
}

/** `2 images × $0.05 + 40 output tokens × $3e-7` for a model billed per unit. */
export function describeUnits(billing: IBilling | null): string {
  if (!billing || billing.mode !== 'per-unit' || !isObject(billing.units)) {
    return '';
  }
  const prices = isObject(billing.prices) ? billing.prices : {};
  return Object.entries(billing.units)
    .map(([unit, qty]) => `${qty} ${unit.replace(/_/g, ' ')} \u00d7 $${prices[unit] ?? 0}`)
    .join(' + ');
}

/** The metrics row of a card, or null when there is nothing to show. */
export function renderMetrics(prediction: IPrediction): HTMLElement | null {
  const metrics = isObject(prediction.metrics) ? prediction.metrics : {};
  const status = typeof prediction.status === 'string' ? prediction.status : '';
  const live = RUNNING_STATUSES.includes(status);
  const running = live && isObject(prediction.running) ? prediction.running : null;
  const forecast = live && isObject(prediction.forecast) ? prediction.forecast : null;
  const billing = billingOf(metrics);
  const box = el('div', 'rj-metrics');
  const add = (cls: string, label: string, value: string, title?: string) => {
    const item = el('span', `rj-metric ${cls}`);
    item.appendChild(el('span', 'rj-metric-label', label));
    item.appendChild(el('span', 'rj-metric-value', value));
    if (title) {
      item.title = title;
    }
    box.appendChild(item);
  };
  const predictTime = num(metrics.predict_time);
  if (predictTime !== null && !running) {
    add('rj-metric-predict-time', 'predict time', formatSeconds(predictTime));
  } else if (running && num(running.predict_time) !== null) {
    add('rj-metric-predict-time rj-metric-running', 'time so far', formatSeconds(num(running.predict_time)!));
  }
  const hardware = typeof metrics.hardware === 'string' && metrics.hardware ? metrics.hardware : null;
  if (billing?.mode === 'per-unit') {
    add('rj-metric-hardware', 'billed', describeUnits(billing) || 'per unit');
  } else if (hardware) {
    add('rj-metric-hardware', 'hardware', billing?.sku_assumed ? `${hardware} (assumed)` : hardware);
  }
  const cost = num(metrics.cost_usd);
  if (running && num(running.cost_usd) !== null) {
    add('rj-metric-cost rj-metric-cost-running', 'cost so far', `\u2248 ${formatCost(num(running.cost_usd)!)}`);
  } else if (cost !== null && !live) {
    const estimate = metrics.cost_estimate === true;
    add('rj-metric-cost', 'cost', estimate ? `\u2248 ${formatCost(cost)} est.` : formatCost(cost),
      estimate ? assumptionsOf(billing).join('\n') : undefined);
  } else if (forecast && num(forecast.cost_usd) !== null) {
    add('rj-metric-cost rj-metric-forecast', 'expected', `\u2248 ${formatCost(num(forecast.cost_usd)!)}`,
      typeof forecast.basis === 'string' ? forecast.basis : undefined);
  }
  const setup = num(metrics.setup_time);
  if (setup !== null && setup > 0) {
    add('rj-metric-setup', 'cold start', formatSeconds(setup));
  }
  return box.childElementCount ? box : null;
}

/** The fold under the metrics: how the cost was reached, its source, what was assumed. */
export function renderCostDetails(prediction: IPrediction, open: boolean): HTMLElement | null {
  const metrics = isObject(prediction.metrics) ? prediction.metrics : {};
  const billing = billingOf(metrics);
  if (!billing || RUNNING_STATUSES.includes(String(prediction.status))) {
    return null;
  }
  const rows: [string, string][] = [
    ['billed', billing.mode === 'per-unit' ? 'per unit' : `per second of ${billing.sku ?? '?'}`]
  ];
  const prices = isObject(billing.prices) ? billing.prices : {};
  for (const [unit, qty] of Object.entries(isObject(billing.units) ? billing.units : {})) {
    rows.push([unit, `${qty} \u00d7 $${prices[unit] ?? 0}`]);
  }
  if (typeof billing.source === 'string' && billing.source) {
    rows.push(['price source', billing.date ? `${billing.source} (${billing.date})` : billing.source]);
  }
  for (const assumption of assumptionsOf(billing)) {
    rows.push(['assumed', assumption]);
  }
  // styled as the Inputs fold is (style/base.css has no rule of its own for this one yet)
  const details = el('details', 'rj-cost-details');
  details.open = open;
  details.style.marginTop = '6px';
  const summary = el('summary', undefined, metrics.cost_estimate === true ? 'Cost details (estimate)' : 'Cost details');
  Object.assign(summary.style, { cursor: 'pointer', color: 'var(--jp-ui-font-color2)', fontSize: 'var(--jp-ui-font-size0)' });
  details.appendChild(summary);
  const table = el('table');
  Object.assign(table.style, { borderCollapse: 'collapse', fontSize: 'var(--jp-ui-font-size0)' });
  for (const [key, value] of rows) {
    const row = el('tr');
    for (const [tag, text] of [['th', key], ['td', value]] as const) {
      const c = el(tag, undefined, text);
      Object.assign(c.style, { textAlign: 'left', verticalAlign: 'top', padding: '2px 8px 2px 0', whiteSpace: 'pre-wrap' });
      row.appendChild(c);
    }
    table.appendChild(row);
  }
  details.appendChild(table);
  return details;
}
