// Correspondence (Table 1): Δ's arithmetic by hand, parts.json validation, and a constructed set where the answer
// is known: a patch shared by every image moves the features consistently, unrelated regions do not.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { correspondence, delta, mapRect, paperLayers57, parseParts, prepareImages, signHamming } from '../src/analysis/correspondence.js';
import type { Rect } from '../src/util/rect.js';
import type { RgbImage } from '../src/data/image.js';
import { Engine } from '../src/engine/engine.js';
import { createZooModel } from '../src/model/zoo.js';
import { encodePng } from '../src/render/figure.js';
import { Rng } from '../src/util/random.js';
import { errorLines, ROOT } from './helpers.js';

describe('Δ arithmetic', () => {
  test('Hamming distance of signs, as a fraction of the length; zero is a sign of its own', () => {
    assert.equal(signHamming([1, -2, 0, 3], [2, 1, 0, -1]), 2 / 4);
    assert.equal(signHamming([0.001, -5, 0, 0, 7], [9, -0.1, 0, 1, 7]), 1 / 5);
    assert.equal(signHamming([1, 2], [1, 2]), 0);
    assert.throws(() => signHamming([1], [1, 2]), /differ in length/);
  });

  test('Δ is the mean over unordered pairs; ± is the spread of the pair distances', () => {
    const eps = [
      [1, 1, 1, 1],
      [1, 1, 1, -1],
      [-1, -1, 1, -1],
    ];
    // Pairs (0,1) 1/4, (0,2) 3/4, (1,2) 2/4.
    const d = delta(eps);
    assert.deepEqual(d.pairs, [0.25, 0.75, 0.5]);
    assert.ok(Math.abs(d.delta - 0.5) < 1e-12);
    assert.ok(Math.abs(d.pairStd - Math.sqrt((0.0625 + 0.0625 + 0) / 3)) < 1e-12);
    assert.throws(() => delta([[1]]), /at least 2 images/);
  });
});

describe('parts.json', () => {
  const good = { images: { 'a.png': { eye: [1, 2, 5, 6], nose: [0, 0, 3, 3] }, 'b.png': { nose: [2, 2, 4, 4], eye: [3, 3, 7, 7] } } };

  test('reads rectangles per image per part, in image coordinates by default', () => {
    const s = parseParts(JSON.stringify(good));
    assert.equal(s.coordinates, 'image');
    assert.deepEqual(s.parts, ['eye', 'nose']);
    assert.deepEqual(s.images[1], { file: 'b.png', parts: { nose: [2, 2, 4, 4], eye: [3, 3, 7, 7] } });
  });

  const malformed: [string, string, RegExp][] = [
    ['not JSON', '{images:', /not valid JSON/],
    ['no images', '{"parts": {}}', /must look like/],
    ['one image', JSON.stringify({ images: { 'a.png': { eye: [0, 0, 1, 1] } } }), /at least 2 images/],
    ['three numbers', JSON.stringify({ images: { ...good.images, 'c.png': { eye: [0, 0, 1], nose: [0, 0, 1, 1] } } }), /c\.png 'eye' must be \[y0, x0, y1, x1\]/],
    ['empty rectangle', JSON.stringify({ images: { ...good.images, 'c.png': { eye: [4, 0, 4, 1], nose: [0, 0, 1, 1] } } }), /is empty/],
    ['negative', JSON.stringify({ images: { ...good.images, 'c.png': { eye: [-1, 0, 4, 1], nose: [0, 0, 1, 1] } } }), /non-negative integers/],
    ['different parts', JSON.stringify({ images: { ...good.images, 'c.png': { eye: [0, 0, 1, 1] } } }), /same parts; 'nose'/],
    ['bad coordinates', JSON.stringify({ ...good, coordinates: 'pixels' }), /coordinates must be "image" or "input"/],
  ];
  for (const [what, text, message] of malformed) {
    test(`rejects ${what}`, () => assert.throws(() => parseParts(text), message));
  }

  test('image coordinates map through the fit (resize the short side, centre crop)', () => {
    // 128 x 256 -> scale 0.5 -> 64 x 128, crop 32 columns off each side.
    assert.deepEqual(mapRect([10, 80, 30, 120], [128, 256], [64, 64]), [5, 8, 15, 28]);
    // Partly cropped away: clipped to what the model sees.
    assert.deepEqual(mapRect([0, 40, 20, 80], [128, 256], [64, 64]), [0, 0, 10, 8]);
    assert.throws(() => mapRect([0, 0, 20, 40], [128, 256], [64, 64]), /outside the centre crop/);
    assert.throws(() => mapRect([120, 0, 130, 10], [128, 256], [64, 64]), /outside the 256x128 image/);
  });

  test('input coordinates are used as they are and must lie inside the model input', () => {
    const model = createZooModel('zfnet-small');
    const image: RgbImage = { width: 64, height: 64, channels: 3, data: new Uint8Array(64 * 64 * 3) };
    assert.deepEqual(prepareImages([{ name: 'a', image, parts: { eye: [3, 4, 64, 9] } }], 'input', model)[0].parts.eye, [3, 4, 64, 9]);
    assert.throws(() => prepareImages([{ name: 'a', image, parts: { eye: [3, 4, 65, 9] } }], 'input', model), /a 'eye' \[3, 4, 65, 9\] lies outside the 64x64 model input/);
  });
});

