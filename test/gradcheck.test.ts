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

/**
 * The graph op kinds in the forms no fixture covers: a grouped conv with two channels a group, a dilated depthwise
 * conv, an asymmetric zero pad, tanh, a squeeze-excite gate (sigmoid, broadcast mul) and a residual add. All smooth:
 * finite differences cannot resolve a kink a step crosses, so the piecewise-linear kinds (leaky ReLU, hardswish,
 * hardsigmoid, ReLU6) are checked against PyTorch in the graph fixtures (onnx-graph, train-graph tests) instead.
 */
function mobileModel(): Model {
  const layers: Layer[] = [
    { type: 'conv2d', name: 'conv', inChannels: 2, outChannels: 4, kernel: [3, 3], stride: [1, 1], padding: [1, 1], bias: true },
    { type: 'conv2d', name: 'grouped', inChannels: 4, outChannels: 6, kernel: [3, 3], stride: [2, 2], padding: [1, 1], bias: true, groups: 2 },
    { type: 'tanh', name: 'tanh' },
    { type: 'conv2d', name: 'dilated', inChannels: 6, outChannels: 6, kernel: [3, 3], stride: [1, 1], padding: [2, 2], bias: false, groups: 6, dilation: [2, 2] },
    { type: 'adaptiveavgpool2d', name: 'squeeze', output: [1, 1] },
    { type: 'sigmoid', name: 'gate' },
    { type: 'mul', name: 'excite', inputs: ['dilated', 'gate'] },
    { type: 'add', name: 'residual', inputs: ['excite', 'tanh'] },
    { type: 'pad', name: 'pad', pads: [0, 1, 1, 0] },
    { type: 'tanh', name: 'tanh2' },
    { type: 'flatten', name: 'flatten' },
    { type: 'linear', name: 'fc', inFeatures: 6 * 8 * 7, outFeatures: 5, bias: true },
  ];
  return { name: 'mobile', input: [2, 13, 11], layers, weights: initWeights(layers, 'kaiming', 5), preprocess: { mean: [0, 0], std: [1, 1] } };
}

/** d/dt f(t) at 0: central differences at steps h and h/2, extrapolated to cancel their h² error. */
async function richardson(f: (t: number) => Promise<number>, h = 1e-2): Promise<number> {
  const central = async (step: number) => ((await f(step)) - (await f(-step))) / (2 * step);
  const [coarse, fine] = [await central(h), await central(h / 2)];
  return (4 * fine - coarse) / 3;
}

/** The gradient rule at each named layer against central finite differences along a random direction. */
async function checkLayers(model: Model, layers: string[], seedRng: number): Promise<void> {
  const engine = new Engine(model, { threads: 1 });
  const rng = new Rng(seedRng);
  const input = randomTensor([1, ...model.input], rng);
  try {
    for (const layer of layers) {
      const info = engine.info(layer);
      const seed = randomTensor([1, ...info.outShape], rng);
      const { projection } = await engine.backward(input, { layer, mask: seed, value: 'one' }, { rule: 'gradient', lrn: 'gradient' });
      // Directional derivative along a random direction v: <grad, v> vs central differences of f(x + t v), in float64
      // sums, Richardson-extrapolated so that the curvature of tanh or sigmoid does not show as an error.
      const v = randomTensor(input.shape, rng);
      const numeric = await richardson(async (t) => {
        const x = tensor(input.shape, input.data.map((a, i) => a + t * v.data[i]));
        const out = (await engine.forward(x, [layer])).activations.get(layer)!;
        return out.data.reduce((acc, o, i) => acc + o * seed.data[i], 0);
      });
      const analytic = projection.data.reduce((acc, g, i) => acc + g * v.data[i], 0);
      const rel = Math.abs(numeric - analytic) / Math.max(Math.abs(numeric), Math.abs(analytic));
      assert.ok(rel < 2e-3, `${layer}: finite difference ${numeric} vs backward ${analytic} (relative ${rel.toExponential(2)})`);
    }
  } finally {
    await engine.dispose();
  }
}

test('gradient rule equals central finite differences of <seed, layer output> at every layer', () =>
  checkLayers(tinyModel(), ['norm_even', 'pool1', 'avg_excl', 'bn', 'conv2', 'avg_incl', 'adapt', 'fc', 'prob'], 3));

test('the graph op kinds: gradient rule equals central finite differences at every layer', () =>
  checkLayers(mobileModel(), ['grouped', 'tanh', 'dilated', 'gate', 'excite', 'residual', 'pad', 'tanh2', 'fc'], 4));

test('the train step\'s weight gradients of grouped and dilated convs equal finite differences of the loss', async () => {
  const model = mobileModel();
  const engine = new Engine(model, { threads: 1 });
  const rng = new Rng(9);
  const input = randomTensor([2, ...model.input], rng);
  const labels = Int32Array.from([1, 3]);
  try {
    const { grads } = await engine.trainStep(input, labels, model.weights);
    for (const key of ['grouped.weight', 'grouped.bias', 'dilated.weight']) {
      const w = model.weights.get(key)!;
      const v = randomTensor(w.shape, rng);
      const numeric = await richardson(async (t) => {
        const weights = new Map(model.weights);
        weights.set(key, tensor(w.shape, w.data.map((a, i) => a + t * v.data[i])));
        return (await engine.trainStep(input, labels, weights)).loss;
      });
      const analytic = grads.get(key)!.reduce((acc, g, i) => acc + g * v.data[i], 0);
      const rel = Math.abs(numeric - analytic) / Math.max(Math.abs(numeric), Math.abs(analytic));
      assert.ok(rel < 2e-3, `${key}: finite difference ${numeric} vs train step ${analytic} (relative ${rel.toExponential(2)})`);
    }
  } finally {
    await engine.dispose();
  }
});
