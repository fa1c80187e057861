// Top-k feature visualization (Fig. 2): the streamed top-k against a brute-force sort of every activation, the
// projections against direct projectUnits calls, receptive-field crops against the projections' support, resume
// after an interrupted scan (in the library and by killing the CLI), and the CLI's refusals.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { projectUnits, ZF_SETTINGS } from '../src/analysis/project.js';
import { scanTopk, type TopkResult } from '../src/analysis/topk.js';
import type { TopkEntry } from '../src/analysis/topk-heaps.js';
import { featureOrder, featureViews, topkFigureViews } from '../src/analysis/topk-views.js';
import { main } from '../src/cli/main.js';
import { batches } from '../src/data/batches.js';
import { openDataset, subset, type Dataset } from '../src/data/dataset.js';
import { inputToImage } from '../src/data/image.js';
import { Engine } from '../src/engine/engine.js';
import { createZooModel } from '../src/model/zoo.js';
import { readNpy, sizeOf, type Tensor } from '../src/tensor.js';
import { fileCheckpoint, type CheckpointStore } from '../src/util/checkpoint.js';
import { rectHeight, rectWidth, type Rect } from '../src/util/rect.js';
import { errorLines, ROOT } from './helpers.js';

const CLI = join(ROOT, 'src', 'cli', 'main.ts');
/** Several kinds of layer: early and late rectified maps, a pooled map, and a vector layer (units at (0, 0)). */
const LAYERS = ['relu1', 'pool2', 'relu3', 'relu5', 'relu6'];
const BATCH = 32;
const BROKEN = 7;

let engine: Engine;
let ds: Dataset;
before(async () => {
  engine = new Engine(createZooModel('zfnet-small'));
  // 120 items that are 60 images twice over, so equal activations (ties) are common; item 7 cannot be read.
  const base = await openDataset('shapes:count=60', { split: 'val' });
  const twice = subset(base, Array.from({ length: 120 }, (_, i) => i % 60));
  ds = { ...twice, item: (i) => (i === BROKEN ? Promise.reject(new Error('broken file')) : twice.item(i)) };
});
after(() => engine.dispose());

const tmp = () => mkdtempSync(join(tmpdir(), 'convscope-topk-'));

// ---------------------------------------------------------------- brute force

/** Every activation of every readable image, per layer, with the dataset index of each image. */
async function allActivations(layers: string[]): Promise<{ images: number[]; acts: Map<string, Float32Array[]> }> {
  const images: number[] = [];
  const acts = new Map<string, Float32Array[]>(layers.map((l) => [l, []]));
  const m = engine.model;
  for await (const b of batches(ds, { input: m.input, preprocess: m.preprocess, batchSize: BATCH })) {
    const { activations } = await engine.forward(b.input, layers);
    b.indices.forEach((image, n) => {
      images.push(image);
      for (const l of layers) {
        const t = activations.get(l)!;
        const per = sizeOf(t.shape.slice(1));
        acts.get(l)!.push(t.data.slice(n * per, (n + 1) * per));
      }
    });
  }
  return { images, acts };
}

/** The stated rule: larger value, then lower image index, then lower y, then lower x. */
const byRule = (a: TopkEntry, b: TopkEntry) => b.value - a.value || a.image - b.image || a.y - b.y || a.x - b.x;

/** Sort all positions of each image, keep its `per` best, sort all kept, keep k. */
function bruteTopk(perImageActs: Float32Array[], images: number[], shape: number[], k: number, per: number): TopkEntry[][] {
  const [C, H, W] = shape.length === 3 ? shape : [shape[0], 1, 1];
  return Array.from({ length: C }, (_, f) => {
    const kept: TopkEntry[] = [];
    perImageActs.forEach((act, n) => {
      const all: TopkEntry[] = [];
      for (let p = 0; p < H * W; p++) all.push({ value: act[f * H * W + p], image: images[n], y: Math.floor(p / W), x: p % W });
      kept.push(...all.sort(byRule).slice(0, per));
    });
    return kept.sort(byRule).slice(0, k);
  });
}

function countTies(result: TopkResult): number {
  let ties = 0;
  for (const l of result.layers) for (const es of l.features) for (let i = 1; i < es.length; i++) if (es[i].value === es[i - 1].value) ties++;
  return ties;
}

