import type { Preprocess } from '../model/layers.js';
import { tensor, type Tensor } from '../tensor.js';
import { Rng } from '../util/random.js';
import type { Box, Dataset, Skipped } from './dataset.js';
import { blankImage, fitImage, toChannels, type RgbImage } from './image.js';
import { mixSeed } from './split.js';

export { seededPermutation } from './split.js';

export interface Augment {
  /**
   * Extra pixels for a random crop. 'scale' (the paper's: 256 -> random 224): fit the image to (H+n) x (W+n), then
   * crop H x W at a random offset. 'pad' (CIFAR/MNIST style): fit to H x W, pad with black to (H+n) x (W+n), crop.
   */
  randomCrop?: number;
  cropMode?: 'scale' | 'pad';
  /** Mirror left-right with probability 1/2. */
  flip?: boolean;
}

export interface BatchOptions {
  /** The model's input [C, H, W]: images are fitted (short side, centre crop) and converted to C channels. */
  input: readonly number[];
  preprocess: Preprocess;
  batchSize: number;
  /** Visiting order, e.g. seededPermutation(size, seed); default 0..size-1. */
  indices?: ArrayLike<number>;
  augment?: Augment;
  /**
   * Seed of the augmentation. Batch k's crops and flips come from its own stream (seed, k), so a run resumed at
   * startBatch gets the same batches. Without a seed, one draw from `rng` makes it (a new one each epoch); default 0.
   */
  seed?: number;
  rng?: Rng;
  /** Leave out a last batch smaller than batchSize. */
  dropLast?: boolean;
  /** Begin at this batch (of the full order): resume. */
  startBatch?: number;
  /** Batches decoded ahead of the one being consumed; default 2. Bounds memory to (prefetch+1) batches of images. */
  prefetch?: number;
  /** Items decoded at once; default 8. */
  concurrency?: number;
  /** Where skipped items are appended (as well as the stream's own `skipped`). */
  skipped?: Skipped[];
}

export interface Batch {
  /** [B, C, H, W], preprocessed. B is batchSize, except for the last batch and batches that lost unreadable items. */
  input: Tensor;
  labels: Int32Array;
  /** Dataset indices of the B items. */
  indices: number[];
  names: string[];
  /** Object boxes in input coordinates [y0, x0, y1, x1] end-exclusive, when the dataset has them. */
  boxes?: (Box | undefined)[];
  /** Position of this batch in the full order (batches left empty by skipped items are not yielded). */
  batch: number;
  /** Items of this batch that could not be read. */
  skipped: Skipped[];
}

export type BatchStream = AsyncGenerator<Batch, void, undefined> & {
  /** Every item skipped so far, growing while the stream is consumed. */
  skipped: Skipped[];
  /** Batches in the full order (including any before startBatch). */
  batchCount: number;
};

export function batchCount(n: number, batchSize: number, dropLast = false): number {
  return dropLast ? Math.floor(n / batchSize) : Math.ceil(n / batchSize);
}

// ---------------------------------------------------------------- one item

interface CropParams {
  dy: number;
  dx: number;
  flip: boolean;
}

export interface FittedItem {
  /** [H, W] of the model input, C channels. */
  image: RgbImage;
  label: number;
  name: string;
  box?: Box;
}

type Loaded = ({ ok: true } & FittedItem) | { ok: false; reason: string };

function shapeOf(input: readonly number[]): [1 | 3, number, number] {
  const [C, H, W] = input;
  if (input.length !== 3 || (C !== 1 && C !== 3) || !(Number.isInteger(H) && H > 0 && Number.isInteger(W) && W > 0)) {
    throw new Error(`input shape must be [C, H, W] with C = 1 or 3; got [${input}]`);
  }
  return [C, H, W];
}

