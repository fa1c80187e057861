// Linear probes and layer ablation: the logistic regression on synthetic data with a known answer, feature pooling,
// seeded determinism of a whole probe, class filters, and ablated models that compile and run.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ablateModel, randomlyInitialised, runAblations } from '../src/analysis/ablate.js';
import { ablationMarkdown } from '../src/report/ablate.js';
import { poolFeatures, pooledShape, probeSplits, runProbe } from '../src/analysis/probe.js';
import { minimizeLbfgs } from '../src/train/lbfgs.js';
import { accuracyOf, fitLogisticRegression, predictClasses } from '../src/train/logistic.js';
import { filterClasses, parseClassList, splitClassSpec } from '../src/data/filter.js';
import { openShapes, SHAPE_CLASSES } from '../src/data/shapes.js';
import { Engine } from '../src/engine/engine.js';
import { validateModel } from '../src/model/layers.js';
import { inferShapes } from '../src/model/shapes.js';
import { readSafetensorsModel } from '../src/model/safetensors.js';
import { createZooModel } from '../src/model/zoo.js';
import { evaluateDataset } from '../src/train/trainer.js';
import { Rng } from '../src/util/random.js';
import { ROOT } from './helpers.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'convscope-probe-'));

/** Rows x ~ N(offset, diag(scale²)) labelled by argmax(W (x - offset) + b): a linear separation with a known W. */
function linearProblem(rows: number, seed: number, w: number[][], b: number[], scale: number[], offset = scale.map(() => 0)) {
  const dims = scale.length;
  const rng = new Rng(seed);
  const x = new Float32Array(rows * dims);
  const labels = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    for (let d = 0; d < dims; d++) x[r * dims + d] = offset[d] + rng.normal() * scale[d];
    const scores = w.map((wk, k) => b[k] + wk.reduce((s, v, d) => s + v * (x[r * dims + d] - offset[d]), 0));
    labels[r] = scores.indexOf(Math.max(...scores));
  }
  return { x, labels };
}

function cosine(a: number[], b: number[]): number {
  const dot = a.reduce((s, v, i) => s + v * b[i], 0);
  return dot / Math.sqrt(a.reduce((s, v) => s + v * v, 0) * b.reduce((s, v) => s + v * v, 0));
}

describe('logistic regression', () => {
  test('L-BFGS finds the minimum of an ill-conditioned quadratic', () => {
    const scale = [1, 10, 100, 1000];
    const target = [3, -2, 0.5, 7];
    const r = minimizeLbfgs((x, g) => {
      let f = 0;
      x.forEach((v, i) => {
        f += 0.5 * scale[i] * (v - target[i]) ** 2;
        g[i] = scale[i] * (v - target[i]);
      });
      return f;
    }, new Float64Array(4), { maxIterations: 200, gradientTolerance: 1e-9 });
    assert.ok(r.converged);
    r.x.forEach((v, i) => assert.ok(Math.abs(v - target[i]) < 1e-6, `x[${i}] = ${v}, want ${target[i]}`));
  });

  test('recovers a known linear separation: high accuracy, weight directions close to the true ones', () => {
    // Three classes in 12 dimensions whose scales differ by 100x and whose means are far from 0, so standardisation
    // and its folding back into raw-feature weights and biases matter.
    const dims = 12;
    const rng = new Rng(7);
    const w = [0, 1, 2].map(() => Array.from({ length: dims }, () => rng.normal()));
    const b = [0.3, -0.2, 0];
    const scale = Array.from({ length: dims }, (_, d) => (d % 3 === 0 ? 0.1 : d % 3 === 1 ? 1 : 10));
    // The rule is in terms of raw x: divide by the scale so every dimension matters about equally.
    const wRaw = w.map((wk) => wk.map((v, d) => v / scale[d]));
    const offset = scale.map((s, d) => s * (d - 5));
    const trainSet = linearProblem(1500, 1, wRaw, b, scale, offset);
    const testSet = linearProblem(2000, 2, wRaw, b, scale, offset);
    const c = fitLogisticRegression(trainSet.x, trainSet.labels, dims, 3, { l2: 1e-5 });
    assert.ok(c.converged, `converged after ${c.iterations} iterations`);
    const acc = accuracyOf(predictClasses(c, testSet.x), testSet.labels);
    assert.ok(acc > 0.97, `test accuracy ${acc}`);
    // Softmax weights are defined up to a common shift: compare the class-difference directions.
    for (const [i, j] of [[0, 1], [0, 2], [1, 2]]) {
      const learned = Array.from({ length: dims }, (_, d) => c.weight[i * dims + d] - c.weight[j * dims + d]);
      const truth = wRaw[i].map((v, d) => v - wRaw[j][d]);
      const cos = cosine(learned.map((v, d) => v * scale[d]), truth.map((v, d) => v * scale[d]));
      assert.ok(cos > 0.98, `cos(w${i} - w${j}) = ${cos}`);
    }
  });

  test('a strong L2 penalty shrinks the weights towards zero and the predictions towards the majority', () => {
    const { x, labels } = linearProblem(300, 3, [[1, 0], [-1, 0]], [0, 0], [1, 1]);
    const weak = fitLogisticRegression(x, labels, 2, 2, { l2: 1e-4 });
    const strong = fitLogisticRegression(x, labels, 2, 2, { l2: 100 });
    const norm = (c: typeof weak) => Math.hypot(...c.weight);
    assert.ok(norm(strong) < 0.05 * norm(weak), `|W| ${norm(strong)} vs ${norm(weak)}`);
  });

  test('rejects labels out of range and features of the wrong length', () => {
    assert.throws(() => fitLogisticRegression(new Float32Array(4), Int32Array.of(0, 2), 2, 2, { l2: 1 }), /label 2 is out of range/);
    assert.throws(() => fitLogisticRegression(new Float32Array(3), Int32Array.of(0, 1), 2, 2, { l2: 1 }), /3 values, 2 rows of 2/);
  });
});

