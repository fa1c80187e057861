// Occlusion sensitivity (Zeiler & Fergus 2014, Fig. 7) and Captum's Occlusion attribution, on incremental inference.
//
// A square slides over the input with its top-left corner at 0, stride, 2*stride, ... per axis, ceil((D-W)/S)+1
// positions, the last one clipped at the border (Captum's convention). Clipping rather than dropping the last
// position keeps every pixel under at least one occluder (with 224 px, window 50, stride 8 that is 23 x 23 = 529
// positions; dropping would give 22 x 22 = 484 and never occlude the last 6 rows and columns).
import { IncrementalRunner, channelSum, channelSums, planIncremental, type LayerBatch } from '../engine/incremental.js';
import type { Engine } from '../engine/engine.js';
import type { Rect } from '../util/rect.js';
import { Landmarks } from '../model/landmarks.js';
import type { Model, Pair } from '../model/layers.js';
import { batchItem, sizeOf, tensor, type Tensor } from '../tensor.js';
import { batches } from '../data/batches.js';
import type { Dataset } from '../data/dataset.js';
import type { OnProgress } from '../util/progress.js';
import { maxUnit, projectUnits, ZF_SETTINGS, type Unit } from './project.js';

/** The occluder's colour: the dataset mean (0 after mean subtraction), black (pixel 0), or a grey level 0..255. */
export type Fill = 'mean' | 'zero' | number;
export type OcclusionMode = 'paper' | 'attribution';

export interface OcclusionGrid {
  /** Occluder size [h, w] and step [y, x] in input pixels. */
  window: Pair;
  stride: Pair;
  /** Top row of each grid row and left column of each grid column; the last may be clipped at the border. */
  ys: number[];
  xs: number[];
  /** The occluder box at grid position (r, c), at index r * xs.length + c. */
  boxes: Rect[];
}

export interface OcclusionOptions {
  /** Occluder side in pixels (default: about 22% of the input side, the paper's ~50 of 224). */
  window?: number | Pair;
  /** Step between positions (default: about window / 6, the paper-like 8 for a 50 px square). */
  stride?: number | Pair;
  fill?: Fill;
  /** Class whose probability (paper) or output (attribution) is tracked; default: the unoccluded prediction. */
  target?: number;
  /** Layer whose strongest feature map is tracked (paper mode); default the deepest rectified feature map (relu5 on ZFNet, the paper's layer 5). */
  layer?: string;
  mode?: OcclusionMode;
  /**
   * Recompute only what each occluder changes (true), every occluded image in full (false), or (auto, the default)
   * incrementally where the plan saves at least 1.4x the FLOPs: below that gathering its crops costs more than it saves
   * (`node --import tsx bench/tooling/occlusion-modes.ts`, warm, ResNet-18 at 224: FLOP savings of 1.80x (50 px,
   * stride 8), 1.74x (56/28), 1.45x (100/50) and 1.19x (140/42) ran 1.61x, 1.50x, 1.19x and 0.83x faster than full).
   */
  incremental?: boolean | 'auto';
  /** Occluded images per engine call; default 128 incremental, 32 full (an incremental item holds ~10x less data). */
  batch?: number;
  /** Incremental plan: switch to full computation where the changed box covers this share of a map. */
  fullFraction?: number;
  /** Paper mode: only grid rows [from, to) (a band of the map, e.g. for a quick look). */
  rows?: Pair;
  /**
   * Paper mode, (c): grid positions [row, col] whose occluded image to project. Default: where (b) is lowest (the
   * square hides the feature), where (d) is lowest (it hides the class) and where (b) is highest.
   */
  projectAt?: Pair[];
  onProgress?: OnProgress;
  /** Stops the run between batches of positions (the viewer's cancel). */
  signal?: AbortSignal;
}

interface OcclusionCommon {
  grid: OcclusionGrid;
  target: number;
  /** Most probable class of the unoccluded input. */
  predicted: number;
  fill: Fill;
  /** FLOPs per occluded input: full recomputation, and what the incremental plan computes (undefined when full). */
  flops: { full: number; incremental: number | undefined };
}

