// The class scores that class attributions differentiate: the logits (the layer below a final softmax, as Captum's
// targets index the model's raw output when it has no softmax), and which class each image is explained for.
import type { Engine } from '../engine/engine.js';
import { logitsLayer } from '../engine/graphs.js';
import { tensor, type Tensor } from '../tensor.js';

/** The layer whose output holds the class scores. */
export function classLayer(engine: Engine): string {
  return engine.model.layers[logitsLayer(engine.model)].name;
}

export function classCount(engine: Engine): number {
  return engine.info(classLayer(engine)).outShape[0];
}

export function checkTarget(engine: Engine, target: number): void {
  const classes = classCount(engine);
  if (!Number.isInteger(target) || target < 0 || target >= classes) {
    throw new Error(`target class ${target} is out of range: model ${engine.model.name} has ${classes} classes (0..${classes - 1})`);
  }
}

/** A seed over the class scores of a batch: 1 at item i's target class. */
export function classMask(engine: Engine, targets: readonly number[]): Tensor {
  const classes = classCount(engine);
  const mask = tensor([targets.length, classes]);
  targets.forEach((t, i) => {
    checkTarget(engine, t);
    mask.data[i * classes + t] = 1;
  });
  return mask;
}

/** The class scores of a batch. */
export async function classScores(engine: Engine, input: Tensor): Promise<Tensor> {
  const layer = classLayer(engine);
  return (await engine.forward(input, [layer])).activations.get(layer)!;
}

/** Each image's predicted class (the first maximum of its scores). */
export function argmaxRows(scores: Tensor): number[] {
  const [n, classes] = scores.shape;
  return Array.from({ length: n }, (_, i) => {
    let best = 0;
    for (let c = 1; c < classes; c++) if (scores.data[i * classes + c] > scores.data[i * classes + best]) best = c;
    return best;
  });
}

/** Probabilities from class scores: a softmax, unless the scores already are probabilities (a model ending in one). */
export function softmax(scores: ArrayLike<number>, isSoftmax = false): Float64Array {
  const p = Float64Array.from(scores);
  if (isSoftmax) return p;
  let max = -Infinity;
  for (const v of p) max = Math.max(max, v);
  let sum = 0;
  for (let i = 0; i < p.length; i++) sum += p[i] = Math.exp(p[i] - max);
  for (let i = 0; i < p.length; i++) p[i] /= sum;
  return p;
}

/** The `top` most probable classes of one image, most probable first (ties: the lower class). */
export async function topClasses(engine: Engine, input: Tensor, top: number): Promise<{ class: number; probability: number }[]> {
  const p = softmax((await classScores(engine, input)).data);
  return Array.from(p, (probability, c) => ({ class: c, probability }))
    .sort((a, b) => b.probability - a.probability || a.class - b.class)
    .slice(0, top);
}
