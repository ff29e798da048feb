/**
 * Unit tests of the cost summing (plain node: `jlpm test`).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  describeCost,
  parseCellCost,
  sameCost,
  summarizeNotebook,
  summarizeOutputs
} from '../src/cost';
import { formatCost, formatSeconds } from '../src/format';
import { MIME_TYPE, SWEEP_MIME_TYPE } from '../src/types';

function bundle(p: Record<string, unknown>): { data: Record<string, unknown> } {
  return { data: { [MIME_TYPE]: p, 'text/plain': 'prediction' } };
}

function done(id: string, predictTime: number, cost: number, hardware = 'gpu-t4', status = 'succeeded') {
  return bundle({ id, status, metrics: { predict_time: predictTime, cost_usd: cost, hardware } });
}

test('sums distinct final predictions of a cell', () => {
  const s = summarizeOutputs([
    done('a', 1.5, 0.0003375),
    { data: { 'text/plain': 'hello' } },
    done('b', 1.7, 0.0003825, 'gpu-t4', 'failed')
  ]);
  assert.equal(s.predictions, 2);
  assert.equal(s.running, 0);
  assert.equal(s.predict_time, 3.2);
  assert.equal(s.cost_usd, 0.00072);
  assert.deepEqual(s.hardware, ['gpu-t4']);
});

test('the same prediction shown twice counts once', () => {
  const s = summarizeOutputs([done('a', 2, 0.0045), done('a', 2, 0.0045)]);
  assert.equal(s.predictions, 1);
  assert.equal(s.cost_usd, 0.0045);
});

test('running predictions count but are not billed; a final state wins', () => {
  const running = bundle({ id: 'r', status: 'processing', metrics: { predict_time: 9, cost_usd: 9 } });
  const s = summarizeOutputs([running, done('a', 1, 0.001)]);
  assert.equal(s.predictions, 2);
  assert.equal(s.running, 1);
  assert.equal(s.predict_time, 1);
  assert.equal(s.cost_usd, 0.001);
  // Same id, once final and once still running (a duplicated display not updated): final wins.
  const mixed = summarizeOutputs([done('x', 1, 0.002), bundle({ id: 'x', status: 'starting' })]);
  assert.equal(mixed.running, 0);
  assert.equal(mixed.cost_usd, 0.002);
});

test('canceled predictions are billed for the time they ran', () => {
  const s = summarizeOutputs([done('c', 0.5, 0.0005, 'cpu', 'canceled')]);
  assert.equal(s.cost_usd, 0.0005);
});

test('malformed data is ignored, JSON given as a string is read', () => {
  const s = summarizeOutputs([
    { data: { [MIME_TYPE]: 'not json' } },
    { data: { [MIME_TYPE]: JSON.stringify({ id: 's', status: 'succeeded', metrics: { predict_time: 2, cost_usd: 0.0002 } }) } },
    { data: { [MIME_TYPE]: { id: 'n', status: 'succeeded', metrics: { predict_time: -1, cost_usd: 'x' } } } },
    { data: null },
    {}
  ]);
  assert.equal(s.predictions, 2);
  assert.equal(s.predict_time, 2);
  assert.equal(s.cost_usd, 0.0002);
});

test('float noise is rounded away', () => {
  const s = summarizeOutputs([done('a', 0.1, 0.1), done('b', 0.2, 0.2)]);
  assert.equal(s.predict_time, 0.3);
  assert.equal(s.cost_usd, 0.3);
});

test('notebook total: distinct ids across cells, saved cost for cells without outputs', () => {
  const total = summarizeNotebook([
    { outputs: [done('a', 1.2, 0.0027)] },
    { outputs: [done('b', 2.0, 0.0045), done('a', 1.2, 0.0027)] },
    { outputs: [], metadata: { predict_time: 3, cost_usd: 0.001, predictions: 2 } },
    { outputs: [], metadata: { predict_time: 'x' } },
    { outputs: [bundle({ id: 'r', status: 'starting' })] }
  ]);
  assert.equal(total.predictions, 5);
  assert.equal(total.running, 1);
  assert.equal(total.predict_time, 6.2);
  assert.equal(total.cost_usd, 0.0082);
});

test('metadata parsing and comparison', () => {
  assert.deepEqual(parseCellCost({ predict_time: 1, cost_usd: 0.1, predictions: 1 }), {
    predict_time: 1,
    cost_usd: 0.1,
    predictions: 1
  });
  assert.equal(parseCellCost({ predict_time: 1, cost_usd: 0.1 }), null);
  assert.equal(parseCellCost([1, 2]), null);
  assert.equal(parseCellCost(undefined), null);
  assert.ok(sameCost({ predict_time: 1, cost_usd: 0.1, predictions: 1 }, { predict_time: 1, cost_usd: 0.1, predictions: 1 }));
  assert.ok(!sameCost({ predict_time: 1, cost_usd: 0.1, predictions: 1 }, null));
});

test('the cell line reads like the status bar and the card', () => {
  assert.equal(
    describeCost({ predict_time: 3.2, cost_usd: 0.0045, predictions: 2, hardware: ['gpu-t4'] }, 4),
    'GPU 3.2 s \u00b7 $0.0045 \u00b7 2 predictions'
  );
  assert.equal(
    describeCost({ predict_time: 0.61, cost_usd: 0.000061, predictions: 1, running: 1, hardware: ['cpu'] }, 4),
    'CPU 0.61 s \u00b7 $0.000061 \u00b7 1 prediction \u00b7 1 running'
  );
  // Same strings as the kernel side's display.usd().
  assert.equal(formatCost(0.0003375), '$0.0003375');
  assert.equal(formatCost(0.0450001), '$0.0450');
  assert.equal(formatCost(1.23456, 2), '$1.23');
  assert.equal(formatCost(0.000000001), '$0.00');
  assert.equal(formatCost(0), '$0.00');
  assert.equal(formatSeconds(125), '2 min 5 s');
});

test('a sweep output counts each of its predictions', () => {
  const sweep = {
    data: {
      [SWEEP_MIME_TYPE]: {
        predictions: [
          { label: 'seed=1', prediction: { id: 's1', status: 'succeeded', metrics: { predict_time: 1, cost_usd: 0.001 } } },
          { label: 'seed=2', prediction: { id: 's2', status: 'processing' } },
          { label: 'bad', prediction: 'x' }
        ]
      }
    }
  };
  const s = summarizeOutputs([sweep, done('s1', 1, 0.001)]);
  assert.equal(s.predictions, 2);
  assert.equal(s.running, 1);
  assert.equal(s.cost_usd, 0.001);
});
