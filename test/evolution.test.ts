// Feature evolution: snapshot loading, the stability measure, and the tracks on real snapshots.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { convergedEpoch, correlation, featureEvolution, loadSnapshots } from '../src/analysis/evolution.js';
import { openShapes } from '../src/data/shapes.js';
import { writeSafetensorsModel } from '../src/model/safetensors.js';
import { createZooModel } from '../src/model/zoo.js';
import { writeOnnxModel } from '../src/engine/onnx-export.js';

test('correlation and the converged epoch', () => {
  assert.equal(correlation(Float32Array.of(1, 2, 3), Float32Array.of(2, 4, 6)), 1);
  assert.ok(Math.abs(correlation(Float32Array.of(1, 2, 3), Float32Array.of(3, 2, 1)) + 1) < 1e-12);
  assert.equal(convergedEpoch([1, 2, 5, 10], [0.5, 0.95, 0.97]), 2);
  assert.equal(convergedEpoch([1, 2, 5, 10], [0.95, 0.5, 0.97]), 5);
  assert.equal(convergedEpoch([1, 2, 5, 10], [0.95, 0.97, 0.2]), null);
  assert.equal(convergedEpoch([1, 2, 5], [0.91, 0.92]), 1);
});

test('snapshots load in epoch order from safetensors and ONNX; another architecture is refused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'convscope-evo-'));
  writeSafetensorsModel(join(dir, 'epoch-010.safetensors'), createZooModel('zfnet-small', { seed: 1 }));
  writeOnnxModel(join(dir, 'snap2.onnx'), createZooModel('zfnet-small', { seed: 2 }));
  writeSafetensorsModel(join(dir, 'final.safetensors'), createZooModel('zfnet-small', { seed: 3 }));
  writeFileSync(join(dir, 'final.json'), JSON.stringify({ epoch: 30 }));
  assert.deepEqual(loadSnapshots(dir).map((s) => s.epoch), [2, 10, 30]);
  writeSafetensorsModel(join(dir, 'other-40.safetensors'), createZooModel('alexnet-small'));
  assert.throws(() => loadSnapshots(dir), /has another architecture/);
  assert.throws(() => loadSnapshots(join(dir, 'missing')), /does not exist/);
});

test('identical snapshots are stable from the first epoch; different weights are not', async () => {
  const data = openShapes({ count: 24 }, 'train');
  const a = createZooModel('zfnet-small', { seed: 5, init: 'kaiming' });
  const b = createZooModel('zfnet-small', { seed: 6, init: 'kaiming' });
  const same = await featureEvolution([{ epoch: 1, path: 'a', model: a }, { epoch: 3, path: 'a', model: a }], data, { layers: ['relu1', 'relu3'], features: 3 });
  for (const l of same.layers) {
    assert.equal(l.convergedEpoch, 1, l.layer);
    for (const t of l.tracks) {
      assert.equal(t.views.length, 2);
      assert.ok(t.correlation[0] > 0.999999, `${l.layer} #${t.feature}: ${t.correlation[0]}`);
      assert.equal(t.top9Overlap[0], 1);
    }
  }
  const diff = await featureEvolution([{ epoch: 1, path: 'a', model: a }, { epoch: 3, path: 'b', model: b }], data, { layers: ['relu3'], features: 4 });
  assert.ok(diff.layers[0].medianCorrelation[0] < 0.9, `median ${diff.layers[0].medianCorrelation[0]}`);
  assert.equal(diff.layers[0].convergedEpoch, null);
});
