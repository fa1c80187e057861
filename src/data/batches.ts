import type { Preprocess } from '../model/layers.js';
import { tensor, type Tensor } from '../tensor.js';
import { Rng } from '../util/random.js';
import { errorLine } from '../util/errors.js';
import type { Rect } from '../util/rect.js';
import type { RgbImage } from './image.js';
import { fittedItem, shapeOf, type Augment, type CropParams, type FittedItem, type Loaded } from './augment.js';
import type { Dataset, Skipped } from './dataset.js';
import { ordered } from './prefetch.js';
import { mixSeed } from './split.js';

export { seededPermutation } from './split.js';

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
  boxes?: (Rect | undefined)[];
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


export function loader(ds: Dataset, input: readonly number[], augment?: Augment) {
  return async (index: number, crop?: CropParams): Promise<Loaded> => {
    try {
      return { ok: true, ...(await fittedItem(ds, index, input, augment, crop)) };
    } catch (e) {
      return { ok: false, reason: errorLine(e) };
    }
  };
}

export function safeName(ds: Dataset, i: number): string {
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

