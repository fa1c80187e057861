// Occlusion (Fig. 7) and Captum's Occlusion: fixture parity, paper maps against a brute-force loop, incremental
// inference against full recomputation, grid geometry, and the CLI.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { defaultGeometry, fillImage, localisationScore, occludeInto, occlusionGrid, occlusionMaps, type OcclusionOptions, type PaperMaps } from '../src/analysis/occlusion.js';
import { projectUnit, ZF_SETTINGS } from '../src/analysis/project.js';
import { imageToInput, inputToImage, toChannels } from '../src/data/image.js';
import { attributionFigure, paperFigures } from '../src/render/occlusion.js';
import { testPattern } from '../src/data/pattern.js';
import { Engine } from '../src/engine/engine.js';
import { planIncremental } from '../src/engine/incremental.js';
import { readSafetensorsModel } from '../src/model/safetensors.js';
import { inferShapes } from '../src/model/shapes.js';
import { createZooModel, initWeights } from '../src/model/zoo.js';
import type { Layer, Model } from '../src/model/layers.js';
import { batchItem, readNpy, tensor, type Tensor } from '../src/tensor.js';
import { rectHeight } from '../src/util/rect.js';
import { batches } from '../src/data/batches.js';
import { openShapes } from '../src/data/shapes.js';
import { assertClose, errorLines, fixture, fixtureEngine, fixtureNpy, relError, ROOT } from './helpers.js';

// The fixtures' README tolerance, also for incremental vs full: they differ by float rounding, mostly from the
// incremental path's LRN formulation (about 5e-7 relative per value, ~1e-5 after the layers above it).
const TOL = 1e-4;
const SAME = TOL;

let engine: Engine;
let input: Tensor;
before(() => {
  ({ engine, input } = fixtureEngine());
});
after(() => engine.dispose());

const map = (data: Float32Array, rows: number, cols: number): Tensor => ({ shape: [rows, cols], data });

function assertSamePaperMaps(ours: PaperMaps, ref: PaperMaps, what: string): void {
  assert.deepEqual(ours.grid, ref.grid, `${what}: grid`);
  assert.equal(ours.feature, ref.feature, `${what}: feature`);
  assertClose(ours.activation, ref.activation, SAME, `${what}: (b) activation`);
  assertClose(ours.probability, ref.probability, SAME, `${what}: (d) probability`);
  assert.deepEqual(Array.from(ours.topClass.data), Array.from(ref.topClass.data), `${what}: (e) top class`);
  assert.equal(ours.projections.length, ref.projections.length);
  ours.projections.forEach((p, i) => {
    assert.deepEqual([p.position, p.unit], [ref.projections[i].position, ref.projections[i].unit], `${what}: (c) ${i}`);
    assertClose(p.projection, ref.projections[i].projection, SAME, `${what}: (c) projection ${i}`);
  });
}

describe('attribution mode equals Captum Occlusion (fixtures)', () => {
  for (const [w, s] of [[8, 4], [12, 5]]) {
    for (const incremental of [true, false]) {
      test(`window ${w}, stride ${s}, ${incremental ? 'incremental' : 'full'}`, async () => {
        const r = await occlusionMaps(engine, input, { mode: 'attribution', window: w, stride: s, target: 2, incremental });
        assertClose(r.attribution, fixtureNpy(`occlusion_w${w}_s${s}_target2.npy`), TOL, 'attribution');
      });
    }
  }
});

