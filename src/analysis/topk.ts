// Feature visualization over a dataset (Zeiler & Fergus 2014, Fig. 2): for every feature map of some layers, the k
// strongest activations over all images, found in one streaming forward pass, then each projected to pixel space
// beside the image patch under its receptive field.
//
// Ranking (the tie rule, so that the stream equals a sort of all activations): larger value first, then lower
// dataset index, then lower position in row-major order (lower y, then lower x). NaN and -Infinity are never kept
// (activations are assumed finite: a map holding NaN may lose its other values, as ONNX TopK orders NaN first).
// With perImage = p, an image contributes at most its p best positions (same rule) to each feature map.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { batches } from '../data/batches.js';
import type { Dataset, Skipped } from '../data/dataset.js';
import { inputToImage, type RgbImage } from '../data/image.js';
import type { Engine, TopkCandidates } from '../engine/engine.js';
import { mapShape } from '../engine/topk-graph.js';
import { findLayer, layerToJson, type Model } from '../model/layers.js';
import { unitField } from '../model/shapes.js';
import { batchItem, concatBatch, type Tensor } from '../tensor.js';
import { writeFileAtomic } from '../util/fs.js';
import { projectUnits, ZF_SETTINGS, type ProjectionSettings, type Unit } from './project.js';

/** One kept activation: feature map value at (y, x) of dataset image `image`. */
export interface TopkEntry {
  value: number;
  image: number;
  y: number;
  x: number;
}

/** Negative when a ranks before b under the tie rule above. */
export function compareEntries(a: TopkEntry, b: TopkEntry): number {
  if (a.value !== b.value) return a.value > b.value ? -1 : 1;
  return a.image - b.image || a.y - b.y || a.x - b.x;
}

export interface LayerTopk {
  layer: string;
  /** The layer's output per image, [C, H, W] ([F, 1, 1] for a vector layer). */
  shape: [number, number, number];
  /** Per feature map, its kept entries best first (fewer than k only when the data has fewer candidates). */
  features: TopkEntry[][];
}

export interface TopkResult {
  model: string;
  dataset: string;
  k: number;
  perImage: number;
  /** Images that were read and scanned. */
  images: number;
  skipped: Skipped[];
  layers: LayerTopk[];
  /** The batch a resumed scan started at; undefined for a fresh scan. */
  resumedAt?: number;
}

export interface TopkOptions {
  /** Default: every ReLU on a feature map (relu1..relu5 in the zoo; the paper's layers 1-5). */
  layers?: string[];
  k?: number;
  /** Positions one image may contribute per feature map; 1 (default) is the paper's criterion. */
  perImage?: number;
  batchSize?: number;
  /** Dataset indices to scan, in this order; default all. The result does not depend on the order. */
  indices?: ArrayLike<number>;
  /** A checkpoint file, written (atomically) every `checkpointEvery` batches and when the scan ends. */
  checkpoint?: string;
  checkpointEvery?: number;
  /** Continue from `checkpoint`, which must come from the same model, data and options. */
  resume?: boolean;
  /** Stops the scan between batches (the last checkpoint stays for a resume). */
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

// ---------------------------------------------------------------- layers

/** The rectified feature maps: every ReLU whose output is a [C, H, W] map; the conv layers if there is none. */
export function defaultTopkLayers(engine: Engine): string[] {
  const maps = engine.infos.filter((i) => i.outShape.length === 3);
  const relus = maps.filter((i) => i.layer.type === 'relu').map((i) => i.layer.name);
  return relus.length > 0 ? relus : maps.filter((i) => i.layer.type === 'conv2d').map((i) => i.layer.name);
}

/** The requested layers in model order, each checked; an unknown name throws, naming the model's layers. */
export function resolveTopkLayers(engine: Engine, layers?: string[]): string[] {
  const names = layers ?? defaultTopkLayers(engine);
  if (names.length === 0) throw new Error(`model ${engine.model.name} has no feature maps to scan; name layers explicitly`);
  const unique = [...new Set(names)];
  for (const name of unique) findLayer(engine.model, name);
  return unique.sort((a, b) => findLayer(engine.model, a).index - findLayer(engine.model, b).index);
}

// ---------------------------------------------------------------- bounded heaps

/**
 * For each of `features` maps, the k best entries seen so far, as a min-heap (worst entry at the root) in flat typed
 * arrays: memory is features x k whatever the number of images.
 */
export class FeatureHeaps {
  private readonly values: Float64Array;
  private readonly images: Int32Array;
  private readonly ys: Int32Array;
  private readonly xs: Int32Array;
  private readonly sizes: Int32Array;

