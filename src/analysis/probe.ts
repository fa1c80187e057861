// Linear probes on frozen features (Zeiler & Fergus Sec. 5, the transfer experiments beside Table 3): a new softmax
// trained on one layer's activations of a frozen network, for a few labelled images per class, over random splits.
import { batches } from '../data/batches.js';
import { mixSeed, requireLabels, seededPermutation, type Dataset, type Skipped } from '../data/dataset.js';
import { Engine } from '../engine/engine.js';
import type { Model } from '../model/layers.js';
import { sizeOf, type Tensor } from '../tensor.js';
import { accuracyOf, fitLogisticRegression, predictClasses } from '../train/logistic.js';
import type { OnProgress } from '../util/progress.js';

// ---------------------------------------------------------------- features

/**
 * The shape of a layer's feature vector: a conv map [C, H, W] is averaged over a k x k grid of regions (maps already
 * at most k x k are kept), so that early layers with large maps do not swamp a small training set with dimensions;
 * a vector [F] is kept as it is.
 */
export function pooledShape(outShape: readonly number[], k: number): number[] {
  if (!(Number.isInteger(k) && k > 0)) throw new Error(`pool size must be a positive integer, got ${k}`);
  if (outShape.length !== 3) return [...outShape];
  const [c, h, w] = outShape;
  return [c, Math.min(h, k), Math.min(w, k)];
}

/** PyTorch's adaptive-pooling bins of `size` cells into `bins` regions: [floor(i*size/bins), ceil((i+1)*size/bins)). */
function adaptiveBins(size: number, bins: number): [number, number][] {
  return Array.from({ length: bins }, (_, i) => [Math.floor((i * size) / bins), Math.ceil(((i + 1) * size) / bins)]);
}

/** A batch of activations [N, C, H, W] or [N, F] as pooled feature rows [N, dims] (see pooledShape). */
export function poolFeatures(t: Tensor, k: number): Float32Array {
  if (t.shape.length === 2) return t.data.slice();
  if (t.shape.length !== 4) throw new Error(`cannot pool activations of shape [${t.shape}]`);
  const [n, c, h, w] = t.shape;
  const [, kh, kw] = pooledShape([c, h, w], k);
  const rows = adaptiveBins(h, kh);
  const cols = adaptiveBins(w, kw);
  const out = new Float32Array(n * c * kh * kw);
  let o = 0;
  for (let map = 0; map < n * c; map++) {
    const base = map * h * w;
    for (const [y0, y1] of rows) {
      for (const [x0, x1] of cols) {
        let s = 0;
        for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) s += t.data[base + y * w + x];
        out[o++] = s / ((y1 - y0) * (x1 - x0));
      }
    }
  }
  return out;
}

export interface FeatureSet {
  /** Dataset indices of the rows; items that could not be read are left out (and listed in `skipped`). */
  indices: number[];
  labels: Int32Array;
  /** Per layer: the pooled shape of one row and the rows, [indices.length, dims] row-major. */
  layers: Map<string, { shape: number[]; data: Float32Array }>;
  skipped: Skipped[];
}

export interface ExtractOptions {
  /** Side k of the spatial average pooling of conv maps (see pooledShape). */
  pool: number;
  batchSize?: number;
  onBatch?: (done: number, total: number) => void;
}

/** Pooled activations of several layers for the given items of a dataset, in one forward pass per batch. */
export async function extractFeatures(engine: Engine, ds: Dataset, indices: readonly number[], layers: readonly string[], opts: ExtractOptions): Promise<FeatureSet> {
  const shapes = layers.map((l) => pooledShape(engine.info(l).outShape, opts.pool));
  const store = layers.map((_, j) => new Float32Array(indices.length * sizeOf(shapes[j])));
  const rows: number[] = [];
  const labels: number[] = [];
  const model = engine.model;
  const stream = batches(ds, { input: model.input, preprocess: model.preprocess, batchSize: opts.batchSize ?? 64, indices });
  for await (const b of stream) {
    const { activations } = await engine.forward(b.input, [...layers]);
    layers.forEach((l, j) => store[j].set(poolFeatures(activations.get(l)!, opts.pool), rows.length * sizeOf(shapes[j])));
    rows.push(...b.indices);
    labels.push(...b.labels);
    opts.onBatch?.(rows.length + stream.skipped.length, indices.length);
  }
  const out = new Map(layers.map((l, j) => [l, { shape: shapes[j], data: store[j].subarray(0, rows.length * sizeOf(shapes[j])) }]));
  return { indices: rows, labels: Int32Array.from(labels), layers: out, skipped: stream.skipped };
}