/** One deconvnet projection of (c): the top activation of the tracked map, with the occluder at `position` or none. */
export interface OccludedProjection {
  position: Pair | null;
  unit: Unit;
  value: number;
  projection: Tensor;
}

export interface PaperMaps extends OcclusionCommon {
  mode: 'paper';
  layer: string;
  /** The feature map of `layer` with the largest activation on the unoccluded input. */
  feature: number;
  unoccluded: { activation: number; probability: number };
  /** (b) total activation of `feature`, [rows, cols]. */
  activation: Tensor;
  /** (d) p(target) after softmax, [rows, cols]. */
  probability: Tensor;
  /** (e) most probable class (an index, stored as float), [rows, cols]. */
  topClass: Tensor;
  /** (c) the unoccluded projection first, then one per projected occluder position. */
  projections: OccludedProjection[];
}

export interface AttributionMap extends OcclusionCommon {
  mode: 'attribution';
  /** Captum's Occlusion: per pixel, the mean over covering windows of output_t(original) - output_t(occluded); [1,C,H,W]. */
  attribution: Tensor;
  /** output_t(original) - output_t(occluded) per grid position, [rows, cols]. */
  delta: Tensor;
}

export type OcclusionResult = PaperMaps | AttributionMap;

// Measured on zfnet-224 (bench/occlusion.ts): incremental time fell from batch 32 to 128 and flattened after; full
// recomputation holds ~13 MB of activations per image, so its batch stays small.
const INCREMENTAL_BATCH = 128;
const FULL_BATCH = 32;
/** In auto mode, the least FLOP saving (full / incremental) for which the incremental plan runs. */
const MIN_INCREMENTAL_SAVING = 1.4;

const pair = (v: number | Pair): Pair => (typeof v === 'number' ? [v, v] : v);

/** The documented defaults: window round(0.223 * side) (50 at 224, 14 at 64), stride max(1, round(window / 6)). */
export function defaultGeometry(input: [number, number, number]): { window: Pair; stride: Pair } {
  const window: Pair = [Math.max(1, Math.round(0.223 * input[1])), Math.max(1, Math.round(0.223 * input[2]))];
  return { window, stride: [Math.max(1, Math.round(window[0] / 6)), Math.max(1, Math.round(window[1] / 6))] };
}

function axisStarts(size: number, window: number, stride: number, what: string): number[] {
  if (!Number.isInteger(window) || window < 1 || window > size) throw new Error(`${what} window ${window} must be an integer in 1..${size} (the input side)`);
  if (!Number.isInteger(stride) || stride < 1) throw new Error(`${what} stride ${stride} must be an integer >= 1`);
  return Array.from({ length: Math.ceil((size - window) / stride) + 1 }, (_, i) => i * stride);
}

/** Occluder positions over an H x W input (optionally only grid rows [from, to)). */
export function occlusionGrid(size: Pair, window: number | Pair, stride: number | Pair, rows?: Pair): OcclusionGrid {
  const [wh, ww] = pair(window);
  const [sh, sw] = pair(stride);
  let ys = axisStarts(size[0], wh, sh, 'vertical');
  const xs = axisStarts(size[1], ww, sw, 'horizontal');
  if (rows) {
    const [a, b] = rows;
    if (!(Number.isInteger(a) && Number.isInteger(b) && a >= 0 && b > a && b <= ys.length)) throw new Error(`rows [${a}, ${b}) must lie within the grid's ${ys.length} rows`);
    ys = ys.slice(a, b);
  }
  const boxes = ys.flatMap((y) => xs.map((x): Rect => [y, x, Math.min(y + wh, size[0]), Math.min(x + ww, size[1])]));
  return { window: [wh, ww], stride: [sh, sw], ys, xs, boxes };
}

/** The occluder positions over a model's input: the given window and stride, else the documented defaults. */
export function modelOcclusionGrid(input: [number, number, number], options: Pick<OcclusionOptions, 'window' | 'stride' | 'rows'> = {}): OcclusionGrid {
  const defaults = defaultGeometry(input);
  return occlusionGrid([input[1], input[2]], options.window ?? defaults.window, options.stride ?? defaults.stride, options.rows);
}