/** Where a box lands after fitImage's resize and centre crop to [th, tw]: the same geometry as fitImage. */
function fitBox(box: Box, h: number, w: number, th: number, tw: number): Box {
  const scale = Math.max(th / h, tw / w);
  const rh = Math.max(th, Math.round(h * scale));
  const rw = Math.max(tw, Math.round(w * scale));
  const top = Math.round((rh - th) / 2);
  const left = Math.round((rw - tw) / 2);
  const sy = rh / h, sx = rw / w;
  return [box[0] * sy - top, box[1] * sx - left, box[2] * sy - top, box[3] * sx - left];
}

/** Offsets, rounds outward to whole pixels, clamps to the H x W input and mirrors if flipped. */
function placeBox(b: Box, oy: number, ox: number, H: number, W: number, flip: boolean): Box {
  const cy = (v: number) => Math.min(H, Math.max(0, v));
  const cx = (v: number) => Math.min(W, Math.max(0, v));
  const y0 = cy(Math.floor(b[0] - oy + 1e-9)), y1 = cy(Math.ceil(b[2] - oy - 1e-9));
  const x0 = cx(Math.floor(b[1] - ox + 1e-9)), x1 = cx(Math.ceil(b[3] - ox - 1e-9));
  return flip ? [y0, W - x1, y1, W - x0] : [y0, x0, y1, x1];
}

/** The H x W window of src at (oy, ox), black outside src, optionally mirrored. */
function cropWindow(src: RgbImage, oy: number, ox: number, H: number, W: number, flip: boolean): RgbImage {
  const C = src.channels;
  const out = blankImage(W, H, C);
  for (let y = 0; y < H; y++) {
    const sy = y + oy;
    if (sy < 0 || sy >= src.height) continue;
    for (let x = 0; x < W; x++) {
      const sx = (flip ? W - 1 - x : x) + ox;
      if (sx < 0 || sx >= src.width) continue;
      for (let c = 0; c < C; c++) out.data[(y * W + x) * C + c] = src.data[(sy * src.width + sx) * C + c];
    }
  }
  return out;
}

/**
 * An item fitted to the model input: what the network sees, before normalisation (top-9 patches, occlusion).
 * With `augment.randomCrop` but no `crop`, the crop is the centre one: the paper's test-time view.
 */
export async function fittedItem(ds: Dataset, index: number, input: readonly number[], augment?: Augment, crop?: CropParams): Promise<FittedItem> {
  const [C, H, W] = shapeOf(input);
  const item = await ds.item(index);
  const { image: img, box } = item;
  const pad = augment?.randomCrop ?? 0;
  const flip = crop?.flip ?? false;
  const dy = crop?.dy ?? Math.floor(pad / 2), dx = crop?.dx ?? Math.floor(pad / 2);
  let image: RgbImage;
  let outBox: Box | undefined;
  if (pad > 0 && (augment?.cropMode ?? 'scale') === 'scale') {
    image = cropWindow(fitImage(img, [H + pad, W + pad], C), dy, dx, H, W, flip);
    if (box) outBox = placeBox(fitBox(box, img.height, img.width, H + pad, W + pad), dy, dx, H, W, flip);
  } else {
    // 'pad': the fitted image sits at (pad/2, pad/2) on a black canvas, so the crop's offset into it is d - pad/2.
    const oy = dy - Math.floor(pad / 2), ox = dx - Math.floor(pad / 2);
    const fitted = fitImage(img, [H, W], C);
    image = oy === 0 && ox === 0 && !flip ? fitted : cropWindow(fitted, oy, ox, H, W, flip);
    if (box) outBox = placeBox(fitBox(box, img.height, img.width, H, W), oy, ox, H, W, flip);
  }
  return { image: toChannels(image, C), label: item.label, name: item.name, box: outBox };
}

// ---------------------------------------------------------------- ordered prefetch

/**
 * Results of task(0..n-1) in order, with at most `concurrency` running and at most `window` started ahead of the
 * consumer: decoding overlaps the consumer's work while memory stays bounded. Tasks must not reject.
 */
