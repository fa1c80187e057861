import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import sharp from 'sharp';
import { decodeImage, fitImage, imageToInput, inputToImage, loadInput, resizeImage, toChannels, type RgbImage } from '../src/data/image.js';
import { encodePng } from '../src/render/figure.js';
import { fixture, fixtureNpy } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'convscope-image-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const MEAN = [123.68, 116.78, 103.94];

/** Pixel values that differ across position and channel, so transposed or shifted data shows. */
function pattern(width: number, height: number, channels: 1 | 3): RgbImage {
  const data = new Uint8Array(width * height * channels);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37 + ((i / channels) | 0) * 11) & 255;
  return { width, height, channels, data };
}

function rawOf(img: RgbImage): { raw: { width: number; height: number; channels: 1 | 3 } } {
  return { raw: { width: img.width, height: img.height, channels: img.channels } };
}

describe('decodeImage', () => {
  test('fixture PNG through loadInput equals the fixture tensor exactly', async () => {
    const ref = fixtureNpy('input.npy');
    const ours = await loadInput(fixture('input.png'), { input: [3, 64, 64], preprocess: { mean: MEAN, std: [1, 1, 1] } });
    assert.deepEqual(ours.shape, ref.shape);
    let mismatches = 0;
    for (let i = 0; i < ref.data.length; i++) if (ours.data[i] !== ref.data[i]) mismatches++;
    assert.equal(mismatches, 0, `${mismatches} of ${ref.data.length} values differ`);
  });

  test('PNG round trip, RGB and grey, keeps every byte and the channel count', async () => {
    for (const img of [pattern(7, 5, 3), pattern(6, 9, 1)]) {
      const p = join(dir, `round-${img.channels}.png`);
      writeFileSync(p, await encodePng(img));
      const back = await decodeImage(p);
      assert.deepEqual(back, img);
    }
  });

  test('JPEG decodes to the right size, close to its source', async () => {
    const img: RgbImage = { width: 24, height: 16, channels: 3, data: new Uint8Array(24 * 16 * 3) };
    for (let i = 0; i < 24 * 16; i++) img.data.set([200, 100, 50], 3 * i);
    const p = join(dir, 'flat.jpg');
    await sharp(Buffer.from(img.data), rawOf(img)).jpeg({ quality: 95 }).toFile(p);
    const back = await decodeImage(p);
    assert.equal(back.width, 24);
    assert.equal(back.height, 16);
    assert.equal(back.channels, 3);
    for (let i = 0; i < back.data.length; i++) assert.ok(Math.abs(back.data[i] - img.data[i]) <= 3, `byte ${i}: ${back.data[i]} vs ${img.data[i]}`);
  });

  test('lossless WebP decodes exactly', async () => {
    const img = pattern(10, 6, 3);
    const p = join(dir, 'x.webp');
    await sharp(Buffer.from(img.data), rawOf(img)).webp({ lossless: true }).toFile(p);
    assert.deepEqual(await decodeImage(p), img);
  });

  test('16-bit PNG becomes 8-bit by value, not by byte', async () => {
    const u16 = new Uint16Array(12).map((_, i) => i * 5000);
    const p = join(dir, 'deep.png');
    await sharp(u16, { raw: { width: 2, height: 2, channels: 3 } }).toColourspace('rgb16').png().toFile(p);
    const img = await decodeImage(p);
    assert.deepEqual([...img.data], [...u16].map((v) => Math.round(v / 257)));
  });

  test('alpha is flattened on white', async () => {
    // pixel 0 transparent, pixel 1 opaque black, pixel 2 half-transparent black
    const rgba = Buffer.from([0, 0, 0, 0, 0, 0, 0, 255, 0, 0, 0, 128]);
    const p = join(dir, 'alpha.png');
    await sharp(rgba, { raw: { width: 3, height: 1, channels: 4 } }).png().toFile(p);
    const img = await decodeImage(p);
    assert.equal(img.channels, 3);
    assert.deepEqual([...img.data.subarray(0, 6)], [255, 255, 255, 0, 0, 0]);
    for (const v of img.data.subarray(6)) assert.ok(Math.abs(v - 127) <= 1, `half alpha gave ${v}`);
  });

  test('a missing file names the path', async () => {
    const p = join(dir, 'nope.png');
    await assert.rejects(decodeImage(p), { message: `cannot read ${p}: no such file` });
  });

  test('garbage and truncated files give a one-line decode error', async () => {
    const garbage = join(dir, 'garbage.png');
    writeFileSync(garbage, 'this is not an image\n');
    const whole = await encodePng(pattern(40, 40, 3));
    const truncated = join(dir, 'truncated.png');
    writeFileSync(truncated, whole.subarray(0, whole.length >> 1));
    for (const p of [garbage, truncated]) {
      await assert.rejects(decodeImage(p), (e: Error) => {
        assert.ok(e.message.startsWith(`cannot decode image ${p}: `), e.message);
        assert.ok(e.message.length > `cannot decode image ${p}: `.length, 'reason is empty');
        assert.ok(!e.message.includes('\n'), `multi-line: ${JSON.stringify(e.message)}`);
        return true;
      });
    }
  });
});