// ---------------------------------------------------------------- the probe experiment

export interface ProbeOptions {
  layers: string[];
  /** Training images per class, e.g. the paper's [15, 30]. */
  perClass: number[];
  /** Random draws of the training images. */
  splits: number;
  seed: number;
  /** Spatial pooling of conv maps to pool x pool (see pooledShape). */
  pool: number;
  l2: number;
  /** Use a seeded subset of at most this many test items (the same for every split); default all. */
  maxTest?: number;
  batchSize?: number;
  log?: (line: string) => void;
  /** Images whose features are extracted so far, of all (training and test), and the model's name. */
  onProgress?: OnProgress;
  /**
   * How the features are extracted (default: here, with `extractFeatures`); `convscope probe --queue` extracts on
   * workers. It must give what `extractFeatures(engine, ds, indices, layers, { pool, batchSize })` gives.
   */
  extract?: (which: 'train' | 'test', ds: Dataset, indices: number[]) => Promise<FeatureSet>;
}

export interface ProbeCell {
  layer: string;
  perClass: number;
  /** Test accuracy of each split, in split order. */
  accuracies: number[];
  mean: number;
  /** Sample standard deviation over the splits (0 for one split). */
  std: number;
}

export interface ProbeResult {
  model: string;
  train: string;
  test: string;
  classes: string[];
  layers: { name: string; shape: number[]; dims: number }[];
  perClass: number[];
  splits: number;
  seed: number;
  pool: number;
  l2: number;
  /** Distinct training-set items whose features were extracted, and test items used. */
  trainItems: number;
  testItems: number;
  cells: ProbeCell[];
  skipped: Skipped[];
}

/**
 * The training items of every split: per class, the first n of a seeded permutation of that class's items, so
 * the 15-per-class set of a split is part of its 30-per-class set. Returns [split][size] -> dataset indices.
 */
export function probeSplits(ds: Dataset, perClass: readonly number[], splits: number, seed: number): number[][][] {
  if (perClass.length === 0 || perClass.some((n) => !(Number.isInteger(n) && n > 0))) throw new Error(`images per class must be positive integers, got [${perClass}]`);
  if (!(Number.isInteger(splits) && splits > 0)) throw new Error(`splits must be a positive integer, got ${splits}`);
  const most = Math.max(...perClass);
  const byClass: number[][] = ds.classes.map(() => []);
  for (let i = 0; i < ds.size; i++) byClass[ds.label(i)].push(i);
  byClass.forEach((items, c) => {
    if (items.length < most) throw new Error(`${ds.name}: class '${ds.classes[c]}' has ${items.length} items, fewer than ${most} per class`);
  });
  return Array.from({ length: splits }, (_, s) => {
    const drawn = byClass.map((items, c) => seededPermutation(items.length, mixSeed(seed, s, c)).slice(0, most).map((j) => items[j]));
    return perClass.map((n) => drawn.flatMap((items) => items.slice(0, n)));
  });
}

function meanStd(values: number[]): { mean: number; std: number } {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const v = values.length > 1 ? values.reduce((a, b) => a + (b - mean) ** 2, 0) / (values.length - 1) : 0;
  return { mean, std: Math.sqrt(v) };
}

/** The rows of `features` for the given dataset indices (those that were read), with their labels. */
function gatherRows(set: FeatureSet, layer: string, wanted: readonly number[]): { x: Float32Array; labels: Int32Array } {
  const { shape, data } = set.layers.get(layer)!;
  const dims = sizeOf(shape);
  const rowOf = new Map(set.indices.map((idx, r) => [idx, r]));
  const rows = wanted.map((i) => rowOf.get(i)).filter((r): r is number => r !== undefined);
  const x = new Float32Array(rows.length * dims);
  rows.forEach((r, j) => x.set(data.subarray(r * dims, (r + 1) * dims), j * dims));
  return { x, labels: Int32Array.from(rows, (r) => set.labels[r]) };
}

