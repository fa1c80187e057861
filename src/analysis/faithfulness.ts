// How faithful is each attribution method to the model, measured on the user's own model and data:
// deletion and insertion curves (Petsiuk et al. 2018, RISE) and the pointing game (Zhang et al. 2016).
//
// Deletion: pixels are replaced by the baseline (0 = the mean colour after mean subtraction) in order of decreasing
// score, `steps` equal shares at a time, tracking p(target); a faithful map makes it fall fast (low area under the
// curve). Insertion: from a blurred copy of the image, the original's pixels come back in the same order; a faithful
// map makes p(target) rise fast (high area). Pointing game: a hit when the map's highest-scoring pixel lies inside the
// object's box. The modified images of a curve go through the engine in batches.
import type { Engine } from '../engine/engine.js';
import type { Batch } from '../data/batches.js';
import { median, sizeOf, tensor, type Tensor } from '../tensor.js';
import type { OnProgress } from '../util/progress.js';
import type { Rect } from '../util/rect.js';
import { gaussianBlur } from './resample.js';
import { attribute, type AttributionMethod, type AttributionOptions } from './attribution.js';
import { classLayer } from './class-target.js';

export interface FaithfulnessItem {
  input: Tensor;
  label: number;
  name: string;
  box?: Rect;
}

export interface Curves {
  /** p(target) after removing (deletion) or restoring (insertion) the first k/steps of the pixels, k = 0..steps. */
  deletion: number[];
  insertion: number[];
  deletionAuc: number;
  insertionAuc: number;
}

export interface MethodFaithfulness {
  method: AttributionMethod;
  /** Means over the images. */
  deletionAuc: number;
  insertionAuc: number;
  /** Hits / images with a box; undefined when no image has one. */
  pointing: number | undefined;
  /** Median milliseconds of one attribution, after an untimed first call. */
  msPerImage: number;
  meanDeletion: number[];
  meanInsertion: number[];
  perImage: { name: string; target: number; deletionAuc: number; insertionAuc: number; hit: boolean | undefined; ms: number }[];
}

export const CURVE_STEPS = 32;

export interface FaithfulnessOptions {
  /** Equal shares of the pixels removed or restored per point of a curve; default 32. */
  steps?: number;
  /** Explain the labelled class (default) or the predicted one. */
  target?: 'label' | 'predicted';
  /** Sigma of the insertion start's blur, in pixels; default 1/16 of the larger side. */
  blurSigma?: number;
  /** Images per engine call when scoring a curve; default 33 (one curve of 32 steps). */
  batch?: number;
  /** Passed to each method (Grad-CAM layer, IG steps, SmoothGrad samples, ...). */
  methodOptions?: Omit<AttributionOptions, 'target' | 'onProgress'>;
  onProgress?: OnProgress;
}

/** Pixel indices by decreasing score; equal scores keep row-major order. */
export function pixelOrder(scores: Float32Array): Int32Array {
  const order = Int32Array.from(scores, (_, i) => i);
  return order.sort((a, b) => scores[b] - scores[a] || a - b);
}

/** Area under a curve sampled at k / steps, k = 0..steps, by the trapezoid rule over [0, 1]. */
export function curveArea(values: readonly number[]): number {
  const n = values.length - 1;
  if (n < 1) throw new Error('a curve needs at least two points');
  let s = 0;
  for (let k = 0; k < n; k++) s += (values[k] + values[k + 1]) / 2;
  return s / n;
}

/** How many pixels are changed at point k of a curve with `steps` steps over `pixels` pixels. */
export function changedAt(k: number, steps: number, pixels: number): number {
  return Math.round((k * pixels) / steps);
}

/** softmax(scores)[target] per row. */
function probabilities(scores: Tensor, target: number): number[] {
  const [n, classes] = scores.shape;
  return Array.from({ length: n }, (_, i) => {
    const row = scores.data.subarray(i * classes, (i + 1) * classes);
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    let total = 0;
    for (const v of row) total += Math.exp(v - max);
    return Math.exp(row[target] - max) / total;
  });
}

/**
 * The deletion and insertion curves of one image under one pixel order: image k of each curve has the first
 * changedAt(k) pixels of the order (all channels) replaced by the baseline (deletion) or restored from the image onto
 * the blurred start (insertion).
 */
