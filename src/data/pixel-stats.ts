// The paper's per-pixel mean image of a dataset and the pixel spread about it, in one streaming pass.
import { tensor, type Tensor } from '../tensor.js';
import { shapeOf } from './augment.js';
import { loader, safeName } from './batches.js';
import type { Dataset, Skipped } from './dataset.js';
import { ordered } from './prefetch.js';

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