function testIndices(size: number, maxTest: number | undefined, seed: number): number[] {
  if (maxTest === undefined || maxTest >= size) return Array.from({ length: size }, (_, i) => i);
  return seededPermutation(size, mixSeed(seed, 0x7e57)).slice(0, maxTest).sort((a, b) => a - b);
}

/**
 * Test accuracy of a linear softmax on frozen, pooled features of each layer, for each number of training images
 * per class, over `splits` seeded draws of the training images from `trainSet`; tested on `testSet` (its own
 * images, never used for training). Both sets must have the same classes.
 */
export async function runProbe(model: Model, trainSet: Dataset, testSet: Dataset, opts: ProbeOptions): Promise<ProbeResult> {
  requireLabels(trainSet, 'a linear probe');
  if (trainSet.classes.join('\n') !== testSet.classes.join('\n')) {
    throw new Error(`train and test sets have different classes: [${trainSet.classes}] vs [${testSet.classes}]`);
  }
  const log = opts.log ?? (() => {});
  const draws = probeSplits(trainSet, opts.perClass, opts.splits, opts.seed);
  const trainItems = [...new Set(draws.flat(2))].sort((a, b) => a - b);
  const tests = testIndices(testSet.size, opts.maxTest, opts.seed);
  // One count over both extractions: the training images, then the test images.
  const all = trainItems.length + tests.length;
  const progress = (before: number) => (done: number) => opts.onProgress?.(before + done, all, model.name);
  let trainFeatures: FeatureSet, testFeatures: FeatureSet;
  if (opts.extract) {
    trainFeatures = await opts.extract('train', trainSet, trainItems);
    testFeatures = await opts.extract('test', testSet, tests);
  } else {
    const engine = new Engine(model);
    try {
      const extract = { pool: opts.pool, batchSize: opts.batchSize };
      trainFeatures = await extractFeatures(engine, trainSet, trainItems, opts.layers, { ...extract, onBatch: progress(0) });
      testFeatures = await extractFeatures(engine, testSet, tests, opts.layers, { ...extract, onBatch: progress(trainItems.length) });
    } finally {
      await engine.dispose();
    }
  }
  const classes = trainSet.classes.length;
  const cells: ProbeCell[] = [];
  const layers = opts.layers.map((name) => {
    const shape = trainFeatures.layers.get(name)!.shape;
    return { name, shape, dims: sizeOf(shape) };
  });
  for (const { name, dims } of layers) {
    const test = testFeatures.layers.get(name)!.data;
    opts.perClass.forEach((n, j) => {
      const accuracies = draws.map((split) => {
        const { x, labels } = gatherRows(trainFeatures, name, split[j]);
        const classifier = fitLogisticRegression(x, labels, dims, classes, { l2: opts.l2 });
        return accuracyOf(predictClasses(classifier, test), testFeatures.labels);
      });
      const { mean, std } = meanStd(accuracies);
      cells.push({ layer: name, perClass: n, accuracies, mean, std });
      log(`${model.name}: ${name} (${dims} features), ${n}/class: ${(100 * mean).toFixed(1)} ± ${(100 * std).toFixed(1)}%`);
    });
  }
  return {
    model: model.name, train: trainSet.name, test: testSet.name, classes: trainSet.classes, layers,
    perClass: [...opts.perClass], splits: opts.splits, seed: opts.seed, pool: opts.pool, l2: opts.l2,
    trainItems: trainFeatures.indices.length, testItems: testFeatures.indices.length, cells,
    skipped: [...trainFeatures.skipped, ...testFeatures.skipped],
  };
}

/** One probe run under a label, e.g. "trained" and "random init" for the transfer experiment and its baseline. */
export interface LabelledProbe {
  label: string;
  result: ProbeResult;
}

/** The cell of one layer and number of training images per class. */
export function cellOf(r: ProbeResult, layer: string, n: number): ProbeCell {
  return r.cells.find((c) => c.layer === layer && c.perClass === n)!;
}
