// The `gradient` rule against finite differences, on a tiny model with every layer type the fixtures do not cover
// (even-size LRN, average pools with and without padding counted, adaptive pooling, batch norm, softmax).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Engine } from '../src/engine/engine.js';
import type { Layer, Model } from '../src/model/layers.js';
import { initWeights } from '../src/model/zoo.js';
import { tensor, type Tensor } from '../src/tensor.js';
import { Rng } from '../src/util/random.js';

function tinyModel(): Model {
  const layers: Layer[] = [
    { type: 'conv2d', name: 'conv1', inChannels: 2, outChannels: 6, kernel: [3, 3], stride: [2, 2], padding: [1, 1], bias: true },
    { type: 'lrn', name: 'norm_even', size: 4, alpha: 0.5, beta: 0.75, k: 1 },
    { type: 'maxpool2d', name: 'pool1', kernel: [3, 3], stride: [2, 2], padding: [1, 1], ceilMode: true },
    { type: 'relu', name: 'relu1' },
    { type: 'lrn', name: 'norm_odd', size: 3, alpha: 0.3, beta: 0.6, k: 1.5 },
    { type: 'avgpool2d', name: 'avg_excl', kernel: [2, 2], stride: [1, 1], padding: [1, 1], ceilMode: false, countIncludePad: false },
    { type: 'batchnorm2d', name: 'bn', channels: 6, eps: 1e-5 },
    { type: 'conv2d', name: 'conv2', inChannels: 6, outChannels: 5, kernel: [3, 2], stride: [1, 2], padding: [1, 0], bias: false },
    { type: 'avgpool2d', name: 'avg_incl', kernel: [3, 3], stride: [2, 2], padding: [1, 1], ceilMode: true, countIncludePad: true },
    { type: 'adaptiveavgpool2d', name: 'adapt', output: [2, 3] },
    { type: 'flatten', name: 'flatten' },
    { type: 'linear', name: 'fc', inFeatures: 30, outFeatures: 7, bias: true },
    { type: 'dropout', name: 'drop', p: 0.5 },
    { type: 'softmax', name: 'prob' },
  ];
  const weights = initWeights(layers, 'kaiming', 7);
  const rng = new Rng(11);
  for (const key of ['bn.weight', 'bn.bias', 'bn.running_mean']) weights.get(key)!.data.forEach((_, i, a) => (a[i] = rng.normal()));
  weights.get('bn.running_var')!.data.forEach((_, i, a) => (a[i] = 0.5 + rng.next()));
  // Larger logits make the softmax output move enough for a float32 finite difference to resolve its slope.
  weights.get('fc.weight')!.data.forEach((_, i, a) => (a[i] *= 8));
  return { name: 'tiny', input: [2, 13, 11], layers, weights, preprocess: { mean: [0, 0], std: [1, 1] } };
}

function randomTensor(shape: number[], rng: Rng): Tensor {
  const t = tensor(shape);
  for (let i = 0; i < t.data.length; i++) t.data[i] = rng.normal();
  return t;
}

test('gradient rule equals central finite differences of <seed, layer output> at every layer', async () => {
  const model = tinyModel();
  const engine = new Engine(model, { threads: 1 });
  const rng = new Rng(3);
  const input = randomTensor([1, ...model.input], rng);
  try {
    for (const layer of ['norm_even', 'pool1', 'avg_excl', 'bn', 'conv2', 'avg_incl', 'adapt', 'fc', 'prob']) {
      const info = engine.info(layer);
      const seed = randomTensor([1, ...info.outShape], rng);
      const { projection } = await engine.backward(input, { layer, mask: seed, value: 'one' }, { rule: 'gradient', lrn: 'gradient' });
      // Directional derivative along a random direction v: <grad, v> vs (f(x + h v) - f(x - h v)) / 2h, in float64 sums.
      const v = randomTensor(input.shape, rng);
      const h = 1e-2;
      const objective = async (sign: number) => {
        const x = tensor(input.shape, input.data.map((a, i) => a + sign * h * v.data[i]));
        const out = (await engine.forward(x, [layer])).activations.get(layer)!;
        return out.data.reduce((acc, o, i) => acc + o * seed.data[i], 0);
      };
      const numeric = ((await objective(1)) - (await objective(-1))) / (2 * h);
      const analytic = projection.data.reduce((acc, g, i) => acc + g * v.data[i], 0);
      const rel = Math.abs(numeric - analytic) / Math.max(Math.abs(numeric), Math.abs(analytic));
      assert.ok(rel < 2e-3, `${layer}: finite difference ${numeric} vs backward ${analytic} (relative ${rel.toExponential(2)})`);
    }
  } finally {
    await engine.dispose();
  }
});