describe('features', () => {
  test('conv maps are average-pooled over PyTorch adaptive bins; small maps and vectors are kept', () => {
    assert.deepEqual(pooledShape([32, 32, 32], 4), [32, 4, 4]);
    assert.deepEqual(pooledShape([96, 4, 4], 4), [96, 4, 4]);
    assert.deepEqual(pooledShape([64, 2, 3], 4), [64, 2, 3]);
    assert.deepEqual(pooledShape([256], 4), [256]);
    // One 5x5 map pooled to 2x2: bins rows/cols [0,3) and [2,5) (they overlap, as in PyTorch).
    const data = Float32Array.from({ length: 25 }, (_, i) => i);
    const pooled = poolFeatures({ shape: [1, 1, 5, 5], data }, 2);
    const mean = (ys: number[], xs: number[]) => ys.flatMap((y) => xs.map((x) => y * 5 + x)).reduce((a, v) => a + v, 0) / (ys.length * xs.length);
    assert.deepEqual(Array.from(pooled), [mean([0, 1, 2], [0, 1, 2]), mean([0, 1, 2], [2, 3, 4]), mean([2, 3, 4], [0, 1, 2]), mean([2, 3, 4], [2, 3, 4])]);
    // Batch of 2 x 3 channels of 8x8 -> rows of 3*4*4, item-major.
    const big = Float32Array.from({ length: 2 * 3 * 64 }, (_, i) => Math.floor(i / 64));
    const rows = poolFeatures({ shape: [2, 3, 8, 8], data: big }, 4);
    assert.equal(rows.length, 2 * 48);
    assert.deepEqual(Array.from(rows.subarray(48, 64)), new Array(16).fill(3));
    const vec = Float32Array.of(1, 2, 3, 4);
    assert.deepEqual(Array.from(poolFeatures({ shape: [2, 2], data: vec }, 4)), [1, 2, 3, 4]);
  });
});

describe('datasets for transfer', () => {
  test('a class filter keeps and relabels the named classes', async () => {
    assert.deepEqual(parseClassList('6-9', SHAPE_CLASSES), [6, 7, 8, 9]);
    assert.deepEqual(parseClassList('ring,0', SHAPE_CLASSES), [4, 0]);
    assert.throws(() => parseClassList('3-12', SHAPE_CLASSES), /class 10 is out of range/);
    assert.deepEqual(splitClassSpec('shapes:count=200,classes=6-9'), { base: 'shapes:count=200', classes: '6-9' });
    assert.deepEqual(splitClassSpec('fashion-mnist:classes=0,2'), { base: 'fashion-mnist', classes: '0,2' });
    const all = openShapes({ count: 100 }, 'train');
    const some = filterClasses(all, [7, 2]);
    assert.deepEqual(some.classes, ['vertical stripes', 'triangle']);
    assert.equal(some.size, 20);
    const kept = Array.from({ length: all.size }, (_, i) => i).filter((i) => [7, 2].includes(all.label(i)));
    kept.forEach((orig, i) => {
      assert.equal(some.label(i), all.label(orig) === 7 ? 0 : 1);
      assert.equal(some.itemName(i), all.itemName(orig));
    });
    const item = await some.item(1);
    assert.equal(item.label, some.label(1));
    assert.equal(item.name, all.itemName(kept[1]));
  });

  test('splits: n per class, the smaller set inside the larger, different per split, too few items refused', () => {
    const ds = filterClasses(openShapes({ count: 200 }, 'train'), [0, 1, 2]);
    const s = probeSplits(ds, [3, 5], 2, 11);
    for (const split of s) {
      assert.deepEqual([0, 1, 2].map((c) => split[1].filter((i) => ds.label(i) === c).length), [5, 5, 5]);
      assert.ok(split[0].every((i) => split[1].includes(i)));
    }
    assert.notDeepEqual(s[0][1], s[1][1]);
    assert.throws(() => probeSplits(ds, [21], 1, 0), /class 'disc' has 20 items, fewer than 21/);
  });
});