/** The occluder's value at every input position, in network units (after mean subtraction and division by std). */
export function fillImage(model: Pick<Model, 'input' | 'preprocess'>, fill: Fill): Float32Array {
  const [c, h, w] = model.input;
  const out = new Float32Array(c * h * w);
  if (fill === 'mean') return out;
  const grey = fill === 'zero' ? 0 : fill;
  if (!(typeof grey === 'number' && Number.isFinite(grey) && grey >= 0 && grey <= 255)) throw new Error(`fill must be 'mean', 'zero' or a grey level 0..255, got ${fill}`);
  const { mean, std, meanImage } = model.preprocess;
  const at = (v: number[], k: number) => (v.length === 1 ? v[0] : v[k]);
  for (let k = 0; k < c; k++) {
    for (let p = 0; p < h * w; p++) {
      const i = k * h * w + p;
      out[i] = (grey - (meanImage ? meanImage.data[i] : at(mean, k))) / at(std, k);
    }
  }
  return out;
}

/** The input with one box replaced by the fill, written into `out` at `offset` (a batch slot). */
export function occludeInto(input: Float32Array, shape: [number, number, number], box: Rect, fill: Float32Array, out: Float32Array, offset = 0): void {
  const [c, h, w] = shape;
  const [y0, x0, y1, x1] = box;
  out.set(input, offset);
  for (let k = 0; k < c; k++) {
    for (let y = y0; y < y1; y++) {
      const i = (k * h + y) * w;
      out.set(fill.subarray(i + x0, i + x1), offset + i + x0);
    }
  }
}

/** Evaluates occluded inputs in batches: returns the requested layers' outputs for a list of grid positions. */
type Evaluate = (positions: number[]) => Promise<Map<string, LayerBatch>>;

async function evaluator(engine: Engine, input: Tensor, grid: OcclusionGrid, fill: Float32Array, layers: string[], options: OcclusionOptions): Promise<{ evaluate: Evaluate; incrementalFlops: number | undefined; batch: number }> {
  const mode = options.incremental ?? 'auto';
  if (mode !== false) {
    const plan = planIncremental(engine.infos, grid.boxes, { fullFraction: options.fullFraction });
    if (mode === true || plan.flops.full >= MIN_INCREMENTAL_SAVING * plan.flops.incremental) {
      const runner = await IncrementalRunner.create(engine, input, plan, layers, fill);
      return { evaluate: (positions) => runner.run(positions), incrementalFlops: plan.flops.incremental, batch: options.batch ?? INCREMENTAL_BATCH };
    }
  }
  const shape = engine.model.input;
  const per = sizeOf(shape);
  let buffer = new Float32Array(0);
  const evaluate: Evaluate = async (positions) => {
    if (buffer.length < positions.length * per) buffer = new Float32Array(positions.length * per);
    const batch = tensor([positions.length, ...shape], buffer.subarray(0, positions.length * per));
    positions.forEach((p, j) => occludeInto(input.data, shape, grid.boxes[p], fill, batch.data, j * per));
    const { activations } = await engine.forward(batch, layers);
    return new Map(layers.map((name) => {
      const t = activations.get(name)!;
      return [name, { kind: 'full', shape: t.shape.slice(1), data: t.data }];
    }));
  };
  return { evaluate, incrementalFlops: undefined, batch: options.batch ?? FULL_BATCH };
}

function softmaxInPlace(v: Float32Array | Float64Array, isSoftmax: boolean): void {
  if (isSoftmax) return;
  let max = -Infinity;
  for (const x of v) max = Math.max(max, x);
  let sum = 0;
  for (let i = 0; i < v.length; i++) {
    v[i] = Math.exp(v[i] - max);
    sum += v[i];
  }
  for (let i = 0; i < v.length; i++) v[i] /= sum;
}

function argmax(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}

/** A vector layer's output for item n of a batch. */
function rowOf(lb: LayerBatch, n: number): Float32Array {
  if (lb.kind !== 'full') throw new Error('internal: the output layer came back as a patch');
  const k = sizeOf(lb.shape);
  return lb.data.subarray(n * k, (n + 1) * k);
}

