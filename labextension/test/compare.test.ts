/**
 * Unit tests of what the card's Rerun and Compare read from records (plain node: `jlpm test`).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compareOutputs, describePixels, facts, inputDifferences, pixelDifference, wordDiff } from '../src/comparison';
import { comparable, rerunId, rerunSource } from '../src/records';
import { IPrediction } from '../src/types';

function card(id: string, shas: string[], extra: Partial<IPrediction> = {}): IPrediction {
  return {
    id,
    model: 'local/shapes',
    status: 'succeeded',
    metrics: { predict_time: 0.5, cost_usd: 0.00005, hardware: 'cpu' },
    record: {
      id,
      backend: 'local',
      seed: 7,
      input: { prompt: 'a red circle', seed: 7 },
      metrics: { predict_time: 0.5, cost_usd: 0.00005, hardware: 'cpu' },
      outputs: shas.map((sha256, index) => ({ index, kind: 'file', sha256 })),
      output_sha256: shas.length ? `all-${shas.join('-')}` : null
    },
    ...extra
  };
}

test('the rerun line is only ever built from a safe id and a known backend', () => {
  assert.equal(rerunSource('0001d9d444de'), '%replicate rerun 0001d9d444de');
  assert.equal(rerunSource('gm3qorzdhgbfurvjtvhg6dckhu', 'workers'), '%replicate rerun gm3qorzdhgbfurvjtvhg6dckhu --on workers');
  assert.equal(rerunSource('x\nimport os'), null);
  assert.equal(rerunSource('x; rm -rf /'), null);
  assert.equal(rerunSource('-x'), null);
  assert.equal(rerunSource('abc', 'local --compare'), null);
  assert.equal(rerunSource('abc', 'elsewhere'), null);
});

test('only a finished card with a record can be rerun; only a succeeded one with hashes compared', () => {
  assert.equal(rerunId(card('a1', ['h'])), 'a1');
  assert.equal(rerunId({ id: 'a1', status: 'succeeded' }), null); // no record: nothing to rerun from
  assert.equal(rerunId(card('a1', ['h'], { status: 'processing' })), null);
  assert.equal(rerunId(card('bad id', ['h'])), null);
  assert.equal(rerunId(card('f1', [], { status: 'failed' })), 'f1');
  assert.equal(comparable(card('f1', [], { status: 'failed' })), false);
  assert.equal(comparable(card('a1', ['h'])), true);
});

test('identical when every output hash matches, in rerun.py words', () => {
  const same = compareOutputs(card('a', ['h1']), card('b', ['h1']));
  assert.equal(same.identical, true);
  assert.equal(same.verdict, 'identical: every output hash matches (1 output)');
  const two = compareOutputs(card('a', ['h1', 'h2']), card('b', ['h1', 'h3']));
  assert.equal(two.identical, false);
  assert.equal(two.verdict, 'different: 1 of 2 outputs differ');
  assert.deepEqual(two.rows.map(r => r.same), [true, false]);
  const failed = compareOutputs(card('a', ['h1']), card('b', [], { status: 'failed', error: 'boom' }));
  assert.equal(failed.identical, false);
  assert.equal(failed.verdict, 'b failed: boom');
});

test('facts list both sides and inputs that differ are named', () => {
  const rows = facts(card('a', ['h1']), card('b', ['h2'], { metrics: { predict_time: 12.5, cost_usd: 0.05 } }));
  const byName = Object.fromEntries(rows.map(([k, x, y]) => [k, [x, y]]));
  assert.deepEqual(byName['seed'], ['7', '7']);
  assert.deepEqual(byName['predict time'], ['0.5 s', '0.5 s']); // the record's metrics, not the payload's
  assert.equal(byName['cost'][0], '$0.00005');
  const b = card('b', ['h2']);
  b.record!.input = { prompt: 'a red circle', seed: 8 };
  assert.deepEqual(inputDifferences(card('a', ['h1']), b), [['seed', '7', '8']]);
});

test('pixel difference: mean and max per RGB channel, share of changed pixels, alpha ignored', () => {
  const a = new Uint8ClampedArray([10, 10, 10, 255, 0, 0, 0, 255]);
  const b = new Uint8ClampedArray([10, 10, 10, 0, 30, 0, 0, 255]);
  const px = pixelDifference(a, b);
  assert.deepEqual(px, { mean_abs: 5, max: 30, changed_pixels: 0.5 });
  assert.equal(describePixels(px), 'pixels mean_abs 5, max 30, changed_pixels 0.5');
  assert.deepEqual(pixelDifference(a, a), { mean_abs: 0, max: 0, changed_pixels: 0 });
});

test('word diff: runs rejoin to both texts, similarity as difflib ratio', () => {
  const { similarity, runs } = wordDiff('the quick brown fox', 'the slow brown fox jumps');
  assert.deepEqual(runs, [
    ['equal', 'the', 'the'],
    ['replace', 'quick', 'slow'],
    ['equal', 'brown fox', 'brown fox'],
    ['insert', '', 'jumps']
  ]);
  assert.equal(similarity, Number(((2 * 3) / 9).toFixed(4)));
  const old = runs.map(r => r[1]).filter(Boolean).join(' ');
  const added = runs.map(r => r[2]).filter(Boolean).join(' ');
  assert.equal(old, 'the quick brown fox');
  assert.equal(added, 'the slow brown fox jumps');
  assert.equal(wordDiff('same text', 'same text').similarity, 1);
});