describe('probe', () => {
  test('a whole probe is deterministic for a seed and gives accuracies for every layer and size', async () => {
    const model = createZooModel('zfnet-small', { seed: 3, init: 'kaiming' });
    const trainSet = filterClasses(openShapes({ count: 120 }, 'train'), [0, 1, 2, 3]);
    const testSet = filterClasses(openShapes({ count: 80 }, 'val'), [0, 1, 2, 3]);
    const opts = { layers: ['relu1', 'conv3', 'relu7'], perClass: [2, 5], splits: 3, seed: 5, pool: 4, l2: 1e-3 };
    const a = await runProbe(model, trainSet, testSet, opts);
    const b = await runProbe(model, trainSet, testSet, opts);
    assert.deepEqual(a, b);
    assert.equal(a.cells.length, 6);
    assert.deepEqual(a.layers.map((l) => [l.name, l.dims]), [['relu1', 512], ['conv3', 1536], ['relu7', 256]]);
    assert.equal(a.testItems, 32);
    assert.equal(a.trainItems, 3 * 4 * 5 - countShared(trainSet, opts));
    for (const c of a.cells) {
      assert.equal(c.accuracies.length, 3);
      assert.ok(c.accuracies.every((v) => v >= 0 && v <= 1));
    }
    const other = await runProbe(model, trainSet, testSet, { ...opts, seed: 6 });
    assert.notDeepEqual(other.cells.map((c) => c.accuracies), a.cells.map((c) => c.accuracies));
  });
});

/** Items drawn by more than one split (the extracted set is their union). */
function countShared(ds: Parameters<typeof probeSplits>[0], opts: { perClass: number[]; splits: number; seed: number }): number {
  const all = probeSplits(ds, opts.perClass, opts.splits, opts.seed).map((s) => s[s.length - 1]).flat();
  return all.length - new Set(all).size;
}

describe('ablation', () => {
  const full = createZooModel('zfnet-small', { seed: 1 });

  test('without fc6 and fc7: flatten feeds a new fc8; the other weights are kept; the model runs', async () => {
    const { model, removed, reinitialised } = ablateModel(full, ['fc6', 'fc7'], { seed: 2 });
    assert.deepEqual(removed, ['fc6', 'relu6', 'drop6', 'fc7', 'relu7', 'drop7']);
    assert.deepEqual(reinitialised, ['fc8']);
    assert.deepEqual(model.layers.map((l) => l.name), full.layers.map((l) => l.name).filter((n) => !removed.includes(n)));
    validateModel(model);
    const infos = inferShapes(model);
    assert.deepEqual(infos.at(-1)!.outShape, [10]);
    assert.deepEqual(model.weights.get('conv5.weight')!.data, full.weights.get('conv5.weight')!.data);
    assert.notDeepEqual(model.weights.get('fc8.weight')!.data, full.weights.get('fc8.weight')!.data);
    const engine = new Engine(model);
    try {
      const input = { shape: [2, 3, 64, 64], data: Float32Array.from({ length: 2 * 3 * 64 * 64 }, (_, i) => Math.sin(i)) };
      const out = (await engine.forward(input, ['fc8'])).activations.get('fc8')!;
      assert.deepEqual(out.shape, [2, 10]);
      assert.ok(out.data.every(Number.isFinite));
    } finally {
      await engine.dispose();
    }
  });

  test('without conv3 and conv4: conv5 takes conv2\'s 64 channels; conv5 and everything above are new', () => {
    const { model, reinitialised } = ablateModel(full, ['conv3', 'conv4']);
    const conv5 = model.layers.find((l) => l.name === 'conv5');
    assert.ok(conv5?.type === 'conv2d' && conv5.inChannels === 64);
    assert.deepEqual(reinitialised, ['conv5', 'fc6', 'fc7', 'fc8']);
    assert.deepEqual(model.weights.get('conv5.weight')!.shape, [64, 64, 3, 3]);
    assert.deepEqual(model.weights.get('conv2.weight')!.data, full.weights.get('conv2.weight')!.data);
    assert.notDeepEqual(model.weights.get('fc6.weight')!.data, full.weights.get('fc6.weight')!.data);
    validateModel(model);
    // Without a pool the flattened size changes: fc6 is resized, and it and all above are new.
    const noPool = ablateModel(full, ['pool5']);
    assert.deepEqual(noPool.reinitialised, ['fc6', 'fc7', 'fc8']);
    assert.deepEqual(noPool.model.weights.get('fc6.weight')!.shape, [256, 64 * 4 * 4]);
    assert.deepEqual(noPool.model.weights.get('conv5.weight')!.data, full.weights.get('conv5.weight')!.data);
  });

  test('removing the class scores is refused; the random-init copy keeps architecture and preprocessing', () => {
    assert.throws(() => ablateModel(full, ['fc8']), /cannot remove fc8/);
    assert.throws(() => ablateModel(full, ['conv9']), /unknown layer 'conv9'/);
    const fresh = randomlyInitialised(full, 4);
    assert.deepEqual(fresh.layers, full.layers);
    assert.deepEqual(fresh.preprocess, full.preprocess);
    assert.notDeepEqual(fresh.weights.get('conv1.weight')!.data, full.weights.get('conv1.weight')!.data);
  });
});

