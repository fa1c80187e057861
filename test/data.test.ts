import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { batches, skippedSummary } from '../src/data/batches.js';
import { FASHION_MNIST_DIR, hasOwnSplits, openDataset, requireLabels, seededPermutation, splitIndices } from '../src/data/dataset.js';
import { openTrainAndHeldOut } from '../src/data/held-out.js';
import type { Rect } from '../src/util/rect.js';
import { openImageFolder } from '../src/data/folder.js';
import { parseIdx } from '../src/data/idx.js';
import type { RgbImage } from '../src/data/image.js';
import { openShapes, parseShapesSpec, renderShape, SHAPE_CLASSES } from '../src/data/shapes.js';
import { encodePng } from '../src/render/figure.js';
import sharp from 'sharp';

const dir = mkdtempSync(join(tmpdir(), 'convscope-data-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** Tight box of the pixels where two images differ, end-exclusive; undefined if none. */
function diffBox(a: RgbImage, b: RgbImage): Rect | undefined {
  let box: Rect | undefined;
  for (let y = 0; y < a.height; y++) {
    for (let x = 0; x < a.width; x++) {
      const o = (y * a.width + x) * 3;
      if (a.data[o] === b.data[o] && a.data[o + 1] === b.data[o + 1] && a.data[o + 2] === b.data[o + 2]) continue;
      box = box ? [Math.min(box[0], y), Math.min(box[1], x), Math.max(box[2], y + 1), Math.max(box[3], x + 1)] : [y, x, y + 1, x + 1];
    }
  }
  return box;
}

/** Mean absolute difference between vertical and horizontal neighbours over a box's inner part (all channels). */
function gradients(img: RgbImage, box: Rect): { dy: number; dx: number } {
  const [y0, x0, y1, x1] = box;
  const my = Math.ceil((y1 - y0) / 6), mx = Math.ceil((x1 - x0) / 6);
  let dy = 0, dx = 0, n = 0;
  for (let y = y0 + my; y < y1 - my - 1; y++) {
    for (let x = x0 + mx; x < x1 - mx - 1; x++) {
      for (let c = 0; c < 3; c++) {
        const v = img.data[(y * img.width + x) * 3 + c];
        dy += Math.abs(img.data[((y + 1) * img.width + x) * 3 + c] - v);
        dx += Math.abs(img.data[(y * img.width + x + 1) * 3 + c] - v);
        n++;
      }
    }
  }
  return { dy: dy / n, dx: dx / n };
}

describe('synthetic shapes', () => {
  test('the pictures are the ones every documented figure was made from (a hash of 120 renders)', () => {
    // Computed with the renderer of commit 24968af, before its speed-up; a change of one byte fails here.
    const h = createHash('sha256');
    for (let i = 0; i < 60; i++) {
      for (const size of [64, 31]) {
        const s = renderShape(0, 'train', i, { size }, true);
        h.update(s.image.data);
        h.update(s.background!.data);
        h.update(JSON.stringify(s.box));
      }
    }
    assert.equal(h.digest('hex'), 'de9b70e91e5e99b69d36ce204aaf1bf5deff6f0e02f2ffa108c7f03de22d3a09');
  });

  test('an item depends only on (seed, split, index): same bytes in any order, from any instance', async () => {
    const a = openShapes({ seed: 7, count: 50 });
    const b = openShapes({ seed: 7, count: 50 });
    const late = await a.item(41);
    for (let i = 0; i < 5; i++) await a.item(i);
    const again = await a.item(41);
    const fresh = await b.item(41);
    assert.ok(sameBytes(late.image.data, again.image.data), 'same instance, different access order');
    assert.ok(sameBytes(late.image.data, fresh.image.data), 'another instance');
    assert.deepEqual(late.box, fresh.box);
    assert.equal(late.label, fresh.label);
  });

  test('a cached item equals a fresh render, and drawing on a returned item does not reach the cache', async () => {
    const ds = openShapes({ seed: 3, count: 20 });
    const first = await ds.item(12);
    const rendered = renderShape(3, 'train', 12);
    first.image.data.fill(0);
    first.box![0] = -1;
    const cached = await ds.item(12);
    assert.ok(sameBytes(cached.image.data, rendered.image.data), 'cached pixels');
    assert.deepEqual(cached.box, rendered.box);
    assert.equal(cached.label, rendered.label);
    assert.equal(cached.name, rendered.name);
    cached.image.data.fill(0);
    assert.ok(sameBytes((await ds.item(12)).image.data, rendered.image.data), 'a hit returns a copy too');
  });

  test('splits and seeds give different images', async () => {
    const splitsDiffer = (['train', 'val', 'test'] as const).map((s) => renderShape(7, s, 3).image.data);
    assert.ok(!sameBytes(splitsDiffer[0], splitsDiffer[1]) && !sameBytes(splitsDiffer[0], splitsDiffer[2]) && !sameBytes(splitsDiffer[1], splitsDiffer[2]));
    assert.ok(!sameBytes(renderShape(7, 'train', 3).image.data, renderShape(8, 'train', 3).image.data));
    // No image of the val split repeats one of the train split (checked on the first 200 of each).
    const train = new Set(Array.from({ length: 200 }, (_, i) => Buffer.from(renderShape(1, 'train', i).image.data).toString('base64')));
    for (let i = 0; i < 200; i++) assert.ok(!train.has(Buffer.from(renderShape(1, 'val', i).image.data).toString('base64')));
  });

  test('at least 8 classes, every class appears, in equal numbers', async () => {
    const ds = openShapes({ count: 100 });
    assert.ok(ds.classes.length >= 8);
    for (const c of ['disc', 'square', 'triangle', 'cross', 'ring', 'star', 'horizontal stripes', 'vertical stripes']) assert.ok(ds.classes.includes(c), c);
    const counts = new Array(ds.classes.length).fill(0);
    for (let i = 0; i < ds.size; i++) {
      const it = await ds.item(i);
      assert.equal(it.label, ds.label(i));
      counts[it.label]++;
    }
    assert.ok(counts.every((c) => c === 100 / ds.classes.length), `counts ${counts}`);
  });

  test('boxes are the tight box of the pixels the object changed, inside the image', () => {
    for (let i = 0; i < 300; i++) {
      const s = renderShape(3, 'train', i, {}, true);
      const drawn = diffBox(s.image, s.background!);
      assert.ok(drawn, `item ${i} drew nothing`);
      assert.deepEqual(s.box, drawn, `item ${i} (${SHAPE_CLASSES[s.label]})`);
      const [y0, x0, y1, x1] = s.box;
      assert.ok(y0 >= 0 && x0 >= 0 && y1 <= 64 && x1 <= 64 && y0 < y1 && x0 < x1);
    }
  });

  test('objects vary in position and scale', () => {
    const sides = Array.from({ length: 200 }, (_, i) => renderShape(2, 'train', i).box).map(([y0, x0, y1, x1]) => Math.max(y1 - y0, x1 - x0));
    const centres = Array.from({ length: 200 }, (_, i) => renderShape(2, 'train', i).box).map(([y0, , y1]) => (y0 + y1) / 2);
    assert.ok(Math.min(...sides) < 0.3 * 64 && Math.max(...sides) > 0.65 * 64, `sides ${Math.min(...sides)}..${Math.max(...sides)}`);
    assert.ok(Math.min(...centres) < 20 && Math.max(...centres) > 44, `centres ${Math.min(...centres)}..${Math.max(...centres)}`);
  });

  test('stripes are a striped patch with its own box, in the class direction', () => {
    const h = SHAPE_CLASSES.indexOf('horizontal stripes'), v = SHAPE_CLASSES.indexOf('vertical stripes');
    const K = SHAPE_CLASSES.length;
    for (let j = 0; j < 20; j++) {
      for (const cls of [h, v]) {
        const s = renderShape(4, 'train', j * K + cls, {}, true);
        assert.equal(s.label, cls);
        const [y0, x0, y1, x1] = s.box;
        assert.ok((y1 - y0) * (x1 - x0) < 0.6 * 64 * 64, 'a patch, not the whole image');
        const g = gradients(s.image, s.box);
        const [along, across] = cls === h ? [g.dx, g.dy] : [g.dy, g.dx];
        assert.ok(across > 3 * along, `item ${j * K + cls}: change across stripes ${across.toFixed(1)} vs along ${along.toFixed(1)}`);
      }
    }
  });

  test('size option and spec parsing', async () => {
    const ds = await openDataset('shapes:size=32,count=20,seed=3,split=val');
    assert.equal(ds.size, 20);
    assert.deepEqual(ds.imageSize, [32, 32]);
    const it = await ds.item(19);
    assert.equal(it.image.width, 32);
    assert.equal(it.image.data.length, 32 * 32 * 3);
    assert.ok(sameBytes(it.image.data, renderShape(3, 'val', 19, { size: 32 }).image.data));
    assert.equal((await openDataset('shapes', { split: 'test' })).size, 1000);
    assert.throws(() => parseShapesSpec('colour=3'), /unknown option 'colour'/);
    assert.throws(() => parseShapesSpec('size=big'), /size must be a number/);
    await assert.rejects(openDataset('shapes:size=4'), /size must be an integer in 8\.\.4096, got 4/);
    await assert.rejects(openDataset('shapes:size=30000,count=4'), /size must be an integer in 8\.\.4096, got 30000/);
    await assert.rejects(ds.item(20), /out of range/);
  });
});

// ---------------------------------------------------------------- IDX

/** An IDX file written by hand (big-endian header), independent of the parser's own encoder. */
function idxBytes(type: number, dims: number[], data: Uint8Array): Buffer {
  const head = Buffer.alloc(4 + 4 * dims.length);
  head[2] = type;
  head[3] = dims.length;
  dims.forEach((d, k) => head.writeUInt32BE(d, 4 + 4 * k));
  return Buffer.concat([head, Buffer.from(data)]);
}

const TINY = { n: 5, rows: 4, cols: 3 };
const tinyPixels = Uint8Array.from({ length: TINY.n * TINY.rows * TINY.cols }, (_, i) => (i * 29 + 7) & 255);
const tinyLabels = Uint8Array.from([3, 0, 2, 1, 3]);

function writeTiny(where: string, prefix: string, gz: boolean): void {
  mkdirSync(where, { recursive: true });
  const z = (b: Buffer) => (gz ? gzipSync(b) : b);
  const ext = gz ? '.gz' : '';
  writeFileSync(join(where, `${prefix}-images-idx3-ubyte${ext}`), z(idxBytes(8, [TINY.n, TINY.rows, TINY.cols], tinyPixels)));
  writeFileSync(join(where, `${prefix}-labels-idx1-ubyte${ext}`), z(idxBytes(8, [TINY.n], tinyLabels)));
}

describe('IDX', () => {
  for (const gz of [false, true]) {
    test(`reads images and labels (${gz ? 'gzipped' : 'raw'}) by prefix, file and directory`, async () => {
      const where = join(dir, gz ? 'idx-gz' : 'idx-raw');
      writeTiny(where, 'train', gz);
      writeTiny(where, 't10k', gz);
      const ext = gz ? '.gz' : '';
      for (const spec of [join(where, 'train'), join(where, `train-images-idx3-ubyte${ext}`), join(where, `train-labels-idx1-ubyte${ext}`), where]) {
        const ds = await openDataset(spec);
        assert.equal(ds.size, TINY.n, spec);
        assert.equal(ds.channels, 1);
        assert.deepEqual(ds.imageSize, [TINY.rows, TINY.cols]);
        assert.deepEqual(ds.classes, ['0', '1', '2', '3']);
        for (let i = 0; i < TINY.n; i++) {
          const it = await ds.item(i);
          assert.equal(it.label, tinyLabels[i]);
          assert.equal(it.image.width, TINY.cols);
          assert.equal(it.image.height, TINY.rows);
          assert.ok(sameBytes(it.image.data, tinyPixels.subarray(i * 12, (i + 1) * 12)), `${spec} item ${i}`);
        }
      }
      assert.equal((await openDataset(where, { split: 'test' })).size, TINY.n);
      await assert.rejects(openDataset(where, { split: 'val' }), /train and test files only/);
    });
  }

  test('a truncated file gives one line naming it', async () => {
    const where = join(dir, 'idx-trunc');
    writeTiny(where, 'train', false);
    const path = join(where, 'train-images-idx3-ubyte');
    const full = idxBytes(8, [TINY.n, TINY.rows, TINY.cols], tinyPixels);
    writeFileSync(path, full.subarray(0, full.length - 5));
    await assert.rejects(openDataset(join(where, 'train')), (e: Error) => {
      assert.match(e.message, /truncated/);
      assert.ok(e.message.includes(path), e.message);
      assert.ok(!e.message.includes('\n'));
      return true;
    });
    const gzPath = join(where, 'cut-images-idx3-ubyte.gz');
    const zipped = gzipSync(full);
    writeFileSync(gzPath, zipped.subarray(0, zipped.length - 20));
    writeFileSync(join(where, 'cut-labels-idx1-ubyte.gz'), gzipSync(idxBytes(8, [TINY.n], tinyLabels)));
    await assert.rejects(openDataset(gzPath), (e: Error) => e.message.includes(gzPath) && /truncated/.test(e.message) && !e.message.includes('\n'));
  });

  test('bad magic, element type, dimensions and label counts are refused', async () => {
    assert.throws(() => parseIdx(Buffer.from([1, 2, 8, 1, 0, 0, 0, 0]), 'x'), /not an IDX file/);
    assert.throws(() => parseIdx(idxBytes(0x0d, [1], new Uint8Array(4)), 'x'), /float values/);
    assert.throws(() => parseIdx(idxBytes(8, [2, 2], new Uint8Array(5)), 'x'), /1 bytes beyond/);
    assert.throws(() => parseIdx(idxBytes(8, [2, 2], new Uint8Array(4)), 'x', 1), /2 dimensions; expected 1/);
    const where = join(dir, 'idx-mismatch');
    writeTiny(where, 'train', false);
    writeFileSync(join(where, 'train-labels-idx1-ubyte'), idxBytes(8, [4], tinyLabels.subarray(0, 4)));
    await assert.rejects(openDataset(where), /4 labels for the 5 images/);
  });
});

describe('Fashion-MNIST', () => {
  test('opens from /usr/share/datasets/fashion-mnist: 60000 train, 10000 test, 28x28 grey, 10 balanced classes', async () => {
    assert.ok(
      existsSync(FASHION_MNIST_DIR),
      `${FASHION_MNIST_DIR} is missing: install Debian's dataset-fashion-mnist (apt-get install -y dataset-fashion-mnist)`,
    );
    const expected = { train: 60000, test: 10000 } as const;
    for (const split of ['train', 'test'] as const) {
      const ds = await openDataset('fashion-mnist', { split });
      assert.equal(ds.size, expected[split]);
      assert.equal(ds.channels, 1);
      assert.deepEqual(ds.imageSize, [28, 28]);
      assert.equal(ds.classes.length, 10);
      assert.equal(ds.classes[0], 'T-shirt/top');
      assert.equal(ds.classes[9], 'Ankle boot');
      // Fashion-MNIST is balanced: 6000 per class in train, 1000 in test.
      const counts = new Array(10).fill(0);
      for (let i = 0; i < ds.size; i++) counts[ds.label(i)]++;
      assert.deepEqual(counts, new Array(10).fill(ds.size / 10));
      const it = await ds.item(ds.size - 1);
      assert.equal(it.image.data.length, 28 * 28);
      assert.ok(it.image.data.some((v) => v > 0) && it.image.data.some((v) => v === 0), 'a garment on black');
    }
  });
});

// ---------------------------------------------------------------- folders

function solidImage(w: number, h: number, rgb: number[]): RgbImage {
  const data = new Uint8Array(w * h * 3);
  for (let i = 0; i < w * h; i++) data.set(rgb, 3 * i);
  return { width: w, height: h, channels: 3, data };
}

describe('ImageFolder', () => {
  const root = join(dir, 'folder');
  const colours: Record<string, number[]> = { Dog: [200, 30, 30], ant: [30, 200, 30], bird: [30, 30, 200], cat: [200, 200, 30] };
  const setup = (async () => {
    for (const cls of Object.keys(colours)) mkdirSync(join(root, cls), { recursive: true });
    mkdirSync(join(root, 'cat', 'sub'), { recursive: true });
    mkdirSync(join(root, '.ipynb_checkpoints'), { recursive: true });
    const png = (rgb: number[], w = 20, h = 12) => encodePng(solidImage(w, h, rgb));
    const jpeg = (rgb: number[]) => sharp(Buffer.from(solidImage(16, 16, rgb).data), { raw: { width: 16, height: 16, channels: 3 } }).jpeg().toBuffer();
    writeFileSync(join(root, 'cat', 'b.png'), await png(colours.cat));
    writeFileSync(join(root, 'cat', 'a.jpg'), await jpeg(colours.cat));
    writeFileSync(join(root, 'cat', 'C.JPEG'), await jpeg(colours.cat));
    writeFileSync(join(root, 'cat', 'sub', 'z.png'), await png(colours.cat, 12, 30));
    writeFileSync(join(root, 'cat', 'notes.txt'), 'not an image');
    writeFileSync(join(root, 'Dog', 'd1.png'), await png(colours.Dog));
    writeFileSync(join(root, 'ant', 'x.webp'), await sharp(Buffer.from(solidImage(10, 10, colours.ant).data), { raw: { width: 10, height: 10, channels: 3 } }).webp({ lossless: true }).toBuffer());
    writeFileSync(join(root, 'ant', 'grey.png'), await encodePng({ width: 8, height: 8, channels: 1, data: new Uint8Array(64).fill(90) }));
    writeFileSync(join(root, 'bird', 'b1.png'), await png(colours.bird));
    writeFileSync(join(root, 'bird', 'broken.jpg'), Buffer.from('this is not a JPEG at all'));
    writeFileSync(join(root, 'bird', 'b2.png'), (await png(colours.bird)).subarray(0, 60));
  })();

  test('classes and files in torchvision order; other files ignored', async () => {
    await setup;
    const ds = await openImageFolder(root);
    // Code-point order: upper case before lower case; sub-folders after their parent's files.
    assert.deepEqual(ds.classes, ['Dog', 'ant', 'bird', 'cat']);
    assert.deepEqual(ds.files, ['Dog/d1.png', 'ant/grey.png', 'ant/x.webp', 'bird/b1.png', 'bird/b2.png', 'bird/broken.jpg', 'cat/C.JPEG', 'cat/a.jpg', 'cat/b.png', 'cat/sub/z.png']);
    assert.equal(ds.ignored, 1);
    assert.deepEqual(Array.from({ length: ds.size }, (_, i) => ds.label(i)), [0, 1, 1, 2, 2, 2, 3, 3, 3, 3]);
    const grey = await ds.item(1);
    assert.equal(grey.image.channels, 3, 'items have the dataset channel count');
    assert.deepEqual([...grey.image.data.subarray(0, 3)], [90, 90, 90]);
  });

  test('corrupt files are skipped, counted and named; the rest still batch', async () => {
    await setup;
    const ds = await openDataset(root);
    const stream = batches(ds, { input: [3, 8, 8], preprocess: { mean: [0], std: [1] }, batchSize: 4 });
    const seen: string[] = [];
    const skippedPerBatch: string[] = [];
    for await (const b of stream) {
      assert.equal(b.input.shape[0], b.indices.length);
      b.indices.forEach((i, j) => {
        seen.push(ds.itemName(i));
        assert.equal(b.labels[j], ds.label(i));
        // Each class's images are one solid colour, which must survive decoding, fitting and normalising.
        const rgb = colours[ds.classes[ds.label(i)]];
        if (!ds.itemName(i).includes('grey')) for (let c = 0; c < 3; c++) assert.ok(Math.abs(b.input.data[(j * 3 + c) * 64] - rgb[c]) <= 3, `${ds.itemName(i)} channel ${c}`);
      });
      skippedPerBatch.push(...b.skipped.map((s) => s.name));
    }
    assert.deepEqual(seen, ['Dog/d1.png', 'ant/grey.png', 'ant/x.webp', 'bird/b1.png', 'cat/C.JPEG', 'cat/a.jpg', 'cat/b.png', 'cat/sub/z.png']);
    assert.deepEqual(stream.skipped.map((s) => s.name), ['bird/b2.png', 'bird/broken.jpg']);
    assert.deepEqual(skippedPerBatch, ['bird/b2.png', 'bird/broken.jpg']);
    for (const s of stream.skipped) assert.match(s.reason, /cannot decode/);
    const summary = skippedSummary(stream.skipped);
    assert.match(summary, /^skipped 2 unreadable files: bird\/b2\.png \(.*\); bird\/broken\.jpg \(/);
    assert.ok(!summary.includes('\n'));
  });

  test('empty folders give a one-line error naming them; a flat folder is its images, unlabelled', async () => {
    const empty = join(dir, 'empty');
    mkdirSync(empty, { recursive: true });
    await assert.rejects(openDataset(empty), (e: Error) => e.message.includes(empty) && /has no images .* and no class sub-folders/.test(e.message) && !e.message.includes('\n'));
    const flat = join(dir, 'flat');
    mkdirSync(flat, { recursive: true });
    for (const n of ['b.png', 'a.png', 'notes.txt']) writeFileSync(join(flat, n), n.endsWith('.png') ? await encodePng(solidImage(4, 4, [1, 2, 3])) : 'x');
    for (const split of [undefined, 'val', 'test'] as const) {
      const ds = await openDataset(flat, { split });
      assert.deepEqual([ds.size, ds.classes, ds.itemName(0), ds.itemName(1), ds.label(1)], [2, [], 'a.png', 'b.png', -1], `split ${split}`);
      assert.equal((await ds.item(0)).label, -1);
    }
    const ds = await openDataset(flat);
    assert.throws(() => requireLabels(ds, 'training'), (e: Error) => /^training needs labelled images, and .*flat has no class sub-folders/.test(e.message));
    const noImages = join(dir, 'no-images');
    mkdirSync(join(noImages, 'a'), { recursive: true });
    writeFileSync(join(noImages, 'a', 'readme.txt'), 'x');
    await assert.rejects(openDataset(noImages), (e: Error) => e.message.includes(noImages) && /has no images/.test(e.message));
    await assert.rejects(openDataset(join(dir, 'nowhere', 'x')), /no dataset at/);
  });

  test('split sub-folders are used when present; any other folder is one split, cut only for training, and the cut is said', async () => {
    await setup;
    const layered = join(dir, 'layered');
    for (const [split, n] of [['train', 3], ['val', 1]] as const) {
      mkdirSync(join(layered, split, 'k'), { recursive: true });
      for (let i = 0; i < n; i++) writeFileSync(join(layered, split, 'k', `${i}.png`), await encodePng(solidImage(4, 4, [i, 0, 0])));
    }
    assert.equal((await openDataset(layered, { split: 'train' })).size, 3);
    assert.equal((await openDataset(layered, { split: 'val' })).size, 1);
    assert.equal((await openDataset(layered)).size, 3, 'train by default');
    await assert.rejects(openDataset(layered, { split: 'test' }), /has no test folder \(it has train, val\)/);
    const own = await openTrainAndHeldOut(layered);
    assert.deepEqual([own.train.size, own.heldOut.size, own.source, own.note], [3, 1, 'val', undefined]);
    assert.ok(hasOwnSplits(layered) && hasOwnSplits('shapes') && !hasOwnSplits(root));
    const whole = await Promise.all((['train', 'val', 'test'] as const).map((split) => openDataset(root, { split })));
    assert.deepEqual(whole.map((p) => p.size), [10, 10, 10], 'a plain folder is every image, whatever the split');
    const cut = await openTrainAndHeldOut(root);
    assert.deepEqual([cut.train.size, cut.heldOut.size, cut.source], [8, 2, 'cut']);
    assert.equal(cut.note, `${root} has no train/val/test sub-folders: using 8 images for training, 2 for validation (seed 0)`);
    const names = [cut.train, cut.heldOut].flatMap((p) => Array.from({ length: p.size }, (_, i) => p.itemName(i)));
    assert.equal(new Set(names).size, 10, 'disjoint and covering');
    assert.deepEqual(cut.indices!.heldOut.map((i) => whole[0].itemName(i)), [cut.heldOut.itemName(0), cut.heldOut.itemName(1)]);
    assert.deepEqual(cut.train.classes, ['Dog', 'ant', 'bird', 'cat']);
    assert.deepEqual(await openTrainAndHeldOut(root).then((c) => c.indices), cut.indices, 'seeded');
  });
});

describe('splits and permutations', () => {
  test('seededPermutation is a deterministic permutation that depends on the seed', () => {
    const p = seededPermutation(1000, 5);
    assert.deepEqual([...p].sort((a, b) => a - b), Array.from({ length: 1000 }, (_, i) => i));
    assert.deepEqual(seededPermutation(1000, 5), p);
    assert.notDeepEqual(seededPermutation(1000, 6), p);
    assert.notDeepEqual(p, Array.from({ length: 1000 }, (_, i) => i));
  });

  test('splitIndices gives disjoint deterministic sets of the requested sizes', () => {
    const parts = splitIndices(1001, [0.8, 0.1, 0.1], 3);
    assert.deepEqual(parts.map((p) => p.length), [801, 100, 100]);
    const all = parts.flat();
    assert.equal(new Set(all).size, 1001);
    assert.deepEqual(splitIndices(1001, [0.8, 0.1, 0.1], 3), parts);
    assert.notDeepEqual(splitIndices(1001, [0.8, 0.1, 0.1], 4)[1], parts[1]);
    assert.deepEqual(splitIndices(10, [0.5], 1)[0].length, 5);
    assert.throws(() => splitIndices(10, [0.8, 0.3], 1), /sum to 1.1/);
  });
});
