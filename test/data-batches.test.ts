import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { batches, type Batch, type BatchOptions } from '../src/data/batches.js';
import { computeChannelMean, computeMeanImage } from '../src/data/pixel-stats.js';
import { seededPermutation, type Dataset, type Item } from '../src/data/dataset.js';
import { fitImage, imageToInput, type RgbImage } from '../src/data/image.js';
import { openShapes } from '../src/data/shapes.js';
import type { Preprocess } from '../src/model/layers.js';
import { tensor } from '../src/tensor.js';
import { Rng } from '../src/util/random.js';

const PRE = { mean: [120.5, 110.25, 99.75], std: [58.5, 57.1, 57.4] };

async function collect(ds: Dataset, opts: BatchOptions): Promise<Batch[]> {
  const out: Batch[] = [];
  for await (const b of batches(ds, opts)) out.push(b);
  return out;
}

/** Item j of a batch as an RGB/grey image, undoing nothing: only for mean 0, std 1 batches. */
function batchImage(b: Batch, j: number): RgbImage {
  const [, C, H, W] = b.input.shape;
  const data = new Uint8Array(H * W * C);
  for (let c = 0; c < C; c++) for (let p = 0; p < H * W; p++) data[p * C + c] = b.input.data[(j * C + c) * H * W + p];
  return { width: W, height: H, channels: C as 1 | 3, data };
}

function window(img: RgbImage, oy: number, ox: number, H: number, W: number, flip = false): Uint8Array {
  const C = img.channels;
  const out = new Uint8Array(H * W * C);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const sy = y + oy, sx = (flip ? W - 1 - x : x) + ox;
      const inside = sy >= 0 && sy < img.height && sx >= 0 && sx < img.width;
      for (let c = 0; c < C; c++) out[(y * W + x) * C + c] = inside ? img.data[(sy * img.width + sx) * C + c] : 0;
    }
  }
  return out;
}

const eq = (a: ArrayLike<number>, b: ArrayLike<number>) => a.length === b.length && Array.from(a).every((v, i) => v === b[i]);

/** A grey dataset held in memory, with hooks to watch how items are requested. */
function memoryDataset(n: number, size: number, hooks: { fail?: Set<number>; onStart?: (i: number) => void; delayMs?: number; onEnd?: () => void } = {}): Dataset {
  const ds: Dataset = {
    name: 'memory',
    classes: ['even', 'odd'],
    size: n,
    channels: 1,
    item: async (i): Promise<Item> => {
      hooks.onStart?.(i);
      if (hooks.delayMs) await new Promise((r) => setTimeout(r, hooks.delayMs));
      hooks.onEnd?.();
      if (hooks.fail?.has(i)) throw new Error(`cannot decode image item${i}.png: bad data`);
      const data = Uint8Array.from({ length: size * size }, (_, p) => (i * 31 + p * 7) & 255);
      return { image: { width: size, height: size, channels: 1, data }, label: i % 2, name: `item${i}` };
    },
    label: (i) => i % 2,
    itemName: (i) => `item${i}`,
  };
  return ds;
}

