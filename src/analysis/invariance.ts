// Invariance of features to vertical translation, scale and rotation (Zeiler & Fergus 2014, Fig. 5).
//
// For each transform amount: the distance between the feature vectors of the original and the transformed image at
// chosen layers, divided by the norm of the original's feature vector (so that layers of very different magnitude
// share an axis), and p(true class) after softmax. The picture is moved inside a fixed frame; what it uncovers shows
// the dataset mean, i.e. 0 input, the same grey the occlusion experiments use.
import type { Engine } from '../engine/engine.js';
import { transformInput, type Transform } from '../data/transform.js';
import { softmax } from './class-target.js';
import { Landmarks } from '../model/landmarks.js';
import { findLayer, type Model } from '../model/layers.js';
import { sizeOf, tensor, type Tensor } from '../tensor.js';

export type TransformKind = 'translate' | 'scale' | 'rotate';
export const TRANSFORM_KINDS: readonly TransformKind[] = ['translate', 'scale', 'rotate'];

/** One transform swept over amounts: translate in input pixels (vertical, + = down), scale as a ratio, rotate in degrees. */
export interface Sweep {
  kind: TransformKind;
  amounts: number[];
}

export interface InvarianceOptions {
  layers: string[];
  sweeps: Sweep[];
  /** Most images per engine call (the original and its transformed copies go through together); default 64. */
  batch?: number;
}

export interface Curve {
  kind: TransformKind;
  amounts: number[];
  /** By layer: ‖f(T x) − f(x)‖ / ‖f(x)‖ per amount (NaN where the original's features are all zero). */
  distance: Record<string, number[]>;
  /** p(true class) after softmax, per amount. */
  probability: number[];
}

export interface InvarianceResult {
  trueClass: number;
  /** Most probable class of the untransformed image. */
  predicted: number;
  curves: Curve[];
}

export const DISTANCE_LEGEND = 'distance = ‖f(T(x)) − f(x)‖ / ‖f(x)‖ (Euclidean, relative to the original image\'s feature norm)';
export const FILL_LEGEND = 'uncovered area filled with the dataset mean (0 input); bilinear sampling';

export function transformFor(kind: TransformKind, amount: number): Transform {
  if (kind === 'translate') return { kind, dy: amount, dx: 0 };
  if (kind === 'scale') return { kind, factor: amount };
  return { kind, degrees: amount };
}

/**
 * Fig. 5's ranges: vertical translation −60..60 px of a 224 px input (scaled to this input, whole pixels so that the
 * picture moves without resampling), scale 1..1.8 (the figure's axis: zooming in only), rotation 0..360° in 10° steps.
 */
export function paperSweeps(height: number): Sweep[] {
  const max = Math.round((60 * height) / 224);
  const translate = [...new Set(Array.from({ length: 13 }, (_, k) => Math.round((max * (k - 6)) / 6)))];
  const scale = Array.from({ length: 9 }, (_, k) => Number((1 + 0.1 * k).toFixed(10)));
  const rotate = Array.from({ length: 37 }, (_, k) => 10 * k);
  return [{ kind: 'translate', amounts: translate }, { kind: 'scale', amounts: scale }, { kind: 'rotate', amounts: rotate }];
}

/** The paper's "layer 1" and "layer 7": the rectified first convolution and the features the classifier reads. */
export function paperLayers(model: Model): [string, string] {
  const marks = new Landmarks(model);
  return [marks.firstConv(), marks.classifierInput()];
}

export function argmax(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}

function norm(v: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i] * v[i];
  return Math.sqrt(s);
}

function distance(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] - b[i]) ** 2;
  return Math.sqrt(s);
}

function checkSweeps(sweeps: Sweep[]): void {
  for (const s of sweeps) {
    if (!TRANSFORM_KINDS.includes(s.kind)) throw new Error(`unknown transform '${s.kind}'; use ${TRANSFORM_KINDS.join(', ')}`);
    if (s.amounts.length === 0) throw new Error(`${s.kind}: no amounts`);
    if (s.kind === 'scale' && s.amounts.some((a) => !(a > 0))) throw new Error(`scale amounts must be positive, got ${s.amounts.join(',')}`);
    if (s.amounts.some((a) => !Number.isFinite(a))) throw new Error(`${s.kind} amounts must be finite numbers`);
  }
}