describe('streamed top-k equals a brute-force sort of all activations', () => {
  let brute: Awaited<ReturnType<typeof allActivations>>;
  before(async () => {
    brute = await allActivations(LAYERS);
  });

  for (const [k, per] of [[9, 1], [9, 3], [5, 16]]) {
    test(`k ${k}, at most ${per} per image, layers ${LAYERS.join(', ')}`, async () => {
      const result = await scanTopk(engine, ds, { layers: LAYERS, k, perImage: per, batchSize: BATCH });
      assert.equal(result.images, 119);
      assert.deepEqual(result.skipped.map((s) => s.index), [BROKEN]);
      assert.deepEqual(result.layers.map((l) => l.layer), LAYERS);
      for (const l of result.layers) {
        const expected = bruteTopk(brute.acts.get(l.layer)!, brute.images, engine.info(l.layer).outShape, k, per);
        assert.equal(l.features.length, expected.length);
        l.features.forEach((entries, f) => assert.deepEqual(entries, expected[f], `${l.layer} feature ${f}`));
      }
      // The duplicated images must have produced ties, or the tie rule went untested.
      assert.ok(countTies(result) > 0, 'no tied values: the tie rule was not exercised');
      if (per === 1) {
        for (const l of result.layers) for (const es of l.features) assert.equal(new Set(es.map((e) => e.image)).size, es.length, 'an image twice with --per-image 1');
      }
    });
  }
});

// ---------------------------------------------------------------- projections and patches

/** One preprocessed image, as the scan saw it. */
async function inputOf(image: number): Promise<Tensor> {
  const m = engine.model;
  for await (const b of batches(ds, { input: m.input, preprocess: m.preprocess, batchSize: 1, indices: [image] })) return b.input;
  throw new Error(`image ${image} did not load`);
}

/** max |a - b| over the clipped rectangle, and the largest |value| of the full projection outside it. */
function compareCrop(full: Tensor, crop: Tensor, rect: Rect): { diff: number; outside: number; scale: number } {
  const [, C, H, W] = full.shape;
  const [y0, x0, y1, x1] = rect;
  let diff = 0, outside = 0, scale = 0;
  for (let c = 0; c < C; c++) {
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const v = full.data[(c * H + y) * W + x];
        scale = Math.max(scale, Math.abs(v));
        if (y >= y0 && y < y1 && x >= x0 && x < x1) diff = Math.max(diff, Math.abs(v - crop.data[(c * (y1 - y0) + y - y0) * (x1 - x0) + x - x0]));
        else outside = Math.max(outside, Math.abs(v));
      }
    }
  }
  return { diff, outside, scale };
}

describe('projections and patches', () => {
  test('each projection equals a direct projectUnits call; its support lies inside the patch rectangle', async () => {
    const result = await scanTopk(engine, ds, { layers: ['relu1', 'relu2', 'relu5'], batchSize: BATCH });
    let clippedSeen = 0;
    for (const [layer, feature] of [['relu1', 3], ['relu2', 5], ['relu2', 40], ['relu5', 7]] as const) {
      const topk = result.layers.find((l) => l.layer === layer)!;
      const views = await featureViews(engine, ds, topk, feature, { batchUnits: 4 });
      assert.equal(views.length, 9);
      for (const [rank, v] of views.entries()) {
        assert.deepEqual(v.entry, topk.features[feature][rank]);
        const input = await inputOf(v.entry.image);
        const [direct] = await projectUnits(engine, input, layer, [{ feature, y: v.entry.y, x: v.entry.x }], ZF_SETTINGS);
        const { diff, outside, scale } = compareCrop(direct.projection, v.projection, v.field.clipped);
        assert.ok(scale > 0, `${layer} f${feature}: direct projection is all zero`);
        assert.ok(diff <= 1e-6 * scale, `${layer} f${feature} image ${v.entry.image}: crop differs from projectUnits by ${diff} (scale ${scale})`);
        assert.equal(outside, 0, `${layer} f${feature} image ${v.entry.image}: projection is non-zero outside the receptive field`);
        const [y0, x0, y1, x1] = v.field.clipped;
        const img = inputToImage(input, engine.model.preprocess);
        for (let y = y0; y < y1; y++) {
          const row = img.data.subarray((y * img.width + x0) * 3, (y * img.width + x1) * 3);
          assert.deepEqual(v.patch.data.subarray((y - y0) * (x1 - x0) * 3, (y - y0 + 1) * (x1 - x0) * 3), row, `patch row ${y}`);
        }
        const { cut, full } = v.field;
        assert.deepEqual([rectHeight(full), rectWidth(full)], engine.info(layer).rf.size);
        if (cut.top + cut.bottom + cut.left + cut.right > 0) clippedSeen++;
      }
      // relu1 and relu2 fields are smaller than the image: the support test is a real constraint there.
      if (layer !== 'relu5') assert.ok(Math.max(...engine.info(layer).rf.size) < 64);
    }
    assert.ok(clippedSeen > 0, 'no unit at the border: clipping went untested');
  });
});

