// Faithfulness measures against brute force: every point of a deletion and an insertion curve recomputed image by
// image from its definition, the areas by direct summation, the pointing game by scanning the map, and the table's
// means from the per-image numbers.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { attribute } from '../src/analysis/attribution.js';
import { changedAt, curveArea, deletionInsertion, faithfulness, itemsOf, pixelOrder, pointingHit } from '../src/analysis/faithfulness.js';
import { batches } from '../src/data/batches.js';
import { openShapes } from '../src/data/shapes.js';
import { Engine } from '../src/engine/engine.js';
import { createZooModel } from '../src/model/zoo.js';
import { tensor, type Tensor } from '../src/tensor.js';
import { gaussianBlur } from '../src/analysis/resample.js';

const model = createZooModel('zfnet-small', { seed: 3 });
const engine = new Engine(model);
after(() => engine.dispose());

async function shapesItems(count: number) {
  const ds = openShapes({ count: 40 }, 'val');
  const items = [];
  for await (const b of batches(ds, { input: model.input, preprocess: model.preprocess, batchSize: count, indices: Array.from({ length: count }, (_, i) => i) })) items.push(...itemsOf(b));
  return items;
}

/** p(target) of one image, softmax in float64. */
async function probability(input: Tensor, target: number): Promise<number> {
  const logits = (await engine.forward(input, ['fc8'])).activations.get('fc8')!.data;
  const max = Math.max(...logits);
  const total = logits.reduce((s, v) => s + Math.exp(v - max), 0);
  return Math.exp(logits[target] - max) / total;
}

describe('faithfulness', () => {
  test('pixel order: decreasing score, ties in row-major order', () => {
    assert.deepEqual(Array.from(pixelOrder(Float32Array.of(0.5, 2, 0.5, -1, 2))), [1, 4, 0, 2, 3]);
  });

  test('the curve area is the trapezoid rule over [0, 1]', () => {
    assert.equal(curveArea([1, 1, 1]), 1);
    assert.equal(curveArea([1, 0]), 0.5);
    // Brute force: a fine Riemann sum of the piecewise-linear curve through the points.
    const points = [0.9, 0.4, 0.35, 0.1, 0];
    let fine = 0;
    const n = 100000;
    for (let i = 0; i < n; i++) {
      const t = ((i + 0.5) / n) * (points.length - 1);
      const k = Math.floor(t);
      fine += (points[k] + (t - k) * (points[k + 1] - points[k])) / n;
    }
    assert.ok(Math.abs(curveArea(points) - fine) < 1e-9);
  });

  test('deletion and insertion curves equal their definition, point by point', async () => {
    const [item] = await shapesItems(1);
    const a = await attribute(engine, item.input, 'saliency', { target: item.label });
    const order = pixelOrder(a.pixels);
    const steps = 8;
    // A batch of 3 does not divide the 9 points: the curve crosses batches mid-way.
    const curves = await deletionInsertion(engine, item.input, item.label, order, { steps, batch: 3 });
    const [, c, h, w] = item.input.shape;
    const blurred = gaussianBlur(item.input, Math.max(h, w) / 16);
    for (let k = 0; k <= steps; k++) {
      const removed = tensor([...item.input.shape], item.input.data.slice());
      const restored = tensor([...item.input.shape], blurred.data.slice());
      for (let i = 0; i < changedAt(k, steps, h * w); i++) {
        for (let ch = 0; ch < c; ch++) {
          removed.data[ch * h * w + order[i]] = 0;
          restored.data[ch * h * w + order[i]] = item.input.data[ch * h * w + order[i]];
        }
      }
      assert.ok(Math.abs(curves.deletion[k] - (await probability(removed, item.label))) < 1e-6, `deletion point ${k}`);
      assert.ok(Math.abs(curves.insertion[k] - (await probability(restored, item.label))) < 1e-6, `insertion point ${k}`);
    }
    assert.equal(changedAt(steps, steps, h * w), h * w);
    assert.equal(curves.deletionAuc, curveArea(curves.deletion));
    assert.equal(curves.insertionAuc, curveArea(curves.insertion));
  });

  test('pointing game: the first maximum inside the box, half-open', () => {
    const map = new Float32Array(16);
    map[6] = 3; // (1, 2)
    map[9] = 3; // (2, 1): a later tie does not count
    assert.equal(pointingHit(map, 4, [1, 2, 2, 3]), true);
    assert.equal(pointingHit(map, 4, [2, 1, 3, 2]), false);
    assert.equal(pointingHit(map, 4, [0, 0, 1, 4]), false);
  });

  test('the table: means of the per-image numbers, the hit share over boxed images, curves averaged pointwise', async () => {
    const items = await shapesItems(3);
    assert.ok(items.every((i) => i.box), 'shapes records boxes');
    const table = await faithfulness(engine, items, ['gradcam', 'saliency'], { steps: 4 });
    assert.deepEqual(table.map((r) => r.method), ['gradcam', 'saliency']);
    for (const row of table) {
      assert.equal(row.perImage.length, 3);
      const mean = (xs: number[]) => xs.reduce((s, v) => s + v, 0) / xs.length;
      assert.ok(Math.abs(row.deletionAuc - mean(row.perImage.map((p) => p.deletionAuc))) < 1e-12);
      assert.ok(Math.abs(row.insertionAuc - mean(row.perImage.map((p) => p.insertionAuc))) < 1e-12);
      assert.equal(row.pointing, row.perImage.filter((p) => p.hit).length / 3);
      assert.equal(row.meanDeletion.length, 5);
      // Each image's own curve, recomputed, averages to the table's.
      let first = 0;
      for (const item of items) {
        const a = await attribute(engine, item.input, row.method, { target: item.label });
        first += (await deletionInsertion(engine, item.input, item.label, pixelOrder(a.pixels), { steps: 4 })).deletion[1];
        assert.equal(row.perImage.find((p) => p.name === item.name)!.hit, pointingHit(a.pixels, 64, item.box!));
      }
      assert.ok(Math.abs(row.meanDeletion[1] - first / 3) < 1e-6);
      assert.ok(row.msPerImage > 0);
    }
  });
});