  constructor(
    readonly features: number,
    readonly k: number,
  ) {
    this.values = new Float64Array(features * k);
    this.images = new Int32Array(features * k);
    this.ys = new Int32Array(features * k);
    this.xs = new Int32Array(features * k);
    this.sizes = new Int32Array(features);
  }

  /** A value below this cannot enter feature f's heap: its worst kept value once full, -Infinity before. */
  floor(f: number): number {
    return this.sizes[f] < this.k ? -Infinity : this.values[f * this.k];
  }

  /** Slot a ranks after slot b (is worse). */
  private worse(a: number, b: number): boolean {
    const va = this.values[a], vb = this.values[b];
    if (va !== vb) return va < vb;
    return (this.images[a] - this.images[b] || this.ys[a] - this.ys[b] || this.xs[a] - this.xs[b]) > 0;
  }

  private swap(a: number, b: number): void {
    [this.values[a], this.values[b]] = [this.values[b], this.values[a]];
    [this.images[a], this.images[b]] = [this.images[b], this.images[a]];
    [this.ys[a], this.ys[b]] = [this.ys[b], this.ys[a]];
    [this.xs[a], this.xs[b]] = [this.xs[b], this.xs[a]];
  }

  private set(slot: number, value: number, image: number, y: number, x: number): void {
    this.values[slot] = value;
    this.images[slot] = image;
    this.ys[slot] = y;
    this.xs[slot] = x;
  }

  offer(f: number, value: number, image: number, y: number, x: number): void {
    if (!(value > -Infinity)) return;
    const base = f * this.k;
    const n = this.sizes[f];
    if (n < this.k) {
      this.set(base + n, value, image, y, x);
      this.sizes[f] = n + 1;
      for (let i = n; i > 0; ) {
        const parent = (i - 1) >> 1;
        if (!this.worse(base + i, base + parent)) break;
        this.swap(base + i, base + parent);
        i = parent;
      }
      return;
    }
    const root = this.values[base];
    if (value < root) return;
    if (value === root) {
      const rank = image - this.images[base] || y - this.ys[base] || x - this.xs[base];
      if (rank >= 0) return;
    }
    this.set(base, value, image, y, x);
    for (let i = 0; ; ) {
      const l = 2 * i + 1, r = l + 1;
      let worst = i;
      if (l < n && this.worse(base + l, base + worst)) worst = l;
      if (r < n && this.worse(base + r, base + worst)) worst = r;
      if (worst === i) break;
      this.swap(base + i, base + worst);
      i = worst;
    }
  }