describe('paper mode', () => {
  test('equals a brute-force loop of single forward passes (zfnet-small, fixture weights)', async () => {
    const r = await occlusionMaps(engine, input, { window: 16, stride: 6, fill: 'zero', projectAt: [[0, 0], [4, 4]] });
    const { ys, xs } = r.grid;
    assert.deepEqual(ys, [0, 6, 12, 18, 24, 30, 36, 42, 48]);
    const fill = fillImage(engine.model, 'zero');
    const shape = engine.model.input;
    const one = tensor([1, ...shape]);
    const activation = new Float32Array(ys.length * xs.length);
    const probability = new Float32Array(activation.length);
    const topClass = new Float32Array(activation.length);
    for (const [p, box] of r.grid.boxes.entries()) {
      occludeInto(input.data, shape, box, fill, one.data);
      const { activations } = await engine.forward(one, ['relu5', 'fc8']);
      const relu5 = activations.get('relu5')!;
      const [, h, w] = relu5.shape.slice(1);
      activation[p] = relu5.data.subarray(r.feature * h * w, (r.feature + 1) * h * w).reduce((a, v) => a + v, 0);
      const logits = Array.from(activations.get('fc8')!.data);
      const e = logits.map((v) => Math.exp(v - Math.max(...logits)));
      probability[p] = e[r.target] / e.reduce((a, v) => a + v, 0);
      topClass[p] = logits.indexOf(Math.max(...logits));
    }
    assertClose(r.activation, map(activation, ys.length, xs.length), SAME, '(b)');
    assertClose(r.probability, map(probability, ys.length, xs.length), SAME, '(d)');
    assert.deepEqual(Array.from(r.topClass.data), Array.from(topClass), '(e)');
    // The fixture model is confident: some position must still move p(target) for the comparison to mean anything.
    assert.ok(Math.min(...probability) < 0.9 * r.unoccluded.probability, 'occluders change p(target)');
    assert.equal(r.projections[0].position, null);
    for (const p of r.projections) {
      const image = tensor([1, ...shape]);
      if (p.position) occludeInto(input.data, shape, r.grid.boxes[p.position[0] * xs.length + p.position[1]], fill, image.data);
      else image.data.set(input.data);
      const ref = await projectUnit(engine, image, 'relu5', r.feature, 'max', ZF_SETTINGS);
      assert.deepEqual(p.unit, ref.unit);
      assertClose(p.projection, ref.projection, SAME, `(c) at ${p.position}`);
    }
  });

  test('the tracked feature is the map with the largest activation; target defaults to the prediction', async () => {
    const r = await occlusionMaps(engine, input, { window: 32, stride: 32 });
    assert.equal(r.feature, 19);
    assert.equal(r.target, 2);
    assert.equal(r.predicted, 2);
    assert.deepEqual(r.activation.shape, [2, 2]);
  });
});

describe('incremental inference equals full recomputation', () => {
  const cases: [string, OcclusionOptions & { mode?: 'paper' }][] = [
    ['default geometry (14/2), fill mean', {}],
    ['fill grey 200, window 9 stride 5, every layer on boxes', { fill: 200, window: 9, stride: 5, fullFraction: 1 }],
    ['window 20 stride 7, full from the first layer whose box covers 5%', { window: 20, stride: 7, fullFraction: 0.05 }],
  ];
  for (const [what, options] of cases) {
    test(`zfnet-small: ${what}`, async () => {
      const inc = await occlusionMaps(engine, input, { ...options, incremental: true, batch: 50 });
      const full = await occlusionMaps(engine, input, { ...options, incremental: false });
      assertSamePaperMaps(inc, full, what);
      assert.ok(inc.flops.incremental! <= inc.flops.full);
    });
  }

  test('negative inputs to max pools (padding is -inf, not 0), ceil mode, even LRN, a tracked layer inside the boxes', async () => {
    const layers: Layer[] = [
      { type: 'conv2d', name: 'conv1', inChannels: 3, outChannels: 8, kernel: [3, 3], stride: [1, 1], padding: [1, 1], bias: true },
      { type: 'maxpool2d', name: 'pool1', kernel: [3, 3], stride: [2, 2], padding: [1, 1], ceilMode: false },
      { type: 'lrn', name: 'norm1', size: 4, alpha: 0.01, beta: 0.6, k: 1 },
      { type: 'conv2d', name: 'conv2', inChannels: 8, outChannels: 8, kernel: [3, 3], stride: [2, 2], padding: [0, 0], bias: true },
      { type: 'maxpool2d', name: 'pool2', kernel: [2, 2], stride: [2, 2], padding: [0, 0], ceilMode: true },
      { type: 'relu', name: 'relu2' },
      { type: 'flatten', name: 'flatten' },
      { type: 'linear', name: 'fc', inFeatures: 128, outFeatures: 5, bias: true },
    ];
    const model: Model = { name: 'odd', input: [3, 29, 29], layers, weights: initWeights(layers, 'kaiming', 5), preprocess: { mean: [128, 128, 128], std: [64, 64, 64] } };
    const odd = new Engine(model);
    try {
      const x = imageToInput(testPattern(29), model.preprocess);
      // 0.75: every window layer on boxes (conv2, the tracked layer, comes back as patches); 0.3: full from conv2.
      for (const fullFraction of [undefined, 0.3]) {
        const options = { window: 7, stride: 3, layer: 'conv2', fill: 'zero', fullFraction } as const;
        const inc = await occlusionMaps(odd, x, options);
        const full = await occlusionMaps(odd, x, { ...options, incremental: false });
        assert.equal(rectHeight(inc.grid.boxes.at(-1)!), 5);
        assertSamePaperMaps(inc, full, `fullFraction ${fullFraction}`);
      }
    } finally {
      await odd.dispose();
    }
  });

  test('attribution: incremental equals full', async () => {
    const inc = await occlusionMaps(engine, input, { mode: 'attribution', window: 10, stride: 3, target: 7 });
    const full = await occlusionMaps(engine, input, { mode: 'attribution', window: 10, stride: 3, target: 7, incremental: false });
    assertClose(inc.attribution, full.attribution, SAME, 'attribution');
  });

  test('zfnet-224 (random weights), window 50 stride 8: top and clipped bottom rows, all four maps', async () => {
    const model = createZooModel('zfnet', { seed: 3, init: 'kaiming' });
    const big = new Engine(model);
    try {
      const x = imageToInput(testPattern(224), model.preprocess);
      for (const rows of [[0, 1], [22, 23]] as [number, number][]) {
        const inc = await occlusionMaps(big, x, { window: 50, stride: 8, rows, batch: 23 });
        const full = await occlusionMaps(big, x, { window: 50, stride: 8, rows, batch: 23, incremental: false });
        assert.equal(inc.grid.boxes.length, 23);
        assertSamePaperMaps(inc, full, `rows ${rows}`);
      }
    } finally {
      await big.dispose();
    }
  });
});