describe('batches', () => {
  const ds = openShapes({ count: 10, seed: 11 });

  test('batch shapes and label order follow the given permutation', async () => {
    const perm = seededPermutation(10, 3);
    const got = await collect(ds, { input: [3, 64, 64], preprocess: PRE, batchSize: 4, indices: perm });
    assert.deepEqual(got.map((b) => b.input.shape), [[4, 3, 64, 64], [4, 3, 64, 64], [2, 3, 64, 64]]);
    assert.deepEqual(got.flatMap((b) => b.indices), perm);
    // Shapes labels cycle through the classes by index.
    assert.deepEqual(got.flatMap((b) => [...b.labels]), perm.map((i) => i % 10));
    assert.deepEqual(got.map((b) => b.batch), [0, 1, 2]);
    const dropped = await collect(ds, { input: [3, 64, 64], preprocess: PRE, batchSize: 4, indices: perm, dropLast: true });
    assert.deepEqual(dropped.map((b) => b.input.shape[0]), [4, 4]);
  });

  test('preprocessing equals imageToInput of the fitted image, per-channel and per-pixel mean, RGB and grey', async () => {
    const meanImage = tensor([3, 40, 48]);
    for (let i = 0; i < meanImage.data.length; i++) meanImage.data[i] = (i * 0.37) % 255;
    const greyMean = tensor([1, 40, 48], meanImage.data.slice(0, 40 * 48));
    const cases: { C: 1 | 3; pre: Preprocess }[] = [
      { C: 3, pre: PRE },
      { C: 3, pre: { mean: [0], std: [1], meanImage } },
      { C: 1, pre: { mean: [100], std: [64] } },
      { C: 1, pre: { mean: [0], std: [1], meanImage: greyMean } },
    ];
    for (const { C, pre } of cases) {
      const [b] = await collect(ds, { input: [C, 40, 48], preprocess: pre, batchSize: 3, indices: [7, 2, 5] });
      for (let j = 0; j < 3; j++) {
        const item = await ds.item(b.indices[j]);
        const ref = imageToInput(fitImage(item.image, [40, 48], C), pre);
        const ours = b.input.data.subarray(j * ref.data.length, (j + 1) * ref.data.length);
        assert.ok(eq(ours, ref.data), `C=${C} item ${j}`);
      }
    }
  });

  test('grey items become RGB for an RGB model', async () => {
    const grey = memoryDataset(3, 6);
    const [b] = await collect(grey, { input: [3, 6, 6], preprocess: { mean: [0], std: [1] }, batchSize: 3 });
    const item = await grey.item(2);
    for (let c = 0; c < 3; c++) assert.ok(eq(b.input.data.subarray((2 * 3 + c) * 36, (2 * 3 + c + 1) * 36), item.image.data), `channel ${c}`);
  });

  test('flip: deterministic for a seed, each image plain or mirrored, both occur', async () => {
    const big = openShapes({ count: 24, seed: 2 });
    const opts: BatchOptions = { input: [3, 32, 32], preprocess: { mean: [0], std: [1] }, batchSize: 8 };
    const plain = await collect(big, opts);
    const a = await collect(big, { ...opts, augment: { flip: true }, seed: 9 });
    const b = await collect(big, { ...opts, augment: { flip: true }, seed: 9 });
    const c = await collect(big, { ...opts, augment: { flip: true }, seed: 10 });
    assert.ok(a.every((x, k) => eq(x.input.data, b[k].input.data)), 'same seed, same batches');
    assert.ok(!a.every((x, k) => eq(x.input.data, c[k].input.data)), 'another seed, other flips');
    let flipped = 0;
    for (let k = 0; k < a.length; k++) {
      for (let j = 0; j < 8; j++) {
        const ref = batchImage(plain[k], j);
        const got = batchImage(a[k], j).data;
        const isPlain = eq(got, ref.data), isMirror = eq(got, window(ref, 0, 0, 32, 32, true));
        assert.ok(isPlain || isMirror, `batch ${k} item ${j} is neither plain nor mirrored`);
        if (!isPlain) flipped++;
      }
    }
    assert.ok(flipped > 0 && flipped < 24, `${flipped} of 24 flipped`);
  });

  test('random crop: a window of the scaled-up (or padded) image, deterministic, not always the centre', async () => {
    const S = 32, n = 8;
    for (const cropMode of ['scale', 'pad'] as const) {
      const opts: BatchOptions = { input: [3, S, S], preprocess: { mean: [0], std: [1] }, batchSize: 4, indices: [0, 1, 2, 3, 4, 5, 6, 7], augment: { randomCrop: n, cropMode }, seed: 4 };
      const a = await collect(ds, opts);
      const again = await collect(ds, opts);
      assert.ok(a.every((x, k) => eq(x.input.data, again[k].input.data)));
      const offsets = new Set<string>();
      for (const b of a) {
        for (let j = 0; j < b.indices.length; j++) {
          const src = (await ds.item(b.indices[j])).image;
          const got = batchImage(b, j).data;
          // 'scale' crops from the image fitted to S+n; 'pad' from the image fitted to S, padded with n/2 black.
          const base = cropMode === 'scale' ? fitImage(src, [S + n, S + n], 3) : fitImage(src, [S, S], 3);
          const shift = cropMode === 'scale' ? 0 : n / 2;
          let found: string | undefined;
          for (let dy = 0; dy <= n && !found; dy++) for (let dx = 0; dx <= n && !found; dx++) if (eq(got, window(base, dy - shift, dx - shift, S, S))) found = `${dy},${dx}`;
          assert.ok(found, `${cropMode}: item ${b.indices[j]} is no window of the expected image`);
          offsets.add(found);
        }
      }
      assert.ok(offsets.size > 2, `${cropMode}: offsets ${[...offsets]}`);
    }
  });

  test('startBatch resumes with the same batches, augmentation included; an Rng seeds like its first draw', async () => {
    const perm = seededPermutation(10, 8);
    const opts: BatchOptions = { input: [3, 48, 48], preprocess: PRE, batchSize: 3, indices: perm, augment: { randomCrop: 6, flip: true }, seed: 21 };
    const full = await collect(ds, opts);
    const resumed = await collect(ds, { ...opts, startBatch: 2 });
    assert.deepEqual(resumed.map((b) => b.batch), [2, 3]);
    resumed.forEach((b, k) => {
      assert.deepEqual(b.indices, full[k + 2].indices);
      assert.ok(eq(b.input.data, full[k + 2].input.data), `batch ${k + 2}`);
    });
    const r1 = new Rng(5), r2 = new Rng(5);
    const viaRng1 = await collect(ds, { ...opts, seed: undefined, rng: r1 });
    const viaRng2 = await collect(ds, { ...opts, seed: undefined, rng: r2 });
    assert.ok(viaRng1.every((b, k) => eq(b.input.data, viaRng2[k].input.data)));
    assert.ok(!viaRng1.every((b, k) => eq(b.input.data, full[k].input.data)));
  });

  test('boxes follow the fit, the crop and the flip', async () => {
    const items = await Promise.all(Array.from({ length: 10 }, (_, i) => ds.item(i)));
    const [same] = await collect(ds, { input: [3, 64, 64], preprocess: PRE, batchSize: 10 });
    assert.deepEqual(same.boxes, items.map((it) => it.box));
    const [half] = await collect(ds, { input: [3, 32, 32], preprocess: PRE, batchSize: 10 });
    assert.deepEqual(half.boxes, items.map((it) => [Math.floor(it.box![0] / 2), Math.floor(it.box![1] / 2), Math.ceil(it.box![2] / 2), Math.ceil(it.box![3] / 2)]));
    const plain = await collect(ds, { input: [3, 64, 64], preprocess: { mean: [0], std: [1] }, batchSize: 10 });
    const [flip] = await collect(ds, { input: [3, 64, 64], preprocess: { mean: [0], std: [1] }, batchSize: 10, augment: { flip: true }, seed: 1 });
    for (let j = 0; j < 10; j++) {
      const b = items[j].box!;
      const mirrored = eq(batchImage(flip, j).data, window(batchImage(plain[0], j), 0, 0, 64, 64, true));
      assert.deepEqual(flip.boxes![j], mirrored ? [b[0], 64 - b[3], b[2], 64 - b[1]] : b);
    }
    const noBoxes = await collect(memoryDataset(2, 4), { input: [1, 4, 4], preprocess: { mean: [0], std: [1] }, batchSize: 2 });
    assert.equal(noBoxes[0].boxes, undefined);
  });

  test('failing items are left out and named; the rest of the run goes on', async () => {
    const mem = memoryDataset(9, 5, { fail: new Set([1, 4, 5, 6]) });
    const stream = batches(mem, { input: [1, 5, 5], preprocess: { mean: [0], std: [1] }, batchSize: 3 });
    const got: Batch[] = [];
    for await (const b of stream) got.push(b);
    // Batch 1 (items 3, 4, 5) keeps item 3 only; batch 2 keeps 7 and 8.
    assert.deepEqual(got.map((b) => b.indices), [[0, 2], [3], [7, 8]]);
    assert.deepEqual(stream.skipped.map((s) => s.name), ['item1', 'item4', 'item5', 'item6']);
    assert.match(stream.skipped[0].reason, /cannot decode image item1\.png/);
    assert.equal(stream.batchCount, 3);
    const allBad = memoryDataset(3, 5, { fail: new Set([0, 1, 2]) });
    const external: { name: string }[] = [];
    const none = await collect(allBad, { input: [1, 5, 5], preprocess: { mean: [0], std: [1] }, batchSize: 2, skipped: external as never });
    assert.equal(none.length, 0);
    assert.equal(external.length, 3);
  });

  test('decoding ahead is bounded by concurrency and prefetch', async () => {
    let inFlight = 0, maxInFlight = 0, started = 0;
    const slow = memoryDataset(40, 4, {
      delayMs: 2,
      onStart: () => {
        started++;
        maxInFlight = Math.max(maxInFlight, ++inFlight);
      },
      onEnd: () => inFlight--,
    });
    const stream = batches(slow, { input: [1, 4, 4], preprocess: { mean: [0], std: [1] }, batchSize: 4, prefetch: 1, concurrency: 3 });
    const first = await stream.next();
    assert.equal(first.done, false);
    await new Promise((r) => setTimeout(r, 60));
    // Holding batch 0, only batch 1 may be decoded ahead.
    assert.equal(started, 8);
    let n = 1;
    for await (const _ of stream) n++;
    assert.equal(n, 10);
    assert.equal(maxInFlight, 3);
  });
});