async function forEachBatch(grid: OcclusionGrid, batch: number, evaluate: Evaluate, options: Pick<OcclusionOptions, 'onProgress' | 'signal'>, body: (outs: Map<string, LayerBatch>, positions: number[]) => void): Promise<void> {
  const total = grid.boxes.length;
  for (let start = 0; start < total; start += batch) {
    if (options.signal?.aborted) throw options.signal.reason ?? new Error('occlusion aborted');
    const positions = Array.from({ length: Math.min(batch, total - start) }, (_, j) => start + j);
    body(await evaluate(positions), positions);
    options.onProgress?.(start + positions.length, total);
  }
}

function checkTarget(target: number, classes: number): void {
  if (!Number.isInteger(target) || target < 0 || target >= classes) throw new Error(`target ${target} is out of range: the model has ${classes} classes (0..${classes - 1})`);
}

function checkBatch(batch: number): void {
  if (!Number.isInteger(batch) || batch < 1) throw new Error(`batch must be an integer >= 1, got ${batch}`);
}

/**
 * The occlusion experiment of one input [1, C, H, W]. Paper mode gives Fig. 7's maps (b)-(e) and projections (c);
 * attribution mode gives Captum's Occlusion attribution.
 */
export async function occlusionMaps(engine: Engine, input: Tensor, options: OcclusionOptions & { mode: 'attribution' }): Promise<AttributionMap>;
export async function occlusionMaps(engine: Engine, input: Tensor, options?: OcclusionOptions & { mode?: 'paper' }): Promise<PaperMaps>;
export async function occlusionMaps(engine: Engine, input: Tensor, options?: OcclusionOptions): Promise<PaperMaps | AttributionMap>;
export async function occlusionMaps(engine: Engine, input: Tensor, options: OcclusionOptions = {}): Promise<PaperMaps | AttributionMap> {
  const { model } = engine;
  if (input.shape.length !== 4 || input.shape[0] !== 1 || input.shape.slice(1).join(',') !== model.input.join(',')) {
    throw new Error(`occlusion takes one input [1,${model.input}], got [${input.shape}]`);
  }
  const mode = options.mode ?? 'paper';
  if (mode !== 'paper' && mode !== 'attribution') throw new Error(`mode must be paper or attribution, got '${String(mode)}'`);
  if (mode === 'attribution' && options.rows) throw new Error('rows is for paper mode: an attribution needs every window');
  const grid = modelOcclusionGrid(model.input, options);
  const fill = options.fill ?? 'mean';
  const fillValues = fillImage(model, fill);
  if (options.batch !== undefined) checkBatch(options.batch);
  return mode === 'paper' ? paperMaps(engine, input, grid, fill, fillValues, options) : attributionMap(engine, input, grid, fill, fillValues, options);
}

async function attributionMap(engine: Engine, input: Tensor, grid: OcclusionGrid, fill: Fill, fillValues: Float32Array, options: OcclusionOptions): Promise<AttributionMap> {
  const [c, h, w] = engine.model.input;
  const out = new Landmarks(engine.model, engine.infos).output();
  const base = (await engine.forward(input, [out.name])).activations.get(out.name)!.data;
  const predicted = argmax(base);
  const target = options.target ?? predicted;
  checkTarget(target, base.length);
  const { evaluate, incrementalFlops, batch } = await evaluator(engine, input, grid, fillValues, [out.name], options);
  const delta = tensor([grid.ys.length, grid.xs.length]);
  const sum = new Float64Array(h * w);
  const count = new Uint32Array(h * w);
  await forEachBatch(grid, batch, evaluate, options, (outs, positions) => {
    const lb = outs.get(out.name)!;
    positions.forEach((p, j) => {
      const d = base[target] - rowOf(lb, j)[target];
      delta.data[p] = d;
      const [y0, x0, y1, x1] = grid.boxes[p];
      for (let y = y0; y < y1; y++) {
        for (let x = x0; x < x1; x++) {
          sum[y * w + x] += d;
          count[y * w + x]++;
        }
      }
    });
  });
  const attribution = tensor([1, c, h, w]);
  for (let k = 0; k < c; k++) for (let i = 0; i < h * w; i++) attribution.data[k * h * w + i] = sum[i] / count[i];
  return { mode: 'attribution', grid, target, predicted, fill, flops: flopsOf(engine, incrementalFlops), attribution, delta };
}