describe('compiled graphs', () => {
  test('a layer whose pages are done frees its projection graphs; a release waits for a projection still running', async () => {
    const own = new Engine(createZooModel('zfnet-small', { seed: 3, init: 'kaiming' }));
    try {
      const result = await scanTopk(own, ds, { layers: ['relu1', 'relu2'], k: 2, batchSize: BATCH });
      const figure = topkFigureViews(own, ds, result, { perPage: 64 });
      const projections = () => own.compiledGraphs().filter((k) => k.startsWith('project:'));
      for (const layout of figure.layers) {
        for await (const page of figure.pages(layout)) {
          assert.ok(page.views.length > 0);
          assert.equal(projections().length, 1, `while ${layout.topk.layer}'s pages are drawn, its projection graph is compiled`);
        }
        assert.deepEqual(projections(), [], `after ${layout.topk.layer}'s pages, none is held`);
      }
      // A release while a projection from the layer is running lets it finish; the next one compiles again.
      const input = await inputOf(result.layers[0].features[0][0].image);
      const unit = { feature: 0, y: result.layers[0].features[0][0].y, x: result.layers[0].features[0][0].x };
      const [before] = await projectUnits(own, input, 'relu1', [unit], ZF_SETTINGS);
      const running = projectUnits(own, input, 'relu1', [unit], ZF_SETTINGS);
      await own.releaseProjections('relu1');
      assert.deepEqual((await running)[0].projection, before.projection);
      assert.deepEqual(projections(), []);
      assert.deepEqual((await projectUnits(own, input, 'relu1', [unit], ZF_SETTINGS))[0].projection, before.projection);
      assert.equal(projections().length, 1);
    } finally {
      await own.dispose();
    }
  });

  test('an engine that keeps the projection graphs of two layers frees the least recently projected one', async () => {
    const own = new Engine(createZooModel('zfnet-small', { seed: 3, init: 'kaiming' }), { projectionLayers: 2 });
    try {
      const input = await inputOf(0);
      const layersHeld = () => own.compiledGraphs().filter((k) => k.startsWith('project:')).map((k) => own.model.layers[Number(k.split(':')[1])].name).sort();
      const project = async (layer: string) => (await projectUnits(own, input, layer, [{ feature: 1, y: 1, x: 1 }], ZF_SETTINGS))[0].projection;
      const first = await project('relu1');
      await project('relu2');
      await project('relu1'); // relu1 is now the more recent
      await project('relu3');
      assert.deepEqual(layersHeld(), ['relu1', 'relu3'], 'relu2, the least recently projected, was freed');
      assert.deepEqual(await project('relu1'), first, 'a kept layer projects as before');
      await project('relu2');
      assert.deepEqual(layersHeld(), ['relu1', 'relu2']);
    } finally {
      await own.dispose();
    }
    assert.throws(() => new Engine(createZooModel('zfnet-small'), { projectionLayers: 0 }), /projectionLayers must be at least 1/);
  });
});

// ---------------------------------------------------------------- resume

