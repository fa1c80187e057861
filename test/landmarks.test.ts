// Default layers come from the model's own graph: the paper's choices on the zoo's chains, their natural
// counterparts on a residual network (../shared/fixtures/graph/resnet_small, a stock torch export).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { Landmarks } from '../src/model/landmarks.js';
import { loadModel } from '../src/model/load.js';
import { inferShapes } from '../src/model/shapes.js';
import { createZooModel } from '../src/model/zoo.js';
import { ROOT } from './helpers.js';

test('on ZFNet the defaults are the paper layers, found without their names', () => {
  const model = createZooModel('zfnet');
  // Renaming every layer must not change which layers are picked.
  const renamed = { ...model, layers: model.layers.map((l) => ({ ...l, name: `x_${l.name}` })) };
  for (const [m, prefix] of [[model, ''], [renamed, 'x_']] as const) {
    const marks = new Landmarks(m);
    const p = (names: string[]) => names.map((n) => `${prefix}${n}`);
    assert.deepEqual(marks.featureMaps(), p(['relu1', 'relu2', 'relu3', 'relu4', 'relu5']));
    assert.equal(marks.firstConv(), p(['relu1'])[0]);
    assert.equal(marks.lastFeatureMap(), p(['relu5'])[0]);
    // fc8 reads drop7: dropout and flatten are looked past.
    assert.equal(marks.classifierInput(), p(['relu7'])[0]);
    assert.deepEqual(marks.levels(), p(['relu1', 'relu2', 'relu3', 'relu4', 'relu5', 'relu6', 'relu7']));
    assert.deepEqual(marks.output(), { name: p(['fc8'])[0], isSoftmax: false });
  }
});

test('on a residual network: stage outputs, the deepest rectified map and the pooled features', () => {
  const model = loadModel(join(ROOT, '..', 'shared', 'fixtures', 'graph', 'resnet_small', 'model.onnx'));
  const marks = new Landmarks(model);
  const infos = inferShapes(model);
  const info = (name: string) => infos.find((i) => i.layer.name === name)!;
  // The deepest map is the ReLU after the last residual add, at the smallest resolution before pooling.
  const deepest = info(marks.lastFeatureMap());
  assert.equal(deepest.layer.type, 'relu');
  assert.equal(infos[deepest.inputs[0]].layer.type, 'add');
  assert.deepEqual(deepest.outShape, [64, 4, 4]);
  const pooled = info(marks.classifierInput());
  assert.equal(pooled.layer.type, 'adaptiveavgpool2d');
  // One level per resolution (stem 32, layer1 16, layer2 8, layer3 4), each the last rectified map there, then the pool.
  const levels = marks.levels().map(info);
  assert.deepEqual(levels.map((i) => i.outShape), [[16, 32, 32], [16, 16, 16], [32, 8, 8], [64, 4, 4], [64, 1, 1]]);
  for (const l of levels.slice(1, 4)) assert.equal(infos[l.inputs[0]].layer.type, 'add', `${l.layer.name} ends a residual block`);
  // The first conv feeds a ReLU only: that ReLU is the paper's layer 1.
  assert.equal(info(marks.firstConv()).layer.type, 'relu');
});