function flopsOf(engine: Engine, incremental: number | undefined): { full: number; incremental: number | undefined } {
  return { full: engine.infos.reduce((a, l) => a + l.flops, 0), incremental };
}

/** Index of the feature map with the largest single activation (first on ties). */
function strongestFeature(act: Tensor): number {
  const channels = act.shape[1];
  let best = 0;
  let bestValue = -Infinity;
  for (let f = 0; f < channels; f++) {
    const v = maxUnit(act, 0, f).value;
    if (v > bestValue) [best, bestValue] = [f, v];
  }
  return best;
}

async function paperMaps(engine: Engine, input: Tensor, grid: OcclusionGrid, fill: Fill, fillValues: Float32Array, options: OcclusionOptions): Promise<PaperMaps> {
  const { model } = engine;
  const marks = new Landmarks(model, engine.infos);
  const layer = options.layer ?? marks.lastFeatureMap();
  const shape = engine.info(layer).outShape;
  if (shape.length !== 3) throw new Error(`layer ${layer} outputs [${shape}]; occlusion tracks a layer of feature maps [C,H,W]`);
  const out = marks.output();
  const { activations } = await engine.forward(input, [layer, out.name]);
  const act = activations.get(layer)!;
  const probs = Float64Array.from(activations.get(out.name)!.data);
  softmaxInPlace(probs, out.isSoftmax);
  const predicted = argmax(probs);
  const target = options.target ?? predicted;
  checkTarget(target, probs.length);
  const feature = strongestFeature(act);
  const baseSums = channelSums(act.data, shape);

  const { evaluate, incrementalFlops, batch } = await evaluator(engine, input, grid, fillValues, [layer, out.name], options);
  const [rows, cols] = [grid.ys.length, grid.xs.length];
  const activation = tensor([rows, cols]);
  const probability = tensor([rows, cols]);
  const topClass = tensor([rows, cols]);
  await forEachBatch(grid, batch, evaluate, options, (outs, positions) => {
    const lb = outs.get(layer)!;
    const scores = outs.get(out.name)!;
    positions.forEach((p, j) => {
      activation.data[p] = channelSum(lb, j, feature, baseSums);
      const pr = Float64Array.from(rowOf(scores, j));
      softmaxInPlace(pr, out.isSoftmax);
      probability.data[p] = pr[target];
      topClass.data[p] = argmax(pr);
    });
  });
  const projectAt = options.projectAt ?? defaultProjectionPositions(activation, probability, cols);
  for (const [r, c] of projectAt) {
    if (!(Number.isInteger(r) && Number.isInteger(c) && r >= 0 && r < rows && c >= 0 && c < cols)) throw new Error(`projection position (${r},${c}) is outside the ${rows}x${cols} grid`);
  }
  const projections = await occludedProjections(engine, input, layer, feature, grid, fillValues, projectAt);
  return {
    mode: 'paper',
    grid,
    target,
    predicted,
    fill,
    flops: flopsOf(engine, incrementalFlops),
    layer,
    feature,
    unoccluded: { activation: baseSums[feature], probability: probs[target] },
    activation,
    probability,
    topClass,
    projections,
  };
}

/** Where the occluder hurts the feature most, where it hurts the class most, and where the feature is strongest. */
function defaultProjectionPositions(activation: Tensor, probability: Tensor, cols: number): Pair[] {
  const lowest = (t: Tensor) => argmax(t.data.map((v) => -v));
  const picks = [lowest(activation), lowest(probability), argmax(activation.data)];
  return [...new Set(picks)].map((i): Pair => [Math.floor(i / cols), i % cols]);
}

