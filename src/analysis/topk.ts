// Feature visualization over a dataset (Zeiler & Fergus 2014, Fig. 2): for every feature map of some layers, the k
// strongest activations over all images, found in one streaming forward pass (ranked as in topk-heaps.ts), with
// checkpoints for a long scan. topk-views.ts projects the kept activations to pixel space.
//
// With perImage = p, an image contributes at most its p best positions (same ranking) to each feature map.
import { createHash } from 'node:crypto';
import { batches } from '../data/batches.js';
import type { Dataset, Skipped } from '../data/dataset.js';
import type { Engine } from '../engine/engine.js';
import { mapShape } from '../engine/topk-graph.js';
import { Landmarks } from '../model/landmarks.js';
import { findLayer, layerToJson, type Model } from '../model/layers.js';
import type { CheckpointStore } from '../util/checkpoint.js';
import { errorLine } from '../util/errors.js';
import type { OnProgress } from '../util/progress.js';
import { FeatureHeaps, offerCandidates, type TopkEntry } from './topk-heaps.js';

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
  /** Where the scan's state is saved every `checkpointEvery` batches and when the scan ends. */
  checkpoint?: CheckpointStore;
  checkpointEvery?: number;
  /** Continue from `checkpoint`, which must come from the same model, data and options. */
  resume?: boolean;
  /** Stops the scan between batches (the last checkpoint stays for a resume). */
  signal?: AbortSignal;
  onProgress?: OnProgress;
}

// ---------------------------------------------------------------- layers

/**
 * The requested layers in model order, each checked (an unknown name throws, naming the model's layers); by default
 * five of the model's feature maps, evenly spread over depth.
 */
export function resolveTopkLayers(engine: Engine, layers?: string[]): string[] {
  const names = layers ?? new Landmarks(engine.model, engine.infos).spreadFeatureMaps();
  if (names.length === 0) throw new Error(`model ${engine.model.name} has no feature maps to scan; name layers explicitly`);
  const unique = [...new Set(names)];
  for (const name of unique) findLayer(engine.model, name);
  return unique.sort((a, b) => findLayer(engine.model, a).index - findLayer(engine.model, b).index);
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

function readCheckpoint(store: CheckpointStore, want: Record<string, string | number>): Checkpoint {
  let cp: Checkpoint | undefined;
  try {
    cp = store.read() as Checkpoint | undefined;
  } catch (e) {
    throw new Error(`checkpoint ${store.name} is unreadable: ${errorLine(e)}`);
  }
  if (cp === undefined) throw new Error(`no checkpoint at ${store.name} to resume; run without resume to start a new scan`);
  if (cp.version !== 1) throw new Error(`checkpoint ${store.name} has version ${cp.version}; this convscope writes version 1`);
  for (const [key, value] of Object.entries(want)) {
    if (cp.fingerprint[key] !== value) {
      throw new Error(`checkpoint ${store.name} is from another scan: its ${key} is ${cp.fingerprint[key]}, this one's ${value}`);
    }
  }
  return cp;
}

// ---------------------------------------------------------------- the scan

export function checkCount(name: string, v: number): void {
  if (!(Number.isInteger(v) && v >= 1)) throw new Error(`${name} must be an integer >= 1, got ${v}`);
}

/** Entries a feature can hold: k, unless the images scanned give fewer candidates (perImage each). */
export function slotsPerFeature(r: Pick<TopkResult, 'k' | 'images' | 'perImage'>): number {
  return Math.max(1, Math.min(r.k, r.images * r.perImage));
}

/** Bytes a heap slot takes (value f64, image, y, x i32) and the most the heaps of one scan may take. */
const HEAP_ENTRY_BYTES = 20;
const HEAP_BUDGET_BYTES = 2 * 2 ** 30;

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
  // A heap never holds more than the candidates the data can give: k beyond that would only allocate nothing useful.
  const total = options.indices ? options.indices.length : ds.size;
  const capacity = slotsPerFeature({ k, images: total, perImage });
  const heapBytes = shapes.reduce((a, [c]) => a + c * capacity * HEAP_ENTRY_BYTES, 0);
  if (heapBytes > HEAP_BUDGET_BYTES) {
    throw new Error(`k ${k} needs ${(heapBytes / 2 ** 30).toFixed(1)} GiB of heaps for ${shapes.reduce((a, [c]) => a + c, 0)} feature maps; the limit is ${HEAP_BUDGET_BYTES / 2 ** 30} GiB: ask for fewer (--k) or fewer layers`);
  }
  const heaps = shapes.map(([c]) => new FeatureHeaps(c, capacity));
  const model = engine.model;
  const print = options.checkpoint ? fingerprint(model, ds, layers, k, perImage, batchSize, options.indices) : {};

  let startBatch = 0;
  let images = 0;
  let skipped: Skipped[] = [];
  if (options.resume) {
    if (!options.checkpoint) throw new Error('resume needs a checkpoint');
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
      options.checkpoint.write(snapshot(batch.batch + 1, [...skipped, ...stream.skipped]));
      sinceCheckpoint = 0;
    }
    if (options.signal?.aborted) throw options.signal.reason ?? new Error('top-k scan aborted');
  }
  if (reported < total) options.onProgress?.(total, total);
  skipped = [...skipped, ...stream.skipped];
  options.checkpoint?.write(snapshot(stream.batchCount, skipped));

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

/**
 * The top-k of scans over disjoint parts of one dataset (shards), as one scan of all of it would give: every entry
 * offered to fresh heaps under the tie rule, so the result depends neither on how the data was cut nor on the order
 * the parts arrive. Skipped files are listed part by part, in the order given.
 */
export function mergeTopk(parts: readonly TopkResult[]): TopkResult {
  if (parts.length === 0) throw new Error('mergeTopk needs at least one part');
  const [first] = parts;
  for (const p of parts) {
    const same = p.model === first.model && p.dataset === first.dataset && p.k === first.k && p.perImage === first.perImage &&
      p.layers.length === first.layers.length && p.layers.every((l, i) => l.layer === first.layers[i].layer && l.shape.join(',') === first.layers[i].shape.join(','));
    if (!same) throw new Error(`cannot merge top-k parts of different scans (${p.model} on ${p.dataset} vs ${first.model} on ${first.dataset})`);
  }
  const layers = first.layers.map((l, i) => {
    const entries = parts.reduce((a, p) => a + Math.max(0, ...p.layers[i].features.map((f) => f.length)), 0);
    const heaps = new FeatureHeaps(l.shape[0], Math.max(1, Math.min(first.k, entries)));
    for (const p of parts) p.layers[i].features.forEach((entries, f) => entries.forEach((e) => heaps.offer(f, e.value, e.image, e.y, e.x)));
    return { layer: l.layer, shape: l.shape, features: Array.from({ length: l.shape[0] }, (_, f) => heaps.sorted(f)) };
  });
  return {
    model: first.model, dataset: first.dataset, k: first.k, perImage: first.perImage,
    images: parts.reduce((a, p) => a + p.images, 0),
    skipped: parts.flatMap((p) => p.skipped),
    layers,
  };
}
