// Linear probes on frozen features (Zeiler & Fergus Sec. 5, the transfer experiments beside Table 3): a new softmax
// trained on one layer's activations of a frozen network, for a few labelled images per class, over random splits.
import { batches } from '../data/batches.js';
import { mixSeed, seededPermutation, type Dataset, type Skipped } from '../data/dataset.js';
import type { RgbImage } from '../data/image.js';
import { Engine } from '../engine/engine.js';
import type { Model } from '../model/layers.js';
import { sizeOf, type Tensor } from '../tensor.js';
import { linePlot, PALETTE, type Series } from '../render/plot.js';

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

// ---------------------------------------------------------------- L-BFGS

export interface LbfgsOptions {
  maxIterations: number;
  /** Stop when every gradient component is at most this. */
  gradientTolerance: number;
  /** Stop when an iteration lowers the value by less than this, relative to max(1, |value|). */
  valueTolerance?: number;
  /** Correction pairs kept; default 10. */
  memory?: number;
}

export interface LbfgsResult {
  x: Float64Array;
  value: number;
  iterations: number;
  converged: boolean;
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

function normInf(a: Float64Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/** The L-BFGS direction -H g from the two-loop recursion over the stored pairs (s, y). */
function lbfgsDirection(g: Float64Array, s: Float64Array[], y: Float64Array[]): Float64Array {
  const q = Float64Array.from(g, (v) => -v);
  const alpha = new Array<number>(s.length);
  for (let j = s.length - 1; j >= 0; j--) {
    alpha[j] = dot(s[j], q) / dot(y[j], s[j]);
    for (let i = 0; i < q.length; i++) q[i] -= alpha[j] * y[j][i];
  }
  if (s.length > 0) {
    const last = s.length - 1;
    const gamma = dot(s[last], y[last]) / dot(y[last], y[last]);
    for (let i = 0; i < q.length; i++) q[i] *= gamma;
  }
  for (let j = 0; j < s.length; j++) {
    const beta = dot(y[j], q) / dot(y[j], s[j]);
    for (let i = 0; i < q.length; i++) q[i] += (alpha[j] - beta) * s[j][i];
  }
  return q;
}

/**
 * Minimises a smooth function with L-BFGS and a backtracking (Armijo) line search. `fg` returns the value at x and
 * writes the gradient into its second argument. Meant for convex objectives, where every step keeps s.y > 0.
 */
export function minimizeLbfgs(fg: (x: Float64Array, grad: Float64Array) => number, x0: Float64Array, opts: LbfgsOptions): LbfgsResult {
  const memory = opts.memory ?? 10;
  const valueTol = opts.valueTolerance ?? 1e-10;
  let x = Float64Array.from(x0);
  let g = new Float64Array(x.length);
  let f = fg(x, g);
  const S: Float64Array[] = [];
  const Y: Float64Array[] = [];
  for (let it = 0; it < opts.maxIterations; it++) {
    if (normInf(g) <= opts.gradientTolerance) return { x, value: f, iterations: it, converged: true };
    let d = lbfgsDirection(g, S, Y);
    let slope = dot(g, d);
    if (!(slope < 0)) {
      // Curvature pairs from far away can point uphill: start again from steepest descent.
      S.length = 0;
      Y.length = 0;
      d = Float64Array.from(g, (v) => -v);
      slope = dot(g, d);
    }
    // Without curvature information the scale of the first step is unknown: make it move x by about one unit.
    let step = S.length > 0 ? 1 : 1 / Math.max(1, Math.sqrt(dot(g, g)));
    const xNew = new Float64Array(x.length);
    const gNew = new Float64Array(x.length);
    let fNew = Infinity;
    for (let tries = 0; tries < 60; tries++) {
      for (let i = 0; i < x.length; i++) xNew[i] = x[i] + step * d[i];
      fNew = fg(xNew, gNew);
      if (fNew <= f + 1e-4 * step * slope) break;
      step /= 2;
    }
    if (!(fNew <= f)) return { x, value: f, iterations: it, converged: false };
    const s = Float64Array.from(xNew, (v, i) => v - x[i]);
    const y = Float64Array.from(gNew, (v, i) => v - g[i]);
    if (dot(s, y) > 1e-12 * dot(y, y)) {
      S.push(s);
      Y.push(y);
      if (S.length > memory) {
        S.shift();
        Y.shift();
      }
    }
    const decrease = f - fNew;
    x = xNew;
    g = gNew;
    f = fNew;
    if (decrease <= valueTol * Math.max(1, Math.abs(f))) return { x, value: f, iterations: it + 1, converged: true };
  }
  return { x, value: f, iterations: opts.maxIterations, converged: normInf(g) <= opts.gradientTolerance };
}

// ---------------------------------------------------------------- multinomial logistic regression

export interface LogisticRegressionOptions {
  /** λ of the penalty (λ/2)·||W||² added to the mean cross-entropy, on standardised features; the bias is free. */
  l2: number;
  maxIterations?: number;
  gradientTolerance?: number;
}

/** A linear softmax classifier on raw features: scores = weight · x + bias (the standardisation is folded in). */
export interface LinearClassifier {
  classes: number;
  dims: number;
  /** [classes, dims] row-major. */
  weight: Float64Array;
  bias: Float64Array;
  /** Training objective at the solution, iterations used, and whether the optimiser met its tolerance. */
  loss: number;
  iterations: number;
  converged: boolean;
}

/**
 * Per-dimension mean and 1/std over the rows. Constant dimensions (dead units; float32 rounding counts as constant)
 * get 1/std = 0: they carry nothing, and dividing by a rounding error would turn noise into a feature.
 */
function standardiser(x: ArrayLike<number>, rows: number, dims: number): { mean: Float64Array; invStd: Float64Array } {
  const mean = new Float64Array(dims);
  const sq = new Float64Array(dims);
  for (let r = 0; r < rows; r++) for (let d = 0; d < dims; d++) mean[d] += x[r * dims + d];
  for (let d = 0; d < dims; d++) mean[d] /= rows;
  for (let r = 0; r < rows; r++) for (let d = 0; d < dims; d++) sq[d] += (x[r * dims + d] - mean[d]) ** 2;
  const invStd = Float64Array.from(sq, (v, d) => {
    const sd = Math.sqrt(v / rows);
    return sd > 1e-6 * Math.abs(mean[d]) && sd > 0 ? 1 / sd : 0;
  });
  return { mean, invStd };
}

/** Mean softmax cross-entropy plus (l2/2)·||W||² and its gradient, for parameters [W (classes x dims), b (classes)]. */
function softmaxObjective(z: Float64Array, labels: Int32Array, dims: number, classes: number, l2: number) {
  const rows = labels.length;
  const scores = new Float64Array(classes);
  return (theta: Float64Array, grad: Float64Array): number => {
    grad.fill(0);
    const wEnd = classes * dims;
    let loss = 0;
    for (let r = 0; r < rows; r++) {
      const xr = r * dims;
      let max = -Infinity;
      for (let k = 0; k < classes; k++) {
        let s = theta[wEnd + k];
        const wk = k * dims;
        for (let d = 0; d < dims; d++) s += theta[wk + d] * z[xr + d];
        scores[k] = s;
        if (s > max) max = s;
      }
      let sum = 0;
      for (let k = 0; k < classes; k++) sum += Math.exp(scores[k] - max);
      loss += Math.log(sum) + max - scores[labels[r]];
      for (let k = 0; k < classes; k++) {
        const residual = (Math.exp(scores[k] - max) / sum - (k === labels[r] ? 1 : 0)) / rows;
        grad[wEnd + k] += residual;
        const wk = k * dims;
        for (let d = 0; d < dims; d++) grad[wk + d] += residual * z[xr + d];
      }
    }
    let penalty = 0;
    for (let i = 0; i < wEnd; i++) {
      penalty += theta[i] * theta[i];
      grad[i] += l2 * theta[i];
    }
    return loss / rows + 0.5 * l2 * penalty;
  };
}

/**
 * Multinomial logistic regression (the paper's "new softmax") trained with full-batch L-BFGS on standardised
 * features (mean 0, variance 1 per dimension over the training rows). `x` is [labels.length, dims] row-major.
 */
export function fitLogisticRegression(x: ArrayLike<number>, labels: Int32Array, dims: number, classes: number, opts: LogisticRegressionOptions): LinearClassifier {
  const rows = labels.length;
  if (rows === 0) throw new Error('logistic regression needs at least one training row');
  if (x.length !== rows * dims) throw new Error(`features have ${x.length} values, ${rows} rows of ${dims} need ${rows * dims}`);
  for (const l of labels) if (!(l >= 0 && l < classes)) throw new Error(`label ${l} is out of range for ${classes} classes`);
  if (!(opts.l2 >= 0)) throw new Error(`l2 must be >= 0, got ${opts.l2}`);
  const { mean, invStd } = standardiser(x, rows, dims);
  const z = new Float64Array(rows * dims);
  for (let r = 0; r < rows; r++) for (let d = 0; d < dims; d++) z[r * dims + d] = (x[r * dims + d] - mean[d]) * invStd[d];
  const fit = minimizeLbfgs(softmaxObjective(z, labels, dims, classes, opts.l2), new Float64Array(classes * (dims + 1)), {
    maxIterations: opts.maxIterations ?? 500,
    gradientTolerance: opts.gradientTolerance ?? 1e-6,
  });
  // Back to raw features: w·(x - mean)·invStd + b = (w·invStd)·x + (b - Σ w·invStd·mean).
  const weight = new Float64Array(classes * dims);
  const bias = fit.x.slice(classes * dims);
  for (let k = 0; k < classes; k++) {
    for (let d = 0; d < dims; d++) {
      const w = fit.x[k * dims + d] * invStd[d];
      weight[k * dims + d] = w;
      bias[k] -= w * mean[d];
    }
  }
  return { classes, dims, weight, bias, loss: fit.value, iterations: fit.iterations, converged: fit.converged };
}

/** The highest-scoring class of each row of x ([rows, dims] row-major). */
export function predictClasses(c: LinearClassifier, x: ArrayLike<number>): Int32Array {
  const rows = x.length / c.dims;
  if (!Number.isInteger(rows)) throw new Error(`features have ${x.length} values, not a multiple of ${c.dims}`);
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = -Infinity;
    for (let k = 0; k < c.classes; k++) {
      let s = c.bias[k];
      for (let d = 0; d < c.dims; d++) s += c.weight[k * c.dims + d] * x[r * c.dims + d];
      if (s > best) {
        best = s;
        out[r] = k;
      }
    }
  }
  return out;
}

export function accuracyOf(predicted: Int32Array, labels: Int32Array): number {
  let right = 0;
  predicted.forEach((p, i) => {
    if (p === labels[i]) right++;
  });
  return right / Math.max(labels.length, 1);
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
  if (trainSet.classes.join('\n') !== testSet.classes.join('\n')) {
    throw new Error(`train and test sets have different classes: [${trainSet.classes}] vs [${testSet.classes}]`);
  }
  const log = opts.log ?? (() => {});
  const draws = probeSplits(trainSet, opts.perClass, opts.splits, opts.seed);
  const trainItems = [...new Set(draws.flat(2))].sort((a, b) => a - b);
  const tests = testIndices(testSet.size, opts.maxTest, opts.seed);
  const engine = new Engine(model);
  const progress = (what: string) => (done: number, total: number) => {
    if (done === total || done % (8 * (opts.batchSize ?? 64)) === 0) log(`${model.name}: ${what} features ${done}/${total}`);
  };
  let trainFeatures: FeatureSet, testFeatures: FeatureSet;
  try {
    const extract = { pool: opts.pool, batchSize: opts.batchSize };
    trainFeatures = await extractFeatures(engine, trainSet, trainItems, opts.layers, { ...extract, onBatch: progress('training') });
    testFeatures = await extractFeatures(engine, testSet, tests, opts.layers, { ...extract, onBatch: progress('test') });
  } finally {
    await engine.dispose();
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

// ---------------------------------------------------------------- reporting

/** One probe run under a label, e.g. "trained" and "random init" for the transfer experiment and its baseline. */
export interface LabelledProbe {
  label: string;
  result: ProbeResult;
}

function cellOf(r: ProbeResult, layer: string, n: number): ProbeCell {
  return r.cells.find((c) => c.layer === layer && c.perClass === n)!;
}

const percent = (v: number): string => (100 * v).toFixed(1);

/** A Markdown table: one row per layer, one column per (run, images per class), cells "mean ± std" in %. */
export function probeMarkdown(runs: readonly LabelledProbe[]): string {
  const first = runs[0].result;
  const columns = runs.flatMap(({ label, result }) => result.perClass.map((n) => ({ label: `${label}, ${n}/class`, result, n })));
  const lines = [
    `Linear softmax (multinomial logistic regression, L-BFGS, L2 ${first.l2}, standardised features) on frozen features; ` +
      `conv maps average-pooled to at most ${first.pool}x${first.pool}.`,
    `Training images drawn from ${first.train} (${first.splits} seeded splits, seed ${first.seed}); ` +
      `test: ${first.testItems} images of ${first.test}; ${first.classes.length} classes, chance ${percent(1 / first.classes.length)}%. ` +
      `Test accuracy in %, mean ± std over the splits.`,
    '',
    `| layer | features | ${columns.map((c) => c.label).join(' | ')} |`,
    `|---|---|${columns.map(() => '---|').join('')}`,
    ...first.layers.map(({ name, shape, dims }) =>
      `| ${name} | ${shape.join('x')}${shape.length > 1 ? ` = ${dims}` : ''} | ${columns.map((c) => {
        const cell = cellOf(c.result, name, c.n);
        return `${percent(cell.mean)} ± ${percent(cell.std)}`;
      }).join(' | ')} |`),
    '',
    ...runs.map(({ label, result }) => `- ${label}: model ${result.model}`),
  ];
  return `${lines.join('\n')}\n`;
}

/**
 * Accuracy against layer: one line per (run, images per class), one colour per number of images, runs after the
 * first dashed (so a baseline sits beside its trained counterpart), and chance.
 */
export async function probePlot(runs: readonly LabelledProbe[], title: string): Promise<RgbImage> {
  const first = runs[0].result;
  const xs = first.layers.map((_, i) => i + 1);
  const series: Series[] = runs.flatMap(({ label, result }, r) =>
    result.perClass.map((n, j) => ({
      name: `${label}, ${n}/class`,
      x: xs,
      y: result.layers.map((l) => 100 * cellOf(result, l.name, n).mean),
      color: PALETTE[j % PALETTE.length],
      dashed: r > 0,
    })));
  series.push({ name: 'chance', x: xs, y: xs.map(() => 100 / first.classes.length), color: '#999999', dashed: true });
  return linePlot({
    title,
    xLabel: `layer: ${first.layers.map((l, i) => `${i + 1} ${l.name}`).join(', ')}`,
    yLabel: 'test accuracy (%)',
    series,
    width: 720,
    height: 420,
    yRange: [0, 100],
  });
}