/** (c): the deconvnet projection of the map's top activation, unoccluded and with the occluder at each position. */
async function occludedProjections(engine: Engine, input: Tensor, layer: string, feature: number, grid: OcclusionGrid, fill: Float32Array, at: Pair[]): Promise<OccludedProjection[]> {
  const shape = engine.model.input;
  const per = sizeOf(shape);
  const images = tensor([at.length + 1, ...shape]);
  images.data.set(input.data);
  at.forEach(([r, c], j) => occludeInto(input.data, shape, grid.boxes[r * grid.xs.length + c], fill, images.data, (j + 1) * per));
  const act = (await engine.forward(images, [layer])).activations.get(layer)!;
  const units = Array.from({ length: at.length + 1 }, (_, i) => maxUnit(act, i, feature).unit);
  const projected = await projectUnits(engine, images, layer, units, ZF_SETTINGS);
  return projected.map((p, i) => ({ position: i === 0 ? null : at[i - 1], unit: p.unit, value: p.value, projection: p.projection }));
}

export interface LocalisationScore {
  images: number;
  /** Images whose p(correct) minimum has the occluder's centre inside the object box. */
  hits: number;
  score: number;
  /** Chance level: the mean share of grid positions whose occluder centre lies in the box. */
  chance: number;
  /** Per image: its minimum's grid position, the box, and its chance (the share of positions centred in the box). */
  perImage: { name: string; hit: boolean; minimum: [number, number]; box: Rect; chance: number }[];
}

/** The score of a list of per-image results: hits over images, chance their mean (in list order). */
export function scoreOf(perImage: LocalisationScore['perImage']): LocalisationScore {
  const hits = perImage.filter((i) => i.hit).length;
  const n = Math.max(perImage.length, 1);
  return { images: perImage.length, hits, score: hits / n, chance: perImage.reduce((a, i) => a + i.chance, 0) / n, perImage };
}

/**
 * The "pointing game" on images with known object boxes: does p(correct class) fall lowest when the grey square
 * covers the object? A hit is a minimum whose square's centre lies inside the box. Positions tie to the first.
 */
export async function localisationScore(
  engine: Engine,
  items: { input: Tensor; label: number; box: Rect; name: string }[],
  options: Pick<OcclusionOptions, 'window' | 'stride' | 'fill' | 'batch'> & { onProgress?: OnProgress } = {},
): Promise<LocalisationScore> {
  const perImage: LocalisationScore['perImage'] = [];
  // Progress counts images here; each image's positions are not reported.
  const { onProgress, ...occlusion } = options;
  for (const [k, item] of items.entries()) {
    const maps = await occlusionMaps(engine, item.input, { ...occlusion, target: item.label, mode: 'paper', projectAt: [] });
    const { ys, xs, window } = maps.grid;
    const p = maps.probability.data;
    let best = 0;
    for (let i = 1; i < p.length; i++) if (p[i] < p[best]) best = i;
    const centre = (r: number, c: number): [number, number] => [ys[r] + window[0] / 2, xs[c] + window[1] / 2];
    const inside = ([y, x]: [number, number]) => y >= item.box[0] && y < item.box[2] && x >= item.box[1] && x < item.box[3];
    const minimum: [number, number] = [Math.floor(best / xs.length), best % xs.length];
    let covered = 0;
    for (let r = 0; r < ys.length; r++) for (let c = 0; c < xs.length; c++) if (inside(centre(r, c))) covered++;
    perImage.push({ name: item.name, hit: inside(centre(...minimum)), minimum, box: item.box, chance: covered / (ys.length * xs.length) });
    onProgress?.(k + 1, items.length);
  }
  return scoreOf(perImage);
}

/** The first `count` images (or those at the given indices) of a dataset that records object boxes, preprocessed for the model: the score's inputs. */
export async function localisationItems(ds: Dataset, model: Pick<Model, 'input' | 'preprocess'>, count: number | readonly number[]): Promise<Parameters<typeof localisationScore>[1]> {
  const items: Parameters<typeof localisationScore>[1] = [];
  const indices = typeof count === 'number' ? Array.from({ length: Math.min(count, ds.size) }, (_, i) => i) : [...count];
  for await (const b of batches(ds, { input: model.input, preprocess: model.preprocess, batchSize: 16, indices })) {
    if (!b.boxes) throw new Error(`${ds.name} has no object boxes: the localisation score needs a dataset that records them, such as shapes`);
    b.indices.forEach((_, j) => items.push({ input: batchItem(b.input, j), label: b.labels[j], box: b.boxes![j]!, name: b.names[j] }));
  }
  return items;
}