describe('fitImage', () => {
  /**
   * Value slope*x (or slope*y): a ramp survives the filter up to the discrete centroid of its taps (at most half a
   * source pixel) plus rounding, so source positions can be read back from output values.
   */
  function ramp(width: number, height: number, axis: 'x' | 'y', slope: number): RgbImage {
    const img: RgbImage = { width, height, channels: 1, data: new Uint8Array(width * height) };
    for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) img.data[y * width + x] = slope * (axis === 'x' ? x : y);
    return img;
  }
  const tolerance = (slope: number): number => 0.5 * slope + 0.5;

  test('100x50 -> 32x32 scales the short side to 32 and keeps the middle of the long side', () => {
    const out = fitImage(ramp(100, 50, 'x', 2), [32, 32], 1);
    assert.equal(out.width, 32);
    assert.equal(out.height, 32);
    // resized to 64x32, crop columns 16..47 of it, whose centres are source x = (16 + j + 0.5) / 0.64 - 0.5
    for (let j = 0; j < 32; j++) {
      const expected = 2 * ((16 + j + 0.5) / 0.64 - 0.5);
      for (let y = 0; y < 32; y++) assert.ok(Math.abs(out.data[y * 32 + j] - expected) <= tolerance(2), `col ${j}: ${out.data[y * 32 + j]} vs ${expected}`);
    }
  });

  test('a tall image keeps its middle rows', () => {
    const out = fitImage(ramp(50, 100, 'y', 2), [32, 32], 1);
    for (let i = 0; i < 32; i++) {
      const expected = 2 * ((16 + i + 0.5) / 0.64 - 0.5);
      assert.ok(Math.abs(out.data[i * 32 + 5] - expected) <= tolerance(2), `row ${i}: ${out.data[i * 32 + 5]} vs ${expected}`);
    }
  });

  test('non-square target crops the overflowing side only', () => {
    const out = fitImage(ramp(200, 100, 'x', 1), [50, 60], 1);
    assert.deepEqual([out.width, out.height], [60, 50]);
    // scale 0.5: resized 100 wide, crop left = 20
    for (let j = 0; j < 60; j++) {
      const expected = (20 + j + 0.5) / 0.5 - 0.5;
      assert.ok(Math.abs(out.data[j] - expected) <= tolerance(1), `col ${j}: ${out.data[j]} vs ${expected}`);
    }
  });

  test('an image already at the target size is unchanged', () => {
    const img = pattern(16, 16, 3);
    assert.deepEqual(fitImage(img, [16, 16], 3), img);
  });

  test('shrinking averages (antialiased) instead of sampling', () => {
    // 1-pixel stripes shrunk 7x: output centres fall on pixel centres, so point-sampled bilinear
    // would give 0 or 255; a filter that widens with the shrink gives mid grey
    const img: RgbImage = { width: 63, height: 63, channels: 1, data: new Uint8Array(63 * 63) };
    for (let i = 0; i < img.data.length; i++) img.data[i] = (i % 63) % 2 ? 255 : 0;
    const out = fitImage(img, [9, 9], 1);
    for (const v of out.data) assert.ok(Math.abs(v - 127.5) < 8, `got ${v}`);
  });

  test('grey <-> RGB conversion', () => {
    const red: RgbImage = { width: 1, height: 1, channels: 3, data: new Uint8Array([255, 0, 0]) };
    assert.deepEqual([...fitImage(red, [1, 1], 1).data], [Math.round(0.299 * 255)]);
    const grey: RgbImage = { width: 2, height: 1, channels: 1, data: new Uint8Array([10, 200]) };
    assert.deepEqual([...fitImage(grey, [1, 2], 3).data], [10, 10, 10, 200, 200, 200]);
  });

  test('resizeImage stretches to an exact size', () => {
    const out = resizeImage(pattern(10, 10, 3), [4, 7]);
    assert.deepEqual([out.width, out.height, out.channels], [7, 4, 3]);
  });
});

describe('network input', () => {
  test('imageToInput is (u8 - mean) / std in NCHW and inputToImage inverts it', () => {
    const img = pattern(5, 4, 3);
    const pre = { mean: [120, 110, 100], std: [58.4, 57.1, 57.4] };
    const t = imageToInput(img, pre);
    assert.deepEqual(t.shape, [1, 3, 4, 5]);
    // channel 2, row 3, column 1
    const u = img.data[(3 * 5 + 1) * 3 + 2];
    assert.ok(Math.abs(t.data[2 * 20 + 3 * 5 + 1] - (u - 100) / 57.4) < 1e-5);
    assert.deepEqual(inputToImage(t, pre), img);
  });

  test('a mean image replaces the per-channel mean', () => {
    const img = pattern(3, 2, 1);
    const meanImage = { shape: [1, 2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) };
    const pre = { mean: [0], std: [1], meanImage };
    const t = imageToInput(img, pre);
    for (let i = 0; i < 6; i++) assert.equal(t.data[i], img.data[i] - meanImage.data[i]);
    assert.deepEqual(inputToImage(t, pre), img);
    assert.throws(() => imageToInput(pattern(4, 2, 1), pre), /mean image has shape/);
  });

  test('inputToImage clamps to 0..255', () => {
    const t = { shape: [1, 1, 1, 2], data: new Float32Array([-1000, 1000]) };
    assert.deepEqual([...inputToImage(t, { mean: [0], std: [1] }).data], [0, 255]);
  });

  test('loadInput converts to the model channels and size', async () => {
    const t = await loadInput(fixture('input.png'), { input: [1, 32, 32], preprocess: { mean: [0], std: [1] } });
    assert.deepEqual(t.shape, [1, 1, 32, 32]);
    // halving a 64 px image keeps its average brightness: the grey input's mean is the RGB source's mean luma
    const rgb = await decodeImage(fixture('input.png'));
    const luma = toChannels(rgb, 1).data.reduce((a, v) => a + v, 0) / (64 * 64);
    const mean = t.data.reduce((a, v) => a + v, 0) / (32 * 32);
    assert.ok(Math.abs(mean - luma) < 1, `mean ${mean} vs luma ${luma}`);
  });
});