describe('mean image', () => {
  test('equals a brute-force mean of the fitted images; channel mean its average', async () => {
    const ds = openShapes({ count: 12, seed: 5 });
    const indices = [0, 3, 4, 7, 8, 11];
    const mean = await computeMeanImage(ds, [3, 24, 40], { indices });
    assert.deepEqual(mean.shape, [3, 24, 40]);
    const sum = new Float64Array(3 * 24 * 40);
    for (const i of indices) {
      const img = fitImage((await ds.item(i)).image, [24, 40], 3);
      for (let y = 0; y < 24; y++) for (let x = 0; x < 40; x++) for (let c = 0; c < 3; c++) sum[(c * 24 + y) * 40 + x] += img.data[(y * 40 + x) * 3 + c];
    }
    let worst = 0;
    for (let i = 0; i < sum.length; i++) worst = Math.max(worst, Math.abs(mean.data[i] - sum[i] / indices.length));
    assert.ok(worst < 1e-4, `max error ${worst}`);
    const channel = await computeChannelMean(ds, [3, 24, 40], { indices });
    for (let c = 0; c < 3; c++) {
      let s = 0;
      for (let p = 0; p < 24 * 40; p++) s += sum[c * 24 * 40 + p];
      assert.ok(Math.abs(channel[c] - s / (indices.length * 24 * 40)) < 1e-3, `channel ${c}`);
    }
  });

  test('skips unreadable items and refuses a set with none readable', async () => {
    const mem = memoryDataset(4, 3, { fail: new Set([2]) });
    const skipped: { name: string }[] = [];
    const mean = await computeMeanImage(mem, [1, 3, 3], { skipped: skipped as never });
    const expect = [0, 1, 3].map((i) => (i * 31) & 255).reduce((a, b) => a + b) / 3;
    assert.ok(Math.abs(mean.data[0] - expect) < 1e-4);
    assert.deepEqual(skipped.map((s) => s.name), ['item2']);
    await assert.rejects(computeMeanImage(memoryDataset(1, 3, { fail: new Set([0]) }), [1, 3, 3]), /no readable images/);
  });
});