describe('geometry', () => {
  test('529 positions for 224 px, window 50, stride 8: the last one clipped at the border', () => {
    const g = occlusionGrid([224, 224], 50, 8);
    assert.equal(g.ys.length, 23);
    assert.equal(g.boxes.length, 529);
    assert.equal(g.ys[22], 176);
    assert.deepEqual(g.boxes[528], [176, 176, 224, 224]);
    assert.deepEqual(g.boxes[1], [0, 8, 50, 58]);
  });

  test("Captum's ceil((D-W)/S)+1 positions per axis", () => {
    assert.deepEqual(occlusionGrid([64, 64], 12, 5).ys, [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55]);
    assert.equal(rectHeight(occlusionGrid([64, 64], 8, 4).boxes.at(-1)!), 8);
    assert.equal(rectHeight(occlusionGrid([64, 64], 12, 5).boxes.at(-1)!), 9);
    assert.equal(occlusionGrid([64, 64], 64, 3).boxes.length, 1);
    const g = occlusionGrid([64, 48], [10, 6], [4, 7]);
    assert.deepEqual([g.ys.length, g.xs.length], [15, 7]);
    assert.deepEqual(occlusionGrid([224, 224], 50, 8, [21, 23]).ys, [168, 176]);
  });

  test('bad geometry is refused', () => {
    assert.throws(() => occlusionGrid([64, 64], 65, 4), /window 65 must be an integer in 1\.\.64/);
    assert.throws(() => occlusionGrid([64, 64], 0, 4), /window 0/);
    assert.throws(() => occlusionGrid([64, 64], 8, 0), /stride 0/);
    assert.throws(() => occlusionGrid([64, 64], 8, 4, [3, 20]), /rows \[3, 20\)/);
  });

  test('default geometry follows the paper: 50/8 at 224, 14/2 at 64', () => {
    assert.deepEqual(defaultGeometry([3, 224, 224]), { window: [50, 50], stride: [8, 8] });
    assert.deepEqual(defaultGeometry([3, 64, 64]), { window: [14, 14], stride: [2, 2] });
  });

  test('fills in network units: mean is 0, zero is -mean, a grey level is grey - mean', () => {
    const model = createZooModel('zfnet-small');
    assert.equal(fillImage(model, 'mean').every((v) => v === 0), true);
    const zero = fillImage(model, 'zero');
    const grey = fillImage(model, 100);
    const hw = 64 * 64;
    assert.deepEqual([zero[0], zero[hw], zero[2 * hw]].map((v) => +v.toFixed(2)), [-123.68, -116.78, -103.94]);
    assert.equal(+grey[2 * hw + 5].toFixed(2), -3.94);
    assert.throws(() => fillImage(model, 256), /grey level 0\.\.255/);
  });

  test('the planner: boxes per layer and the FLOP saving for zfnet-224, window 50, stride 8', () => {
    const infos = inferShapes(createZooModel('zfnet-small', { classes: 10 }));
    const plan = planIncremental(infos, occlusionGrid([64, 64], 14, 2).boxes);
    assert.ok(plan.flops.incremental < plan.flops.full);
    const big = inferShapes({ input: [3, 224, 224], layers: createZooModel('zfnet').layers });
    const p = planIncremental(big, occlusionGrid([224, 224], 50, 8).boxes);
    const names = (i: number) => big[i].layer.name;
    assert.deepEqual(p.segments.map((s) => `${names(s.from)}:${s.size.join('x')}`), ['conv1:28x28', 'pool1:15x15', 'conv2:9x9', 'pool2:6x6', 'conv3:8x8', 'conv4:10x10']);
    assert.equal(names(p.tailFrom), 'conv5');
    assert.ok(Math.abs(p.flops.full / p.flops.incremental - 2.55) < 0.01, `saving ${p.flops.full / p.flops.incremental}`);
    // Switching only where the box is the whole map: conv5 runs on 12x12 boxes, pool5's box is all of its 6x6.
    const late = planIncremental(big, occlusionGrid([224, 224], 50, 8).boxes, { fullFraction: 1 });
    assert.deepEqual(late.segments.map((s) => s.size[0]), [28, 15, 9, 6, 8, 10, 12]);
    assert.equal(names(late.tailFrom), 'pool5');
  });
});

