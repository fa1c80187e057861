// Architecture-selection measures: spectral energy share against a direct 2-D DFT, filter images, dead maps.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { highFrequencyShare, layerActivity } from '../src/analysis/filters.js';
import { filterImages } from '../src/render/architecture.js';
import { imageToInput } from '../src/data/image.js';
import { openShapes } from '../src/data/shapes.js';
import { Engine } from '../src/engine/engine.js';
import { createZooModel } from '../src/model/zoo.js';
import type { Tensor } from '../src/tensor.js';
import { Rng } from '../src/util/random.js';

/** The textbook O(n^2 k^2) DFT of each kernel zero-padded to n x n. */
function bruteShare(w: Tensor, n: number): number[] {
  const [out, inC, kh, kw] = w.shape;
  return Array.from({ length: out }, (_, f) => {
    let total = 0;
    let upper = 0;
    for (let c = 0; c < inC; c++) {
      for (let u = 0; u < n; u++) {
        for (let v = 0; v < n; v++) {
          let re = 0;
          let im = 0;
          for (let y = 0; y < kh; y++) for (let x = 0; x < kw; x++) {
            const a = w.data[((f * inC + c) * kh + y) * kw + x];
            const t = (-2 * Math.PI * (u * y + v * x)) / n;
            re += a * Math.cos(t);
            im += a * Math.sin(t);
          }
          const e = re * re + im * im;
          total += e;
          const fu = Math.min(u, n - u) / n;
          const fv = Math.min(v, n - v) / n;
          if (fu > 0.25 || fv > 0.25) upper += e;
        }
      }
    }
    return upper / total;
  });
}

test('high-frequency share equals a direct DFT; checkerboards are high, smooth blobs low', () => {
  const rng = new Rng(1);
  const k = 5;
  const random: Tensor = { shape: [3, 2, k, k], data: Float32Array.from({ length: 3 * 2 * k * k }, () => rng.normal()) };
  const fast = highFrequencyShare(random, 16);
  const slow = bruteShare(random, 16);
  fast.forEach((v, i) => assert.ok(Math.abs(v - slow[i]) < 1e-9, `filter ${i}: ${v} vs ${slow[i]}`));
  const checker: Tensor = { shape: [1, 1, k, k], data: Float32Array.from({ length: k * k }, (_, i) => ((Math.floor(i / k) + (i % k)) % 2 ? 1 : -1)) };
  const blob: Tensor = { shape: [1, 1, k, k], data: Float32Array.from({ length: k * k }, (_, i) => Math.exp(-(((Math.floor(i / k) - 2) ** 2 + ((i % k) - 2) ** 2) / 2))) };
  assert.ok(highFrequencyShare(checker)[0] > 0.8, `checkerboard ${highFrequencyShare(checker)[0]}`);
  assert.ok(highFrequencyShare(blob)[0] < 0.1, `blob ${highFrequencyShare(blob)[0]}`);
});

test('filter images: one per output channel, stretched to 0..255, colour for RGB input', () => {
  const model = createZooModel('zfnet-small', { seed: 2 });
  const images = filterImages(model, 'conv1');
  assert.equal(images.length, 32);
  for (const img of images) {
    assert.deepEqual([img.width, img.height, img.channels], [7, 7, 3]);
    assert.equal(Math.min(...img.data), 0);
    assert.equal(Math.max(...img.data), 255);
  }
  const grey = filterImages(model, 'conv2');
  assert.equal(grey[0].channels, 1);
  assert.throws(() => filterImages(model, 'fc6'), /no conv filters/);
});

test('a feature map whose bias keeps it negative is reported dead; activity counts match a direct pass', async () => {
  const model = createZooModel('zfnet-small', { seed: 4, init: 'kaiming' });
  model.weights.get('conv1.bias')!.data[5] = -1e6;
  const engine = new Engine(model);
  const data = openShapes({ count: 24 }, 'val');
  try {
    const { activity, images } = await layerActivity(engine, data, ['relu1', 'relu2'], { batchSize: 10 });
    assert.equal(images, 24);
    assert.ok(activity[0].dead.includes(5), `dead: ${activity[0].dead}`);
    // Brute force for relu2: share of images where feature 0 fires.
    let fires = 0;
    let zeros = 0;
    let units = 0;
    for (let i = 0; i < 24; i++) {
      const { image } = await data.item(i);
      const a = (await engine.forward(imageToInput(image, model.preprocess), ['relu2'])).activations.get('relu2')!;
      const per = a.data.length / a.shape[1];
      if (a.data.subarray(0, per).some((v) => v > 0)) fires++;
      zeros += a.data.filter((v) => v <= 0).length;
      units += a.data.length;
    }
    assert.equal(activity[1].activeShare[0], fires / 24);
    assert.equal(activity[1].sparsity, zeros / units);
  } finally {
    await engine.dispose();
  }
});