/** A smooth two-colour wave with noise: a different background per seed. */
function background(seed: number, S: number): RgbImage {
  const rng = new Rng(seed);
  const a = [0, 1, 2].map(() => 40 + rng.int(170)), b = [0, 1, 2].map(() => 40 + rng.int(170));
  const fy = 1 + 3 * rng.next(), fx = 1 + 3 * rng.next();
  const data = new Uint8Array(S * S * 3);
  for (let y = 0; y < S; y++) {
    for (let x = 0; x < S; x++) {
      const t = 0.5 + 0.5 * Math.sin((fy * y + fx * x) / 6);
      for (let c = 0; c < 3; c++) data[(y * S + x) * 3 + c] = Math.round(a[c] * t + b[c] * (1 - t) + 8 * rng.next() - 4);
    }
  }
  return { width: S, height: S, channels: 3, data };
}

/** A black-and-white checkerboard: the "eye" every image shares. */
function drawPatch(img: RgbImage, [y0, x0, y1, x1]: Rect): void {
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) img.data.set(((Math.floor((y - y0) / 2) + Math.floor((x - x0) / 2)) & 1) === 0 ? [255, 255, 255] : [0, 0, 0], (y * img.width + x) * 3);
  }
}

const P = 12;
const POSITIONS = [[5, 8], [40, 30], [20, 45], [48, 6], [10, 35]];
/** Per image: the patch, and a "decoy" of the same size elsewhere on plain background. */
function constructedSet(): { name: string; image: RgbImage; parts: Record<string, Rect> }[] {
  return POSITIONS.map(([y, x], i) => {
    const image = background(100 + i, 64);
    const patch: Rect = [y, x, y + P, x + P];
    drawPatch(image, patch);
    const dy = (y + 26) % 52, dx = (x + 30) % 52;
    return { name: `im${i}.png`, image, parts: { patch, decoy: [dy, dx, dy + P, dx + P] } };
  });
}

describe('correspondence on constructed images', () => {
  const model = createZooModel('zfnet-small', { seed: 1 });
  const engine = new Engine(model, { threads: 2 });
  after(() => engine.dispose());
  const images = prepareImages(constructedSet(), 'input', model);
  const layers = paperLayers57(model);

  test("the paper's layers 5 and 7 are relu5 and relu7", () => assert.deepEqual(layers, ['relu5', 'relu7']));

  test('occluding the shared patch moves features consistently: Δ below every random draw and below the decoy', async () => {
    const r = await correspondence(engine, images, { layers, draws: 8, seed: 3, batch: 5 });
    assert.deepEqual(r.rows.map((row) => row.name), ['patch', 'decoy', 'random']);
    const [patch, decoy, random] = r.rows;
    for (const l of layers) {
      const draws = random.layers[l].draws!;
      assert.equal(draws.length, 8);
      assert.ok(Math.abs(random.layers[l].delta - draws.reduce((a, b) => a + b, 0) / 8) < 1e-12);
      assert.ok(patch.layers[l].delta < Math.min(...draws), `${l}: patch ${patch.layers[l].delta} vs random ${draws}`);
      assert.ok(patch.layers[l].delta < decoy.layers[l].delta, `${l}: patch ${patch.layers[l].delta} vs decoy ${decoy.layers[l].delta}`);
    }
    // Random regions have the parts' size, lie inside the image, and come from the seed.
    for (const draw of random.rects) {
      for (const [y0, x0, y1, x1] of draw) assert.ok(y1 - y0 === P && x1 - x0 === P && y0 >= 0 && x0 >= 0 && y1 <= 64 && x1 <= 64);
    }
    const again = await correspondence(engine, images, { layers: ['relu5'], draws: 8, seed: 3 });
    assert.deepEqual(again.rows[2].rects, random.rects);
    assert.equal(again.rows[0].layers.relu5.delta, patch.layers.relu5.delta, 'batching does not change Δ');
    const other = await correspondence(engine, images, { layers: ['relu5'], draws: 8, seed: 4 });
    assert.notDeepEqual(other.rows[2].rects, random.rects);
  });
});