describe('resume', () => {
  test('a scan stopped after a checkpoint and resumed equals one uninterrupted scan', async () => {
    const dir = tmp();
    const options = { layers: ['relu2', 'relu4'], k: 9, perImage: 2, batchSize: 16 };
    const whole = await scanTopk(engine, ds, { ...options, checkpoint: fileCheckpoint(join(dir, 'whole.json')), checkpointEvery: 1 });
    const checkpointPath = join(dir, 'cut.json');
    const checkpoint = fileCheckpoint(checkpointPath);
    const stop = new AbortController();
    await assert.rejects(
      scanTopk(engine, ds, { ...options, checkpoint, checkpointEvery: 2, signal: stop.signal, onProgress: (done) => done >= 48 && stop.abort(new Error('stopped')) }),
      /stopped/,
    );
    const saved = JSON.parse(readFileSync(checkpointPath, 'utf8')) as { nextBatch: number };
    assert.equal(saved.nextBatch, 2, 'the last checkpoint before the stop is after batch 2');
    const resumed = await scanTopk(engine, ds, { ...options, checkpoint, checkpointEvery: 2, resume: true });
    assert.equal(resumed.resumedAt, 2);
    const { resumedAt, ...rest } = resumed;
    assert.deepEqual(rest, whole);
    await assert.rejects(scanTopk(engine, ds, { ...options, k: 4, checkpoint, resume: true }), /another scan: its k is 9, this one's 4/);
  });

  test('stopped after any batch and resumed, the scan equals the uninterrupted one', async () => {
    const options = { layers: ['relu2'], k: 9, perImage: 2, batchSize: 16, checkpointEvery: 1 };
    const whole = await scanTopk(engine, ds, options);
    const batches = Math.ceil(ds.size / options.batchSize);
    for (let stopAt = 1; stopAt < batches; stopAt++) {
      const checkpoint = fileCheckpoint(join(tmp(), 'cut.json'));
      const stop = new AbortController();
      await assert.rejects(scanTopk(engine, ds, { ...options, checkpoint, signal: stop.signal, onProgress: (done) => done >= stopAt * options.batchSize && stop.abort(new Error('killed')) }), /killed/);
      const { resumedAt, ...rest } = await scanTopk(engine, ds, { ...options, checkpoint, resume: true });
      assert.equal(resumedAt, stopAt, `stopped after batch ${stopAt}`);
      assert.deepEqual(rest, whole, `resumed after batch ${stopAt}`);
    }
  });

  test('the scan keeps its checkpoint in whatever store it is given', async () => {
    let saved: unknown;
    const memory: CheckpointStore = { name: 'memory', read: () => saved, write: (value) => (saved = structuredClone(value)) };
    const options = { layers: ['relu3'], k: 3, batchSize: 32 };
    await assert.rejects(scanTopk(engine, ds, { ...options, checkpoint: memory, resume: true }), /no checkpoint at memory to resume/);
    const whole = await scanTopk(engine, ds, { ...options, checkpoint: memory });
    const file = join(tmp(), 'checkpoint.json');
    await scanTopk(engine, ds, { ...options, checkpoint: fileCheckpoint(file) });
    assert.deepEqual(saved, JSON.parse(readFileSync(file, 'utf8')));
    const { resumedAt, ...resumed } = await scanTopk(engine, ds, { ...options, checkpoint: memory, resume: true });
    assert.equal(resumedAt, 4, 'the final checkpoint is past the last batch');
    assert.deepEqual(resumed, whole);
  });

  test('the CLI killed mid-scan resumes to the same entries; its pages, order and .npy projections', async () => {
    const dir = tmp();
    const args = ['topk', '--model', 'zfnet-small', '--data', 'shapes:count=400', '--split', 'val', '--layers', 'relu1,relu5', '--k', '2', '--batch-size', '4', '--checkpoint-every', '1', '--out', dir];
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, stdio: 'ignore' });
    const exited = new Promise((resolve) => child.on('exit', resolve));
    const checkpoint = join(dir, 'checkpoint.json');
    while (!existsSync(checkpoint)) {
      assert.equal(child.exitCode, null, 'the CLI ended before its first checkpoint');
      await sleep(10);
    }
    child.kill('SIGKILL');
    await exited;
    const { nextBatch } = JSON.parse(readFileSync(checkpoint, 'utf8')) as { nextBatch: number };
    assert.ok(nextBatch < 100, `killed too late: the scan had reached batch ${nextBatch} of 100`);
    assert.ok(!existsSync(join(dir, 'index.json')));

    assert.equal(await main([...args, '--resume']), 0);
    const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as {
      layers: {
        layer: string;
        npy: string;
        pages: { file: string; features: number[] }[];
        features: { entries: (TopkEntry & { field: { clipped: [number, number, number, number]; frame: [number, number, number, number] }; npyIndex: [number, number] })[] }[];
      }[];
    };
    for (const l of index.layers) {
      assert.deepEqual(l.pages.flatMap((p) => p.features), l.features.map((_, f) => f), `${l.layer}: pages in feature order`);
      assert.equal(l.pages.length, Math.ceil(l.features.length / 16));
      for (const p of l.pages) assert.ok(existsSync(join(dir, p.file)), p.file);
    }
    const data = await openDataset('shapes:count=400', { split: 'val' });
    const expected = await scanTopk(engine, data, { layers: ['relu1', 'relu5'], k: 2, batchSize: 4 });
    const byMax = featureOrder(expected.layers[1], 'max');
    const best = (f: number) => expected.layers[1].features[f][0].value;
    assert.deepEqual([...byMax].sort((a, b) => a - b), expected.layers[1].features.map((_, f) => f));
    for (let i = 1; i < byMax.length; i++) assert.ok(best(byMax[i - 1]) > best(byMax[i]) || (best(byMax[i - 1]) === best(byMax[i]) && byMax[i - 1] < byMax[i]));
    for (const [i, l] of index.layers.entries()) {
      const strip = l.features.map((f) => f.entries.map(({ value, image, y, x }) => ({ value, image, y, x })));
      assert.deepEqual(strip, expected.layers[i].features, `${l.layer}: resumed entries`);
      // Projections in the .npy (in their frames) against direct calls, for the best and a border unit.
      const npy = readNpy(join(dir, l.npy));
      const [, , C, fh, fw] = npy.shape;
      const entries = l.features.flatMap((f) => f.entries);
      const border = entries.find((e) => e.field.clipped[0] === 0 || e.field.clipped[2] === 0) ?? entries[0];
      for (const e of [entries[0], border]) {
        const feature = l.features.findIndex((f) => f.entries.includes(e));
        const m = engine.model;
        let input: Tensor | undefined;
        for await (const b of batches(data, { input: m.input, preprocess: m.preprocess, batchSize: 1, indices: [e.image] })) input = b.input;
        const [direct] = await projectUnits(engine, input!, l.layer, [{ feature, y: e.y, x: e.x }], ZF_SETTINGS);
        const [H, W] = [m.input[1], m.input[2]];
        const [oy, , ox] = e.field.frame;
        const base = (e.npyIndex[0] * npy.shape[1] + e.npyIndex[1]) * C * fh * fw;
        let diff = 0, scale = 0;
        for (let c = 0; c < C; c++) {
          for (let y = 0; y < fh; y++) {
            for (let x = 0; x < fw; x++) {
              const [iy, ix] = [oy + y, ox + x];
              const want = iy >= 0 && iy < H && ix >= 0 && ix < W ? direct.projection.data[(c * H + iy) * W + ix] : 0;
              diff = Math.max(diff, Math.abs(npy.data[base + (c * fh + y) * fw + x] - want));
              scale = Math.max(scale, Math.abs(want));
            }
          }
        }
        assert.ok(scale > 0 && diff <= 1e-6 * scale, `${l.layer} image ${e.image}: npy frame differs by ${diff} (scale ${scale})`);
      }
    }
  });
});

// ---------------------------------------------------------------- refusals

describe('convscope topk refuses bad input with one line, exit 2 and no output', () => {
  for (const [what, extra, message] of [
    ['an unknown layer', ['--data', 'shapes:count=8', '--layers', 'relu2,conv9'], /unknown layer 'conv9'/],
    ['missing data', ['--data', '/nonexistent/images'], /no dataset at \/nonexistent\/images/],
    ['no images', ['--data', 'shapes:count=0'], /shapes:size=64,seed=0,count=0 \(val\) has no images to scan/],
  ] as const) {
    test(what, () => {
      const out = join(tmp(), 'out');
      const r = spawnSync(process.execPath, ['--import', 'tsx', CLI, 'topk', '--model', 'zfnet-small', ...extra, '--out', out], { cwd: ROOT, encoding: 'utf8' });
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, message);
      assert.equal(errorLines(r.stderr).length, 1, r.stderr);
      assert.ok(!existsSync(out), 'output folder was created');
    });
  }
});
