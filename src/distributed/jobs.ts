// What a job carries: paths and options, never code. A worker checks every path against the roots it was started
// with before it opens anything.
import { existsSync, realpathSync } from 'node:fs';
import { isAbsolute, relative, resolve } from 'node:path';
import type { TopkEntry } from '../analysis/topk-heaps.js';
import type { TopkField, TopkView } from '../analysis/topk-views.js';
import { FASHION_MNIST_DIR, type Skipped } from '../data/dataset.js';

/** How a worker loads the model: a file path (or a zoo name) and what `--model-seed`, `--mean`, `--std` set. */
export interface ModelRef {
  path: string;
  seed: number;
  mean?: number[];
  std?: number[];
  /** The same architecture with fresh He weights of this seed (probe --baseline's random-init model). */
  reinit?: number;
}

/** A dataset spec as `--data` takes it, the split, and `--data-path`. */
export interface DataRef {
  spec: string;
  split: 'train' | 'val' | 'test';
  dataPath?: string;
}

/** What a top-k scan is, whichever machine runs it: the model, the data and the scan's settings. */
export interface TopkScanSpec {
  model: ModelRef;
  data: DataRef;
  layers: string[];
  k: number;
  perImage: number;
  batchSize: number;
}

/** One shard of a top-k scan: these dataset indices, scanned as `scanTopk` would. */
export interface TopkShardJob extends TopkScanSpec {
  run: string;
  shard: number;
  indices: number[];
}

/** Some images of the localisation score (occlusion per image), as `occlude --score` computes it. */
export interface ScoreJob {
  run: string;
  model: ModelRef;
  data: DataRef;
  indices: number[];
  window?: number;
  stride?: number;
}

export const SCORE_IMAGES = 'occlusion-score';

/** A shard's heaps, entries as [value, image, y, x] (JSON-compact), and what it read and skipped. */
export interface TopkShardResult {
  shard: number;
  images: number;
  skipped: Skipped[];
  layers: { layer: string; shape: [number, number, number]; features: [number, number, number, number][][] }[];
  model: string;
  dataset: string;
}

export const TOPK_SHARD = 'topk-shard';

export function entriesToJson(features: TopkEntry[][]): [number, number, number, number][][] {
  return features.map((es) => es.map((e) => [e.value, e.image, e.y, e.x]));
}

export function entriesFromJson(features: [number, number, number, number][][]): TopkEntry[][] {
  return features.map((es) => es.map(([value, image, y, x]) => ({ value, image, y, x })));
}

/** The real path of an existing file, or the resolved path of one that does not exist (it then fails to open). */
function realOrResolved(path: string): string {
  const abs = resolve(path);
  return existsSync(abs) ? realpathSync(abs) : abs;
}

/** Refuses a path outside every allowed root (symbolic links followed, so a link cannot lead out). */
export function checkAllowed(path: string, roots: readonly string[], what: string): void {
  const real = realOrResolved(path);
  const inside = roots.some((root) => {
    const rel = relative(realOrResolved(root), real);
    return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
  });
  if (!inside) throw new Error(`${what} ${path} is outside the roots this worker serves (--allow ${roots.join(', ')})`);
}

/**
 * The paths a job would open: the model file (not a zoo name) and the data: nothing for the built-in shapes, the
 * Fashion-MNIST folder, else the spec itself (a folder, an IDX file or prefix) without its class filter.
 */
export function jobPaths(model: ModelRef, data: DataRef, isZooName: (name: string) => boolean): { path: string; what: string }[] {
  const paths: { path: string; what: string }[] = [];
  if (!isZooName(model.path)) paths.push({ path: model.path, what: 'model' });
  const base = data.spec.replace(/[:,]classes=.*$/, '');
  if (base === 'fashion-mnist') paths.push({ path: data.dataPath ?? FASHION_MNIST_DIR, what: 'data' });
  else if (!(base === 'shapes' || base.startsWith('shapes:'))) paths.push({ path: base, what: 'data' });
  return paths;
}

/** What a probe's feature extraction is: the model, the data, the layers and their pooling. */
export interface ProbeFeaturesSpec {
  model: ModelRef;
  data: DataRef;
  layers: string[];
  pool: number;
  batchSize: number;
}

/** Pooled features of some items for a linear probe, as `extractFeatures` computes them. */
export interface ProbeFeaturesJob extends ProbeFeaturesSpec {
  run: string;
  indices: number[];
}

/** The features of a shard, each layer's rows as base64 float32 (JSON numbers would be three times larger). */
export interface ProbeFeaturesResult {
  indices: number[];
  labels: number[];
  layers: { name: string; shape: number[]; data: string }[];
  skipped: Skipped[];
}

export const PROBE_FEATURES = 'probe-features';

export function floatsToBase64(data: Float32Array): string {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64');
}

export function floatsFromBase64(text: string): Float32Array {
  const bytes = Buffer.from(text, 'base64');
  const out = new Float32Array(bytes.byteLength / 4);
  new Uint8Array(out.buffer).set(bytes);
  return out;
}

/** Deconvnet projections and patches of some kept units of one layer, as `projectEntries` makes them. */
export interface TopkProjectJob {
  run: string;
  model: ModelRef;
  data: DataRef;
  layer: string;
  /** [feature, value, image, y, x] per unit. */
  units: [number, number, number, number, number][];
  settings: { rule: 'deconvnet' | 'gradient' | 'guided'; lrn: 'gradient' | 'identity'; seedValue: 'activation' | 'one' };
  batchUnits: number;
}

/** A unit's view with its projection and patch as base64 bytes. */
export interface SerializedView {
  feature: number;
  entry: TopkEntry;
  name: string;
  field: TopkField;
  projection: { shape: number[]; data: string };
  patch: { width: number; height: number; channels: 1 | 3; data: string };
}

export const TOPK_PROJECT = 'topk-project';

export function viewToJson(v: TopkView): SerializedView {
  return {
    feature: v.feature, entry: v.entry, name: v.name, field: v.field,
    projection: { shape: v.projection.shape, data: floatsToBase64(v.projection.data) },
    patch: { width: v.patch.width, height: v.patch.height, channels: v.patch.channels, data: Buffer.from(v.patch.data).toString('base64') },
  };
}

export function viewFromJson(v: SerializedView): TopkView {
  return {
    feature: v.feature, entry: v.entry, name: v.name, field: v.field,
    projection: { shape: v.projection.shape, data: floatsFromBase64(v.projection.data) },
    patch: { width: v.patch.width, height: v.patch.height, channels: v.patch.channels, data: new Uint8Array(Buffer.from(v.patch.data, 'base64')) },
  };
}