/**
 * Curves for one input [1, C, H, W]: the original and every transformed copy go through the engine together,
 * `batch` images per call. `trueClass` undefined: the class predicted for the original.
 */
export async function invarianceCurves(engine: Engine, input: Tensor, trueClass: number | undefined, options: InvarianceOptions): Promise<InvarianceResult> {
  const { model } = engine;
  checkSweeps(options.sweeps);
  for (const l of options.layers) findLayer(model, l);
  const out = new Landmarks(model).output();
  const classes = engine.unitsPerItem(out.name);
  if (trueClass !== undefined && !(Number.isInteger(trueClass) && trueClass >= 0 && trueClass < classes)) {
    throw new Error(`true class ${trueClass} is out of range for ${classes} classes`);
  }
  const batch = options.batch ?? 64;
  if (!(Number.isInteger(batch) && batch >= 1)) throw new Error(`batch must be a positive integer, got ${batch}`);
  const jobs = options.sweeps.flatMap((s, si) => s.amounts.map((a, ai) => ({ si, ai, t: transformFor(s.kind, a) })));
  const layers = [...new Set([...options.layers, out.name])];
  const per = sizeOf(model.input);
  const curves: Curve[] = options.sweeps.map((s) => ({
    kind: s.kind,
    amounts: [...s.amounts],
    distance: Object.fromEntries(options.layers.map((l) => [l, new Array<number>(s.amounts.length).fill(NaN)])),
    probability: new Array<number>(s.amounts.length).fill(NaN),
  }));
  // Slot 0 of the first call is the original: its features are the reference for every distance.
  const reference = new Map<string, { features: Float32Array; norm: number }>();
  let target = trueClass ?? -1;
  let predicted = -1;
  for (let start = -1; start < jobs.length; start += batch) {
    const chunk = jobs.slice(Math.max(0, start), start + batch);
    const withOriginal = start < 0;
    const n = chunk.length + (withOriginal ? 1 : 0);
    const images = tensor([n, ...model.input]);
    if (withOriginal) images.data.set(input.data, 0);
    chunk.forEach((j, k) => images.data.set(transformInput(input, j.t, model.preprocess).data, (k + (withOriginal ? 1 : 0)) * per));
    const { activations } = await engine.forward(images, layers);
    const item = (layer: string, i: number) => {
      const t = activations.get(layer)!;
      const size = sizeOf(t.shape.slice(1));
      return t.data.subarray(i * size, (i + 1) * size);
    };
    if (withOriginal) {
      for (const l of options.layers) {
        const f = item(l, 0).slice();
        reference.set(l, { features: f, norm: norm(f) });
      }
      predicted = argmax(item(out.name, 0));
      if (target < 0) target = predicted;
    }
    chunk.forEach((j, k) => {
      const i = k + (withOriginal ? 1 : 0);
      const curve = curves[j.si];
      for (const l of options.layers) {
        const ref = reference.get(l)!;
        curve.distance[l][j.ai] = ref.norm > 0 ? distance(item(l, i), ref.features) / ref.norm : NaN;
      }
      curve.probability[j.ai] = softmax(item(out.name, i), out.isSoftmax)[target];
    });
  }
  return { trueClass: target, predicted, curves };
}

/** The mean over images of every curve; all results must come from the same sweeps and layers. */
export function meanCurves(results: InvarianceResult[]): Curve[] {
  if (results.length === 0) throw new Error('meanCurves of no results');
  const mean = (values: number[][]) => values[0].map((_, a) => values.reduce((s, v) => s + v[a], 0) / values.length);
  return results[0].curves.map((c, si) => ({
    kind: c.kind,
    amounts: [...c.amounts],
    distance: Object.fromEntries(Object.keys(c.distance).map((l) => [l, mean(results.map((r) => r.curves[si].distance[l]))])),
    probability: mean(results.map((r) => r.curves[si].probability)),
  }));
}

/** One image's result under the name it is reported by. */
export interface NamedResult {
  name: string;
  result: InvarianceResult;
}