test('figures of a one-channel model (grey image, grey projections)', async () => {
  const model = createZooModel('zfnet-mnist');
  const grey = new Engine(model);
  try {
    const x = imageToInput(toChannels(testPattern(28), 1), model.preprocess);
    const r = await occlusionMaps(grey, x, { window: 7, stride: 7 });
    const figures = await paperFigures(inputToImage(x, model.preprocess), r, model.name, (c) => `class ${c}`);
    assert.deepEqual([...figures.keys()], ['activation', 'probability', 'top_class', 'projections', 'figure']);
    for (const img of figures.values()) assert.equal(img.channels, 3);
    const a = await occlusionMaps(grey, x, { mode: 'attribution', window: 7, stride: 7 });
    assert.equal((await attributionFigure(inputToImage(x, model.preprocess), a, model.name, String)).channels, 3);
  } finally {
    await grey.dispose();
  }
});

function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts'), ...args], { cwd: ROOT });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

describe('convscope occlude', { concurrency: true }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'convscope-occlude-'));
  const model = ['--model', fixture('weights.safetensors'), '--input-npy', fixture('input.npy')];

  test('paper mode writes the maps, projections and figures', async () => {
    const out = join(dir, 'paper');
    const r = await runCli(['occlude', ...model, '--window', '16', '--stride', '8', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /7x7 positions .*incremental/);
    for (const f of ['activation', 'probability', 'top_class']) assert.deepEqual(readNpy(join(out, `${f}.npy`)).shape, [7, 7]);
    assert.deepEqual(readNpy(join(out, 'projections.npy')).shape.slice(1), [3, 64, 64]);
    for (const f of ['activation', 'probability', 'top_class', 'projections', 'figure']) assert.ok(existsSync(join(out, `${f}.png`)), f);
  });

  test('attribution mode reproduces the fixture', async () => {
    const out = join(dir, 'attribution');
    const r = await runCli(['occlude', ...model, '--mode', 'attribution', '--window', '8', '--stride', '4', '--target', '2', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(relError(readNpy(join(out, 'attribution.npy')), fixtureNpy('occlusion_w8_s4_target2.npy')) <= TOL);
  });

  const bad: [string, string[], RegExp][] = [
    ['window larger than the image', ['--window', '65'], /window 65 must be an integer in 1\.\.64/],
    ['window 0', ['--window', '0'], /--window must be an integer >= 1, got '0'/],
    ['stride 0', ['--stride', '0'], /--stride must be an integer >= 1/],
    ['fill word', ['--fill', 'grey'], /--fill must be mean, zero or a grey level 0\.\.255; got 'grey'/],
    ['fill out of range', ['--fill', '300'], /--fill must be .* got '300'/],
    ['target out of range', ['--target', '10'], /target class 10 is out of range: model .* has 10 classes \(0\.\.9\)/],
    ['unknown class name', ['--target', 'zebra'], /unknown class 'zebra'; give an index 0\.\.9 or a class name/],
    ['unknown layer', ['--layer', 'conv9'], /unknown layer 'conv9'/],
    ['vector layer', ['--layer', 'fc6'], /layer fc6 outputs \[256\]/],
    ['bad mode', ['--mode', 'magic'], /--mode must be one of paper, attribution; got 'magic'/],
  ];
  for (const [what, args, message] of bad) {
    test(`bad input: ${what}`, async () => {
      const out = join(dir, what.replace(/\W+/g, '_'));
      const r = await runCli(['occlude', ...model, ...args, '--out', out]);
      assert.equal(r.code, 2, `exit code; stderr: ${r.stderr}`);
      const lines = errorLines(r.stderr);
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0], /^convscope: /);
      assert.match(lines[0], message);
      assert.ok(!existsSync(out), 'no output written');
    });
  }

  test('missing --out', async () => {
    const r = await runCli(['occlude', ...model]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /occlude needs --out/);
  });

  after(() => assert.deepEqual(readdirSync(dir).flatMap((d) => (existsSync(join(dir, d)) ? readdirSync(join(dir, d)) : [])).filter((f) => f.includes('.tmp-')), []));
});