async function* ordered<T>(n: number, task: (k: number) => Promise<T>, concurrency: number, window: number): AsyncGenerator<T> {
  const pending = new Map<number, Promise<T>>();
  let started = 0, running = 0, consumed = 0, stopped = false;
  const pump = (): void => {
    while (!stopped && started < n && running < concurrency && started < consumed + window) {
      const k = started++;
      running++;
      pending.set(
        k,
        task(k).finally(() => {
          running--;
          pump();
        }),
      );
    }
  };
  try {
    while (consumed < n) {
      pump();
      const r = await pending.get(consumed)!;
      pending.delete(consumed);
      consumed++;
      yield r;
    }
  } finally {
    stopped = true;
  }
}

function failure(e: unknown): string {
  return ((e as Error)?.message ?? String(e)).replace(/\s*\n\s*/g, '; ');
}

function loader(ds: Dataset, input: readonly number[], augment?: Augment) {
  return async (index: number, crop?: CropParams): Promise<Loaded> => {
    try {
      return { ok: true, ...(await fittedItem(ds, index, input, augment, crop)) };
    } catch (e) {
      return { ok: false, reason: failure(e) };
    }
  };
}

function safeName(ds: Dataset, i: number): string {
  try {
    return ds.itemName(i);
  } catch {
    return `#${i}`;
  }
}

// ---------------------------------------------------------------- preprocessing

interface Normaliser {
  mean: number[];
  std: number[];
  meanImage?: Float32Array;
}

function perChannel(values: number[], C: number, what: string): number[] {
  if (values.length === C) return values.map(Math.fround);
  if (values.length === 1) return new Array<number>(C).fill(Math.fround(values[0]));
  throw new Error(`preprocess ${what} has ${values.length} values for a ${C}-channel input`);
}

function normaliser(p: Preprocess, C: number, H: number, W: number): Normaliser {
  const m = p.meanImage;
  if (m) {
    const shape = m.shape.length === 4 && m.shape[0] === 1 ? m.shape.slice(1) : m.shape;
    if (shape.length !== 3 || shape[0] !== C || shape[1] !== H || shape[2] !== W) {
      throw new Error(`mean image has shape [${m.shape}]; this input needs [${C}, ${H}, ${W}]`);
    }
  }
  return { mean: perChannel(p.mean, C, 'mean'), std: perChannel(p.std, C, 'std'), meanImage: m?.data };
}

/** imageToInput's arithmetic (float32 rounding at each step), written straight into the batch. */
function normaliseInto(img: RgbImage, n: Normaliser, out: Float32Array, offset: number): void {
  const C = img.channels, HW = img.width * img.height, src = img.data;
  for (let c = 0; c < C; c++) {
    const std = n.std[c], o = offset + c * HW;
    if (n.meanImage) {
      const mi = n.meanImage;
      for (let p = 0; p < HW; p++) out[o + p] = Math.fround(Math.fround(src[p * C + c] - mi[c * HW + p]) / std);
    } else {
      const m = n.mean[c];
      for (let p = 0; p < HW; p++) out[o + p] = Math.fround(Math.fround(src[p * C + c] - m) / std);
    }
  }
}

// ---------------------------------------------------------------- batches

function checkBatchOptions(ds: Dataset, o: BatchOptions): void {
  if (!(Number.isInteger(o.batchSize) && o.batchSize > 0)) throw new Error(`batchSize must be a positive integer, got ${o.batchSize}`);
  const pad = o.augment?.randomCrop ?? 0;
  if (!(Number.isInteger(pad) && pad >= 0)) throw new Error(`augment.randomCrop must be a non-negative integer, got ${pad}`);
  if (o.indices) {
    for (let k = 0; k < o.indices.length; k++) {
      const i = o.indices[k];
      if (!(Number.isInteger(i) && i >= 0 && i < ds.size)) throw new Error(`${ds.name}: index ${i} (at position ${k}) is out of range 0..${ds.size - 1}`);
    }
  }
}

