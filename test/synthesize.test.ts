// Activation maximisation: the objective rises on average and ends far above the best the data gives; the FFT under
// the Fourier parameterisation equals the direct sum.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { synthesize, type Parameterization } from '../src/analysis/synthesize.js';
import { batches } from '../src/data/batches.js';
import { openShapes } from '../src/data/shapes.js';
import { Engine } from '../src/engine/engine.js';
import { createZooModel } from '../src/model/zoo.js';
import { Fft } from '../src/util/fft.js';

describe('FFT', () => {
  test('equals the direct DFT for lengths with radices 2, 3, 5, 7 and a prime, both signs', () => {
    for (const n of [1, 2, 12, 64, 224, 227, 30]) {
      const re = Float64Array.from({ length: n }, (_, k) => Math.sin(k * 1.3) + 0.1 * k);
      const im = Float64Array.from({ length: n }, (_, k) => Math.cos(k * 0.7));
      for (const sign of [1, -1] as const) {
        const [r, i] = [re.slice(), im.slice()];
        new Fft(n).transform(r, i, sign);
        for (let k = 0; k < n; k++) {
          let a = 0;
          let b = 0;
          for (let p = 0; p < n; p++) {
            const t = (sign * 2 * Math.PI * k * p) / n;
            a += re[p] * Math.cos(t) - im[p] * Math.sin(t);
            b += re[p] * Math.sin(t) + im[p] * Math.cos(t);
          }
          assert.ok(Math.abs(r[k] - a) < 1e-9 * n && Math.abs(i[k] - b) < 1e-9 * n, `n ${n} k ${k}`);
        }
      }
    }
  });
});

describe('activation maximisation', () => {
  const model = createZooModel('zfnet-small', { seed: 0 });
  const engine = new Engine(model);
  after(() => engine.dispose());
  const features = [0, 1, 2, 3];

  /** Each feature's best map mean over 200 shapes images: the top-1 of its top-9. */
  async function datasetBest(layer: string): Promise<number[]> {
    const best = features.map(() => -Infinity);
    for await (const b of batches(openShapes({ count: 200 }, 'val'), { input: model.input, preprocess: model.preprocess, batchSize: 100 })) {
      const a = (await engine.forward(b.input, [layer])).activations.get(layer)!;
      const [n, c, h, w] = a.shape;
      for (let j = 0; j < n; j++) {
        features.forEach((f, i) => {
          let s = 0;
          for (let k = 0; k < h * w; k++) s += a.data[(j * c + f) * h * w + k];
          best[i] = Math.max(best[i], s / (h * w));
        });
      }
    }
    return best;
  }

  for (const parameterization of ['pixel', 'fourier'] as Parameterization[]) {
    test(`${parameterization}: the map mean rises block by block and ends far above the data's best`, async () => {
      const steps = 60;
      const s = await synthesize(engine, 'relu5', features, { steps, parameterization, seed: 1, batch: 3 });
      assert.equal(s.images.shape.join(','), `4,${model.input}`);
      const blocks = Array.from({ length: steps / 10 }, (_, b) => features.reduce((t, _, i) => t + s.history[i].slice(10 * b, 10 * b + 10).reduce((u, v) => u + v, 0), 0));
      for (let b = 1; b < blocks.length; b++) assert.ok(blocks[b] > blocks[b - 1], `block ${b}: ${blocks.map((v) => v.toFixed(2)).join(' ')}`);
      const best = await datasetBest('relu5');
      features.forEach((f, i) => assert.ok(s.final[i] > 2 * best[i], `feature ${f}: ${s.final[i].toFixed(3)} vs the data's ${best[i].toFixed(3)}`));
      // Pixels stay valid: the image maps back into 0..255.
      const mean = model.preprocess.mean;
      const std = model.preprocess.std;
      const plane = model.input[1] * model.input[2];
      s.images.data.forEach((v, k) => {
        const c = Math.floor(k / plane) % 3;
        const pixel = v * std[c % std.length] + mean[c % mean.length];
        assert.ok(pixel >= -1e-3 && pixel <= 255 + 1e-3, `pixel ${pixel}`);
      });
    });
  }

  test('seeded: the same seed gives the same images; bad settings are refused', async () => {
    const a = await synthesize(engine, 'relu5', [2], { steps: 5, seed: 4 });
    const b = await synthesize(engine, 'relu5', [2], { steps: 5, seed: 4 });
    assert.deepEqual(a.images.data, b.images.data);
    await assert.rejects(synthesize(engine, 'relu5', [64], { steps: 5 }), /feature 64 is out of range for layer relu5, which has 64/);
    await assert.rejects(synthesize(engine, 'relu5', [0], { decay: 2 }), /decay must be a number in \[0, 1\]/);
  });
});
