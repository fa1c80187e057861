// The train-step graph against PyTorch (loss and every parameter gradient) and against finite differences.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Engine } from '../src/engine/engine.js';
import type { Layer, Model } from '../src/model/layers.js';
import { readSafetensorsModel } from '../src/model/safetensors.js';
import { initWeights } from '../src/model/zoo.js';
import { tensor, type Tensor } from '../src/tensor.js';
import { Rng } from '../src/util/random.js';
import { assertClose, fixture, fixtureNpy } from './helpers.js';

test('loss, every weight gradient and the input gradient equal PyTorch (train_batch fixtures, eval mode)', async () => {
  const model = readSafetensorsModel(fixture('weights.safetensors'));
  const engine = new Engine(model);
  try {
    const input = fixtureNpy('train_batch_input.npy');
    const labels = Int32Array.from(fixtureNpy('train_batch_labels.npy').data);
    const { loss, grads, inputGradient } = await engine.trainStep(input, labels, model.weights, { inputGradient: true });
    assertClose(inputGradient!, fixtureNpy('train_batch_grad_input.npy'), 1e-4, 'input');
    const refLoss = fixtureNpy('train_batch_loss.npy').data[0];
    assert.ok(Math.abs(loss - refLoss) <= 1e-4 * Math.abs(refLoss), `loss ${loss} vs ${refLoss}`);
    assert.equal(grads.size, model.weights.size);
    for (const [key, g] of grads) {
      const ref = fixtureNpy(`train_batch_grad_${key}.npy`);
      assertClose({ shape: ref.shape, data: g }, ref, 1e-4, key);
    }
  } finally {
    await engine.dispose();
  }
});

function tinyModel(): Model {
  const layers: Layer[] = [
    { type: 'conv2d', name: 'conv1', inChannels: 1, outChannels: 4, kernel: [3, 3], stride: [2, 2], padding: [1, 1], bias: true },
    { type: 'relu', name: 'relu1' },
    { type: 'lrn', name: 'norm1', size: 3, alpha: 0.2, beta: 0.75, k: 1 },
    { type: 'maxpool2d', name: 'pool1', kernel: [2, 2], stride: [2, 2], padding: [0, 0], ceilMode: false },
    { type: 'conv2d', name: 'conv2', inChannels: 4, outChannels: 3, kernel: [2, 3], stride: [2, 1], padding: [0, 1], bias: false },
    { type: 'flatten', name: 'flatten' },
    { type: 'linear', name: 'fc', inFeatures: 6, outFeatures: 5, bias: true },
    { type: 'dropout', name: 'drop', p: 0.5 },
  ];
  return { name: 'tiny', input: [1, 9, 8], layers, weights: initWeights(layers, 'kaiming', 5), preprocess: { mean: [0], std: [1] } };
}

test('weight gradients and the input gradient equal finite differences of the loss, with a dropout mask', async () => {
  const model = tinyModel();
  const engine = new Engine(model, { threads: 1 });
  const rng = new Rng(9);
  const input = tensor([3, 1, 9, 8]);
  input.data.forEach((_, i, a) => (a[i] = rng.normal()));
  const labels = Int32Array.of(1, 4, 0);
  const mask: Tensor = tensor([3, 5]);
  mask.data.forEach((_, i, a) => (a[i] = rng.next() < 0.5 ? 0 : 2));
  const masks = new Map([['drop', mask]]);
  /** Compares the directional derivative along a random direction with the central difference of `lossAlong`. */
  const check = async (name: string, gradient: Float32Array, lossAlong: (v: Float32Array, step: number) => Promise<number>) => {
    const v = Float32Array.from(gradient, () => rng.normal());
    const h = 1e-3;
    const numeric = ((await lossAlong(v, h)) - (await lossAlong(v, -h))) / (2 * h);
    const analytic = gradient.reduce((a, g, i) => a + g * v[i], 0);
    const rel = Math.abs(numeric - analytic) / Math.max(Math.abs(numeric), Math.abs(analytic));
    assert.ok(rel < 5e-3, `${name}: finite difference ${numeric} vs gradient ${analytic} (relative ${rel.toExponential(2)})`);
  };
  try {
    const { grads, inputGradient } = await engine.trainStep(input, labels, model.weights, { dropoutMasks: masks, inputGradient: true });
    for (const [key, w] of model.weights) {
      await check(key, grads.get(key)!, async (v, h) => {
        const shifted = new Map(model.weights);
        shifted.set(key, { shape: w.shape, data: w.data.map((x, i) => x + h * v[i]) });
        return (await engine.trainStep(input, labels, shifted, { dropoutMasks: masks })).loss;
      });
    }
    assert.deepEqual(inputGradient!.shape, input.shape);
    await check('input', inputGradient!.data, async (v, h) => {
      const moved = { shape: input.shape, data: input.data.map((x, i) => x + h * v[i]) };
      return (await engine.trainStep(moved, labels, model.weights, { dropoutMasks: masks })).loss;
    });
  } finally {
    await engine.dispose();
  }
});