describe('end to end', () => {
  test('runAblations retrains the full and the ablated model and reports both', async () => {
    const dir = tmp();
    const trainSet = openShapes({ count: 48 }, 'train');
    const valSet = openShapes({ count: 20 }, 'val');
    const model = createZooModel('zfnet-small', { seed: 1, init: 'kaiming' });
    const r = await runAblations(model, trainSet, valSet, { ablations: [['fc6', 'fc7']], epochs: 1, start: 'trained', lr: 0.01, schedule: { kind: 'constant' }, batchSize: 16, seed: 0 }, { outDir: dir });
    assert.deepEqual(r.rows.map((row) => [row.name, row.weightLayers, row.reinitialised]), [['full', 8, []], ['without-fc6-fc7', 6, ['fc8']]]);
    assert.equal(r.rows[1].params, r.rows[0].params - 2 * 256 * 256 - 2 * 256);
    for (const row of r.rows) {
      assert.ok(existsSync(row.file), row.file);
      assert.ok(row.before >= 0 && row.before <= 1 && row.after >= 0 && row.after <= 1);
      // Fine-tuning changed the weights it kept, and the error after is that of the retrained model.
      const retrained = readSafetensorsModel(row.file);
      const kept = [...retrained.weights.keys()].filter((k) => model.weights.has(k) && !row.reinitialised.some((l) => k.startsWith(`${l}.`)));
      assert.ok(kept.length > 0 && kept.some((k) => retrained.weights.get(k)!.data.some((v, i) => v !== model.weights.get(k)!.data[i])), `${row.name}: the weights moved`);
      const engine = new Engine(retrained);
      try {
        assert.equal((await evaluateDataset(engine, retrained.weights, valSet)).accuracy, row.after, `${row.name}: accuracy after`);
      } finally {
        await engine.dispose();
      }
    }
    assert.match(ablationMarkdown(r), /\| without-fc6-fc7 \| fc6, relu6, drop6, fc7, relu7, drop7 \| fc8 \| 6 \|/);
  });

  test('convscope probe writes the table, the JSON and the plot', () => {
    const dir = tmp();
    const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts'), 'probe', '--model', 'zfnet-small',
      '--train', 'shapes:count=60,classes=0-2', '--test', 'shapes:count=30,classes=0-2', '--layers', 'relu2,fc6', '--per-class', '3',
      '--splits', '2', '--out', dir], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /\| fc6 \| 256 \| \d+\.\d ± \d+\.\d \|/);
    const json = JSON.parse(readFileSync(join(dir, 'probe.json'), 'utf8'));
    assert.deepEqual(json.runs[0].result.layers.map((l: { name: string }) => l.name), ['relu2', 'fc6']);
    assert.ok(existsSync(join(dir, 'probe.png')) && existsSync(join(dir, 'probe.md')));
  });
});