export async function deletionInsertion(engine: Engine, input: Tensor, target: number, order: Int32Array, options: Pick<FaithfulnessOptions, 'steps' | 'blurSigma' | 'batch'> = {}): Promise<Curves> {
  const steps = options.steps ?? CURVE_STEPS;
  if (!(Number.isInteger(steps) && steps >= 1)) throw new Error(`steps must be an integer >= 1, got ${steps}`);
  const [, c, h, w] = input.shape;
  const plane = h * w;
  if (order.length !== plane) throw new Error(`pixel order has ${order.length} entries for a ${h}x${w} image`);
  const blurred = gaussianBlur(input, options.blurSigma ?? Math.max(h, w) / 16);
  const per = sizeOf(input.shape);
  const batch = options.batch ?? steps + 1;
  const layer = classLayer(engine);
  const curve = async (start: Float32Array, source: Float32Array): Promise<number[]> => {
    const values: number[] = [];
    const current = start.slice();
    let done = 0;
    for (let k0 = 0; k0 <= steps; k0 += batch) {
      const count = Math.min(batch, steps + 1 - k0);
      const images = tensor([count, c, h, w]);
      for (let i = 0; i < count; i++) {
        const upTo = changedAt(k0 + i, steps, plane);
        for (; done < upTo; done++) for (let ch = 0; ch < c; ch++) current[ch * plane + order[done]] = source[ch * plane + order[done]];
        images.data.set(current, i * per);
      }
      values.push(...probabilities((await engine.forward(images, [layer])).activations.get(layer)!, target));
    }
    return values;
  };
  const deletion = await curve(input.data, new Float32Array(per));
  const insertion = await curve(blurred.data, input.data);
  return { deletion, insertion, deletionAuc: curveArea(deletion), insertionAuc: curveArea(insertion) };
}

/** Pointing game: is the first highest-scoring pixel inside the box? */
export function pointingHit(scores: Float32Array, width: number, box: Rect): boolean {
  let best = 0;
  for (let i = 1; i < scores.length; i++) if (scores[i] > scores[best]) best = i;
  const y = Math.floor(best / width);
  const x = best % width;
  return y >= box[0] && y < box[2] && x >= box[1] && x < box[3];
}

/** Every method on every image: the table `convscope faithfulness` prints. */
export async function faithfulness(engine: Engine, items: FaithfulnessItem[], methods: readonly AttributionMethod[], options: FaithfulnessOptions = {}): Promise<MethodFaithfulness[]> {
  if (items.length === 0) throw new Error('faithfulness needs at least one image');
  if (options.target !== 'predicted' && items.some((i) => i.label < 0)) throw new Error(`${items.find((i) => i.label < 0)!.name} has no label: explain the predicted class instead`);
  const steps = options.steps ?? CURVE_STEPS;
  const results: MethodFaithfulness[] = [];
  let done = 0;
  for (const method of methods) {
    const perImage: MethodFaithfulness['perImage'] = [];
    const sumDeletion = new Float64Array(steps + 1);
    const sumInsertion = new Float64Array(steps + 1);
    // Untimed: the first call compiles the method's graphs, which the milliseconds per image should not include.
    await attribute(engine, items[0].input, method, { ...options.methodOptions, target: options.target === 'predicted' ? undefined : items[0].label });
    for (const item of items) {
      const wanted = options.target === 'predicted' ? undefined : item.label;
      const a = await attribute(engine, item.input, method, { ...options.methodOptions, target: wanted });
      const curves = await deletionInsertion(engine, item.input, a.target, pixelOrder(a.pixels), options);
      curves.deletion.forEach((v, k) => (sumDeletion[k] += v));
      curves.insertion.forEach((v, k) => (sumInsertion[k] += v));
      const hit = item.box ? pointingHit(a.pixels, item.input.shape[3], item.box) : undefined;
      perImage.push({ name: item.name, target: a.target, deletionAuc: curves.deletionAuc, insertionAuc: curves.insertionAuc, hit, ms: a.seconds * 1000 });
      options.onProgress?.(++done, methods.length * items.length);
    }
    const mean = (xs: number[]) => xs.reduce((s, v) => s + v, 0) / xs.length;
    const boxed = perImage.filter((p) => p.hit !== undefined);
    results.push({
      method,
      deletionAuc: mean(perImage.map((p) => p.deletionAuc)),
      insertionAuc: mean(perImage.map((p) => p.insertionAuc)),
      pointing: boxed.length > 0 ? boxed.filter((p) => p.hit).length / boxed.length : undefined,
      msPerImage: median(perImage.map((p) => p.ms)),
      meanDeletion: Array.from(sumDeletion, (v) => v / items.length),
      meanInsertion: Array.from(sumInsertion, (v) => v / items.length),
      perImage,
    });
  }
  return results;
}

/** The images of a batch stream as faithfulness items (boxes kept where the dataset records them). */
export function itemsOf(batch: Batch): FaithfulnessItem[] {
  const [, c, h, w] = batch.input.shape;
  const per = c * h * w;
  return batch.labels.length === 0
    ? []
    : Array.from(batch.labels, (label, j) => ({
        input: { shape: [1, c, h, w], data: batch.input.data.slice(j * per, (j + 1) * per) },
        label,
        name: batch.names[j],
        box: batch.boxes?.[j],
      }));
}