test('localisation score: hits are minima of p(correct) whose square centre lies in the box; chance counts positions', async () => {
  const model = createZooModel('zfnet-small', { seed: 1, init: 'kaiming' });
  const engine = new Engine(model);
  try {
    const items: { input: Tensor; label: number; box: [number, number, number, number]; name: string }[] = [];
    for await (const b of batches(openShapes({ count: 4 }, 'val'), { input: model.input, preprocess: model.preprocess, batchSize: 4 })) {
      b.indices.forEach((_, j) => items.push({ input: batchItem(b.input, j), label: b.labels[j], box: b.boxes![j]!, name: b.names[j] }));
    }
    // A box over the whole image makes every image a hit; an empty one none.
    const all = await localisationScore(engine, items.map((i) => ({ ...i, box: [0, 0, 64, 64] as [number, number, number, number] })));
    assert.equal(all.hits, 4);
    assert.equal(all.chance, 1);
    const none = await localisationScore(engine, items.map((i) => ({ ...i, box: [0, 0, 0, 0] as [number, number, number, number] })));
    assert.equal(none.hits, 0);
    // Progress counts images (the positions of each image once went to the same callback).
    const reports: [number, number][] = [];
    const real = await localisationScore(engine, items, { onProgress: (done, total) => reports.push([done, total]) });
    assert.deepEqual(reports, [[1, 4], [2, 4], [3, 4], [4, 4]]);
    for (const [k, item] of items.entries()) {
      const m = await occlusionMaps(engine, item.input, { target: item.label, projectAt: [] });
      const p = m.probability.data;
      const best = p.indexOf(Math.min(...p));
      const [r, c] = [Math.floor(best / m.grid.xs.length), best % m.grid.xs.length];
      assert.deepEqual(real.perImage[k].minimum, [r, c]);
      const cy = m.grid.ys[r] + m.grid.window[0] / 2;
      const cx = m.grid.xs[c] + m.grid.window[1] / 2;
      assert.equal(real.perImage[k].hit, cy >= item.box[0] && cy < item.box[2] && cx >= item.box[1] && cx < item.box[3]);
    }
  } finally {
    await engine.dispose();
  }
});