/**
 * The dataset in `indices` order as preprocessed [B, C, H, W] batches, decoding ahead in the background. An item
 * that fails to load never stops the run: it is left out of its batch and listed in `skipped`.
 */
export function batches(ds: Dataset, opts: BatchOptions): BatchStream {
  const [C, H, W] = shapeOf(opts.input);
  checkBatchOptions(ds, opts);
  const norm = normaliser(opts.preprocess, C, H, W);
  const order = opts.indices ?? { length: ds.size };
  const at = (k: number): number => (opts.indices ? opts.indices[k] : k);
  const bs = opts.batchSize;
  const nBatches = batchCount(order.length, bs, opts.dropLast);
  const first = opts.startBatch ?? 0;
  if (!(Number.isInteger(first) && first >= 0)) throw new Error(`startBatch must be a non-negative integer, got ${first}`);
  const end = Math.min(order.length, nBatches * bs);
  const skipped: Skipped[] = [];
  const augment = opts.augment;
  const augmenting = !!augment && ((augment.randomCrop ?? 0) > 0 || !!augment.flip);
  const seed = opts.seed ?? (opts.rng ? opts.rng.int(2 ** 32) : 0);
  const load = loader(ds, opts.input, augment);

  /** Batch k's crops and flips, drawn in position order so they do not depend on which decode finishes first. */
  const cropsOf = (k: number): CropParams[] => {
    const rng = new Rng(mixSeed(seed, k));
    const pad = augment?.randomCrop ?? 0;
    const count = Math.min(bs, end - k * bs);
    return Array.from({ length: count }, () => ({
      dy: pad > 0 ? rng.int(pad + 1) : 0,
      dx: pad > 0 ? rng.int(pad + 1) : 0,
      flip: augment?.flip ? rng.next() < 0.5 : false,
    }));
  };

  async function* run(): AsyncGenerator<Batch, void, undefined> {
    const start = first * bs;
    const crops = new Map<number, CropParams[]>();
    const cropAt = (pos: number): CropParams | undefined => {
      if (!augmenting) return undefined;
      const k = Math.floor(pos / bs);
      if (!crops.has(k)) crops.set(k, cropsOf(k));
      return crops.get(k)![pos - k * bs];
    };
    // While the consumer holds batch k, batches k+1..k+prefetch decode; at least one item must be allowed to start.
    const window = Math.max(1, (opts.prefetch ?? 2) * bs);
    const stream = ordered(Math.max(0, end - start), (j) => load(at(start + j), cropAt(start + j)), opts.concurrency ?? 8, window);
    let pos = start;
    let k = first;
    let got: Loaded[] = [];
    let idx: number[] = [];
    for await (const r of stream) {
      got.push(r);
      idx.push(at(pos));
      pos++;
      if (got.length === bs || pos === end) {
        crops.delete(k);
        const b = assemble(got, idx, k);
        if (b) yield b;
        got = [];
        idx = [];
        k++;
      }
    }
  }

  function assemble(got: Loaded[], idx: number[], k: number): Batch | undefined {
    const lost: Skipped[] = [];
    const ok: (FittedItem & { index: number })[] = [];
    got.forEach((r, j) => {
      if (r.ok) ok.push({ ...r, index: idx[j] });
      else lost.push({ index: idx[j], name: safeName(ds, idx[j]), reason: r.reason });
    });
    skipped.push(...lost);
    opts.skipped?.push(...lost);
    if (ok.length === 0) return undefined;
    const input = tensor([ok.length, C, H, W]);
    ok.forEach((it, j) => normaliseInto(it.image, norm, input.data, j * C * H * W));
    const batch: Batch = {
      input,
      labels: Int32Array.from(ok, (it) => it.label),
      indices: ok.map((it) => it.index),
      names: ok.map((it) => it.name),
      batch: k,
      skipped: lost,
    };
    if (ok.some((it) => it.box)) batch.boxes = ok.map((it) => it.box);
    return batch;
  }

  return Object.assign(run(), { skipped, batchCount: nBatches });
}