describe('convscope correspond', () => {
  const CLI = join(ROOT, 'src', 'cli', 'main.ts');
  const run = (args: string[]) => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', CLI, 'correspond', '--model', 'zfnet-small', '--random', '3', ...args], { cwd: ROOT, encoding: 'utf8' });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  };
  const dir = mkdtempSync(join(tmpdir(), 'convscope-cor-'));
  const set = constructedSet();
  const parts = (over: Record<string, unknown> = {}) => {
    const p = join(mkdtempSync(join(tmpdir(), 'convscope-parts-')), 'parts.json');
    writeFileSync(p, JSON.stringify({ images: Object.fromEntries(set.map((s) => [s.name, s.parts])), ...over }));
    return p;
  };

  before(async () => {
    for (const s of set) writeFileSync(join(dir, s.name), await encodePng(s.image));
  });

  test('writes the table (Markdown and JSON) and the figure', () => {
    const out = join(dir, 'out');
    const r = run(['--images', dir, '--parts', parts(), '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readdirSync(out).sort(), ['correspondence.json', 'correspondence.md', 'correspondence.png']);
    assert.match(readFileSync(join(out, 'correspondence.md'), 'utf8'), /\| patch \| \d\.\d{3} ± \d\.\d{3} \| \d\.\d{3} ± \d\.\d{3} \|/);
    const json = JSON.parse(readFileSync(join(out, 'correspondence.json'), 'utf8'));
    assert.deepEqual(json.layers, ['relu5', 'relu7']);
    assert.equal(json.rows[2].layers.relu5.draws.length, 3);
  });

  const bad: [string, () => string[], RegExp][] = [
    ['malformed parts.json', () => {
      const p = join(mkdtempSync(join(tmpdir(), 'convscope-parts-')), 'parts.json');
      writeFileSync(p, '{"images": [1, 2]}');
      return ['--images', dir, '--parts', p];
    }, /must look like/],
    ['rectangle outside the image', () => ['--images', dir, '--parts', parts({ images: { 'im0.png': { patch: [60, 0, 70, 10] }, 'im1.png': { patch: [0, 0, 10, 10] } } })], /im0\.png 'patch' \[60, 0, 70, 10\] lies outside the 64x64 image/],
    ['missing image', () => ['--images', dir, '--parts', parts({ images: { 'im0.png': { patch: [0, 0, 4, 4] }, 'gone.png': { patch: [0, 0, 4, 4] } } })], /cannot read .*gone\.png: no such file/],
    ['unknown layer', () => ['--images', dir, '--parts', parts(), '--layers', 'relu5,fc9'], /unknown layer 'fc9'/],
    ['no parts file', () => ['--images', dir], /give --images DIR and --parts parts\.json, or --data/],
  ];
  for (const [what, args, message] of bad) {
    test(`bad input (${what}): one line, exit 2, no output`, () => {
      const out = join(mkdtempSync(join(tmpdir(), 'convscope-cor-')), 'out');
      const r = run([...args(), '--out', out]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
      assert.equal(errorLines(r.stderr).length, 1, r.stderr);
      assert.ok(!existsSync(out), 'no output folder');
    });
  }
});