  /** Feature f's entries, best first. */
  sorted(f: number): TopkEntry[] {
    const out: TopkEntry[] = [];
    for (let s = f * this.k; s < f * this.k + this.sizes[f]; s++) {
      out.push({ value: this.values[s], image: this.images[s], y: this.ys[s], x: this.xs[s] });
    }
    return out.sort(compareEntries);
  }
}

// ---------------------------------------------------------------- candidates

/** One batch's per-image candidates ([N, C, per], best first per map) offered to a layer's heaps. */
function offerCandidates({ values, positions, shape: [, C, per] }: TopkCandidates, images: number[], W: number, heaps: FeatureHeaps): void {
  for (let n = 0; n < images.length; n++) {
    for (let f = 0; f < C; f++) {
      const floor = heaps.floor(f);
      const base = (n * C + f) * per;
      // Candidates come best first: once one is below the floor, so are the rest (NaN stops the image too).
      for (let j = 0; j < per && values[base + j] >= floor; j++) {
        const p = Number(positions[base + j]);
        heaps.offer(f, values[base + j], images[n], Math.floor(p / W), p % W);
      }
    }
  }
}

// ---------------------------------------------------------------- checkpoints

interface Checkpoint {
  version: 1;
  fingerprint: Record<string, string | number>;
  /** The next batch (of the full order) to scan. */
  nextBatch: number;
  images: number;
  skipped: Skipped[];
  /** Per layer, per feature: [value, image, y, x] best first. */
  layers: Record<string, [number, number, number, number][][]>;
}

function hashOf(update: (h: ReturnType<typeof createHash>) => void): string {
  const h = createHash('sha256');
  update(h);
  return h.digest('hex').slice(0, 16);
}

/** Everything that decides a scan's result; a checkpoint from a scan with other settings is refused. */
function fingerprint(model: Model, ds: Dataset, layers: string[], k: number, perImage: number, batchSize: number, order: ArrayLike<number> | undefined): Record<string, string | number> {
  const weights = hashOf((h) => {
    h.update(JSON.stringify(model.layers.map(layerToJson)));
    for (const key of [...model.weights.keys()].sort()) {
      const t = model.weights.get(key)!;
      h.update(key);
      h.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    }
    h.update(JSON.stringify({ mean: model.preprocess.mean, std: model.preprocess.std }));
    const m = model.preprocess.meanImage;
    if (m) h.update(new Uint8Array(m.data.buffer, m.data.byteOffset, m.data.byteLength));
  });
  const indices = order ? hashOf((h) => h.update(new Uint8Array(Int32Array.from(order as ArrayLike<number>).buffer))) : 'all';
  return { model: model.name, weights, dataset: ds.name, size: ds.size, indices, layers: layers.join(','), k, perImage, batchSize };
}

function readCheckpoint(path: string, want: Record<string, string | number>): Checkpoint {
  if (!existsSync(path)) throw new Error(`no checkpoint at ${path} to resume; run without resume to start a new scan`);
  let cp: Checkpoint;
  try {
    cp = JSON.parse(readFileSync(path, 'utf8')) as Checkpoint;
  } catch (e) {
    throw new Error(`checkpoint ${path} is unreadable: ${(e as Error).message}`);
  }
  if (cp.version !== 1) throw new Error(`checkpoint ${path} has version ${cp.version}; this convscope writes version 1`);
  for (const [key, value] of Object.entries(want)) {
    if (cp.fingerprint[key] !== value) {
      throw new Error(`checkpoint ${path} is from another scan: its ${key} is ${cp.fingerprint[key]}, this one's ${value}`);
    }
  }
  return cp;
}

function writeCheckpoint(path: string, cp: Checkpoint): void {
  writeFileAtomic(path, JSON.stringify(cp));
}

// ---------------------------------------------------------------- the scan

function checkCount(name: string, v: number): void {
  if (!(Number.isInteger(v) && v >= 1)) throw new Error(`${name} must be an integer >= 1, got ${v}`);
}

/**
 * One forward pass over the data computing all requested layers at once, keeping per feature map the k best
 * activations. Memory: the heaps and a few batches, whatever the number of images.
 */
export async function scanTopk(engine: Engine, ds: Dataset, options: TopkOptions = {}): Promise<TopkResult> {
  const k = options.k ?? 9;
  const perImage = options.perImage ?? 1;
  const batchSize = options.batchSize ?? 64;
  const every = options.checkpointEvery ?? 20;
  for (const [name, v] of [['k', k], ['perImage', perImage], ['batchSize', batchSize], ['checkpointEvery', every]] as const) checkCount(name, v);
  const layers = resolveTopkLayers(engine, options.layers);
  const shapes = layers.map((l) => mapShape(engine.info(l).outShape));
  const heaps = shapes.map(([c]) => new FeatureHeaps(c, k));
  const model = engine.model;
  const print = options.checkpoint ? fingerprint(model, ds, layers, k, perImage, batchSize, options.indices) : {};
  const total = options.indices ? options.indices.length : ds.size;

  let startBatch = 0;
  let images = 0;
  let skipped: Skipped[] = [];
  if (options.resume) {
    if (!options.checkpoint) throw new Error('resume needs a checkpoint path');
    const cp = readCheckpoint(options.checkpoint, print);
    layers.forEach((l, i) => cp.layers[l].forEach((entries, f) => entries.forEach(([v, img, y, x]) => heaps[i].offer(f, v, img, y, x))));
    ({ nextBatch: startBatch, images, skipped } = cp);
  }

  const snapshot = (nextBatch: number, skippedNow: Skipped[]): Checkpoint => ({
    version: 1, fingerprint: print, nextBatch, images, skipped: skippedNow,
    layers: Object.fromEntries(layers.map((l, i) => [l, Array.from({ length: shapes[i][0] }, (_, f) => heaps[i].sorted(f).map((e) => [e.value, e.image, e.y, e.x] as [number, number, number, number]))])),
  });

  const stream = batches(ds, { input: model.input, preprocess: model.preprocess, batchSize, indices: options.indices, startBatch });
  let sinceCheckpoint = 0;
  let reported = 0;
  for await (const batch of stream) {
    const candidates = await engine.topkScan(batch.input, layers, perImage);
    layers.forEach((l, i) => offerCandidates(candidates.get(l)!, batch.indices, shapes[i][2], heaps[i]));
    images += batch.indices.length;
    reported = Math.min(total, (batch.batch + 1) * batchSize);
    options.onProgress?.(reported, total);
    // The stream assembles batches in order, so what it has skipped so far belongs to this batch or earlier ones.
    if (options.checkpoint && ++sinceCheckpoint >= every) {
      writeCheckpoint(options.checkpoint, snapshot(batch.batch + 1, [...skipped, ...stream.skipped]));
      sinceCheckpoint = 0;
    }
    if (options.signal?.aborted) throw options.signal.reason ?? new Error('top-k scan aborted');
  }
  if (reported < total) options.onProgress?.(total, total);
  skipped = [...skipped, ...stream.skipped];
  if (options.checkpoint) writeCheckpoint(options.checkpoint, snapshot(stream.batchCount, skipped));

  return {
    model: model.name,
    dataset: ds.name,
    k,
    perImage,
    images,
    skipped,
    layers: layers.map((layer, i) => ({ layer, shape: shapes[i], features: Array.from({ length: shapes[i][0] }, (_, f) => heaps[i].sorted(f)) })),
    ...(options.resume ? { resumedAt: startBatch } : {}),
  };
}

// ---------------------------------------------------------------- projections and patches

/** Rows [y0, y1) and columns [x0, x1) in input pixels. */
export type Rect = [y0: number, y1: number, x0: number, x1: number];

export interface TopkField {
  /** The receptive field as the network sees it; may extend past the image (into the padding). */
  full: Rect;
  /** The part inside the image: the patch, and where the projection is cropped. */
  clipped: Rect;
  /** Pixels of the field cut off at each border. */
  cut: { top: number; bottom: number; left: number; right: number };
  /**
   * Where a layer's fixed-size display frame sits: the full field when it fits in the image, else the image (on
   * that axis). Same size for every unit of the layer, so that patches line up in a grid.
   */
  frame: Rect;
}

/** The receptive field of unit (y, x) of a layer and its display frame. */
export function topkField(engine: Engine, layer: string, y: number, x: number): TopkField {
  const input = engine.model.input;
  const { full, clipped } = unitField(engine.info(layer), y, x, input);
  const axis = (lo: number, hi: number, size: number): [number, number] => (hi - lo <= size ? [lo, hi] : [0, size]);
  const [fy0, fy1] = axis(full[0], full[1], input[1]);
  const [fx0, fx1] = axis(full[2], full[3], input[2]);
  return {
    full,
    clipped,
    cut: { top: clipped[0] - full[0], bottom: full[1] - clipped[1], left: clipped[2] - full[2], right: full[3] - clipped[3] },
    frame: [fy0, fy1, fx0, fx1],
  };
}

export interface TopkView {
  feature: number;
  entry: TopkEntry;
  /** The dataset's name of the image. */
  name: string;
  field: TopkField;
  /** The deconvnet projection cropped to `field.clipped`, [C, h, w]. */
  projection: Tensor;
  /** The input image under `field.clipped` (mean added back), h x w. */
  patch: RgbImage;
}

export interface ProjectOptions {
  settings?: ProjectionSettings;
  /** Units per engine call (default 48); units of one call share the layer. */
  batchUnits?: number;
  onProgress?: (done: number, total: number) => void;
}

function cropTensor(t: Tensor, [y0, y1, x0, x1]: Rect): Tensor {
  const [C, H, W] = t.shape.slice(-3);
  const h = y1 - y0, w = x1 - x0;
  const out = new Float32Array(C * h * w);
  for (let c = 0; c < C; c++) for (let y = 0; y < h; y++) out.set(t.data.subarray((c * H + y0 + y) * W + x0, (c * H + y0 + y) * W + x1), (c * h + y) * w);
  return { shape: [C, h, w], data: out };
}

function cropImage(img: RgbImage, [y0, y1, x0, x1]: Rect): RgbImage {
  const C = img.channels, w = x1 - x0, h = y1 - y0;
  const data = new Uint8Array(w * h * C);
  for (let y = 0; y < h; y++) data.set(img.data.subarray(((y0 + y) * img.width + x0) * C, ((y0 + y) * img.width + x1) * C), y * w * C);
  return { width: w, height: h, channels: C, data };
}

/** The activation a projection recomputed must match the scanned one; a mismatch means the item changed. */
const VALUE_TOLERANCE = 1e-4;

/**
 * Deconvnet projections and patches of kept units of one layer, many units per engine call. The images are read
 * again (in index order, each once), so memory is about `batchUnits` images whatever the number of units.
 */
export async function projectEntries(
  engine: Engine,
  ds: Dataset,
  layer: string,
  units: { feature: number; entry: TopkEntry }[],
  options: ProjectOptions = {},
): Promise<TopkView[]> {
  const settings = options.settings ?? ZF_SETTINGS;
  const batchUnits = options.batchUnits ?? 48;
  checkCount('batchUnits', batchUnits);
  findLayer(engine.model, layer);
  const model = engine.model;
  const order = units.map((_, i) => i).sort((a, b) => units[a].entry.image - units[b].entry.image || a - b);
  const imageOrder = [...new Set(order.map((i) => units[i].entry.image))];
  const views = new Array<TopkView>(units.length);
  const queue: { unit: number; input: Tensor; image: RgbImage }[] = [];
  let done = 0;

  const flush = async (n: number): Promise<void> => {
    const chunk = queue.splice(0, n);
    const inputs = concatBatch(chunk.map((q) => q.input));
    const seeds: Unit[] = chunk.map((q) => ({ feature: units[q.unit].feature, y: units[q.unit].entry.y, x: units[q.unit].entry.x }));
    const projections = await projectUnits(engine, inputs, layer, seeds, settings);
    projections.forEach((p, j) => {
      const { feature, entry } = units[chunk[j].unit];
      if (Math.abs(p.value - entry.value) > VALUE_TOLERANCE * Math.max(1, Math.abs(entry.value))) {
        throw new Error(`${layer} feature ${feature} of image ${entry.image} is ${p.value} now but was ${entry.value} in the scan: did the dataset change?`);
      }
      const field = topkField(engine, layer, entry.y, entry.x);
      views[chunk[j].unit] = {
        feature,
        entry,
        name: ds.itemName(entry.image),
        field,
        projection: cropTensor(p.projection, field.clipped),
        patch: cropImage(chunk[j].image, field.clipped),
      };
    });
    done += chunk.length;
    options.onProgress?.(done, units.length);
  };

  let next = 0;
  const stream = batches(ds, { input: model.input, preprocess: model.preprocess, batchSize: batchUnits, indices: imageOrder });
  for await (const batch of stream) {
    if (batch.skipped.length > 0) throw new Error(`cannot read ${batch.skipped[0].name} again: ${batch.skipped[0].reason}`);
    const at = new Map(batch.indices.map((img, j) => [img, j]));
    // Units come sorted by image, so an image's units are consecutive and its picture is made once.
    let last: { index: number; input: Tensor; image: RgbImage } | undefined;
    while (next < order.length && at.has(units[order[next]].entry.image)) {
      const index = units[order[next]].entry.image;
      if (last?.index !== index) {
        const input = batchItem(batch.input, at.get(index)!);
        last = { index, input, image: inputToImage(input, model.preprocess) };
      }
      queue.push({ unit: order[next], input: last.input, image: last.image });
      next++;
    }
    while (queue.length >= batchUnits) await flush(batchUnits);
  }
  if (stream.skipped.length > 0) throw new Error(`cannot read ${stream.skipped[0].name} again: ${stream.skipped[0].reason}`);
  while (queue.length > 0) await flush(batchUnits);
  return views;
}

/** The figure's material for one feature map of a finished scan: for a report or a viewer. */
export async function featureViews(engine: Engine, ds: Dataset, topk: LayerTopk, feature: number, options: ProjectOptions = {}): Promise<TopkView[]> {
  const entries = topk.features[feature];
  if (!entries) throw new Error(`feature ${feature} is out of range for layer ${topk.layer}, which has ${topk.features.length} feature maps`);
  return projectEntries(engine, ds, topk.layer, entries.map((entry) => ({ feature, entry })), options);
}