/** "skipped 2 files: a/x.jpg (reason); ..." for a run's summary; empty when nothing was skipped. */
export function skippedSummary(skipped: readonly Skipped[]): string {
  if (skipped.length === 0) return '';
  const list = skipped.map((s) => `${s.name} (${s.reason})`).join('; ');
  return `skipped ${skipped.length} unreadable file${skipped.length === 1 ? '' : 's'}: ${list}`;
}

// ---------------------------------------------------------------- mean image

export interface MeanOptions {
  indices?: ArrayLike<number>;
  concurrency?: number;
  skipped?: Skipped[];
}

export interface PixelStats {
  /** The paper's per-pixel mean of the fitted 8-bit images (0..255), [C, H, W]. */
  meanImage: Tensor;
  /** Per-channel standard deviation of the pixels about that mean image, 0..255 units. */
  channelStd: number[];
}

/** Mean image and per-channel spread of a dataset's fitted images, in one streaming pass. */
export async function computePixelStats(ds: Dataset, input: readonly number[], opts: MeanOptions = {}): Promise<PixelStats> {
  const [C, H, W] = shapeOf(input);
  const n = opts.indices ? opts.indices.length : ds.size;
  const at = (k: number): number => (opts.indices ? opts.indices[k] : k);
  const load = loader(ds, input);
  const concurrency = opts.concurrency ?? 8;
  const sum = new Float64Array(C * H * W);
  const sumSq = new Float64Array(C * H * W);
  let count = 0;
  for await (const [k, r] of ordered(n, async (k) => [k, await load(at(k))] as const, concurrency, 4 * concurrency)) {
    if (!r.ok) {
      opts.skipped?.push({ index: at(k), name: safeName(ds, at(k)), reason: r.reason });
      continue;
    }
    const d = r.image.data;
    for (let c = 0; c < C; c++) {
      for (let p = 0; p < H * W; p++) {
        const v = d[p * C + c];
        sum[c * H * W + p] += v;
        sumSq[c * H * W + p] += v * v;
      }
    }
    count++;
  }
  if (count === 0) throw new Error(`${ds.name}: no readable images to average`);
  const meanImage = tensor([C, H, W]);
  for (let i = 0; i < sum.length; i++) meanImage.data[i] = sum[i] / count;
  // Var about the per-pixel mean, pooled over the pixels of a channel: mean of E[x^2] - E[x]^2.
  const channelStd = Array.from({ length: C }, (_, c) => {
    let v = 0;
    for (let p = c * H * W; p < (c + 1) * H * W; p++) v += sumSq[p] / count - (sum[p] / count) ** 2;
    return Math.sqrt(Math.max(v / (H * W), 0));
  });
  return { meanImage, channelStd };
}

/** The paper's per-pixel mean: the average of the fitted 8-bit images (0..255) as [C, H, W], computed streaming. */
export async function computeMeanImage(ds: Dataset, input: readonly number[], opts: MeanOptions = {}): Promise<Tensor> {
  return (await computePixelStats(ds, input, opts)).meanImage;
}

/** Per-channel means of a [C, H, W] (or [1, C, H, W]) mean image. */
export function channelMeanOf(meanImage: Tensor): number[] {
  const shape = meanImage.shape.length === 4 ? meanImage.shape.slice(1) : meanImage.shape;
  const [C, H, W] = shape;
  return Array.from({ length: C }, (_, c) => {
    let s = 0;
    for (let p = 0; p < H * W; p++) s += meanImage.data[c * H * W + p];
    return s / (H * W);
  });
}

/** Per-channel mean of the fitted images, 0..255: the preprocess mean when a per-pixel mean is not wanted. */
export async function computeChannelMean(ds: Dataset, input: readonly number[], opts: MeanOptions = {}): Promise<number[]> {
  return channelMeanOf(await computeMeanImage(ds, input, opts));
}
