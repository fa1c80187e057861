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

test('top-k scans five feature maps by default, evenly spread; a model without ReLUs offers its ReLU6 maps', () => {
  const zf = new Landmarks(createZooModel('zfnet'));
  assert.deepEqual(zf.spreadFeatureMaps(), zf.featureMaps(), "ZFNet's five are the paper's layers 1-5");
  const resnet = new Landmarks(loadModel(join(ROOT, '..', 'shared', 'fixtures', 'graph', 'resnet_small', 'model.onnx')));
  const all = resnet.featureMaps();
  const spread = resnet.spreadFeatureMaps();
  assert.ok(all.length > 5, `resnet_small has ${all.length} rectified maps`);
  assert.equal(spread.length, 5);
  assert.deepEqual([spread[0], spread.at(-1)], [all[0], all.at(-1)], 'the first and the deepest map');
  const at = spread.map((n) => all.indexOf(n));
  assert.deepEqual(at, [...at].sort((a, b) => a - b), 'in model order');
  const gaps = at.slice(1).map((v, i) => v - at[i]);
  assert.ok(Math.max(...gaps) - Math.min(...gaps) <= 1, `evenly spread: gaps ${gaps}`);
  assert.deepEqual(resnet.spreadFeatureMaps(100), all);

  // conv -> ReLU6 -> conv -> ReLU6 -> conv (a linear bottleneck) -> pool -> classifier, as MobileNetV2 exports.
  const conv = (name: string, cin: number, cout: number) => ({ type: 'conv2d' as const, name, inChannels: cin, outChannels: cout, kernel: [3, 3] as [number, number], stride: [1, 1] as [number, number], padding: [1, 1] as [number, number], bias: true });
  const mobile = new Landmarks({
    name: 'relu6-net',
    input: [3, 8, 8],
    layers: [conv('c1', 3, 4), { type: 'clip', name: 'a1', min: 0, max: 6 }, conv('c2', 4, 4), { type: 'clip', name: 'a2', min: 0, max: 6 }, conv('c3', 4, 4),
      { type: 'adaptiveavgpool2d', name: 'pool', output: [1, 1] }, { type: 'flatten', name: 'flat' }, { type: 'linear', name: 'fc', inFeatures: 4, outFeatures: 2, bias: true }],
  });
  assert.deepEqual(mobile.featureMaps(), ['a1', 'a2']);
  assert.equal(mobile.firstConv(), 'a1', "layer 1 is the first conv's ReLU6");
  assert.equal(mobile.lastFeatureMap(), 'a2');
});
