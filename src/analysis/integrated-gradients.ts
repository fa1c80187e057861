// Integrated Gradients (Sundararajan et al. 2017) as Captum 0.7 computes it: gradients of the target score at points
// on the straight path from a baseline to the input, weighted by an integration rule, times (input - baseline);
// the path points go through the engine in batches, one call per batch.
import type { Engine } from '../engine/engine.js';
import { concatBatch, sizeOf, tensor, type Tensor } from '../tensor.js';
import type { OnProgress } from '../util/progress.js';
import { checkTarget, classLayer, classMask } from './class-target.js';

export const INTEGRATION_RULES = ['riemann_trapezoid', 'gausslegendre', 'riemann_left', 'riemann_right', 'riemann_middle'] as const;
export type IntegrationRule = (typeof INTEGRATION_RULES)[number];

/** Gauss-Legendre nodes and weights on [-1, 1] (Newton's method on the Legendre polynomial, float64). */
function gaussLegendre(n: number): { nodes: number[]; weights: number[] } {
  const nodes: number[] = [];
  const weights: number[] = [];
  for (let i = 0; i < n; i++) {
    let x = Math.cos((Math.PI * (i + 0.75)) / (n + 0.5));
    let dp = 0;
    for (let iter = 0; iter < 100; iter++) {
      let p0 = 1;
      let p1 = x;
      for (let k = 2; k <= n; k++) [p0, p1] = [p1, ((2 * k - 1) * x * p1 - (k - 1) * p0) / k];
      if (n === 1) p1 = x;
      dp = (n * (x * p1 - p0)) / (x * x - 1);
      const step = p1 / dp;
      x -= step;
      if (Math.abs(step) < 1e-16) break;
    }
    nodes.push(x);
    weights.push(2 / ((1 - x * x) * dp * dp));
  }
  // Ascending, as numpy.polynomial.legendre.leggauss returns them.
  const order = nodes.map((_, i) => i).sort((a, b) => nodes[a] - nodes[b]);
  return { nodes: order.map((i) => nodes[i]), weights: order.map((i) => weights[i]) };
}

/**
 * Where on the path (alpha in [0, 1]) the gradients are taken and what each weighs, by Captum's rules: the
 * trapezoid puts n points on linspace(0, 1, n) with weights 1/n, halved at both ends (Captum's convention, which
 * sums to (n - 1)/n, not 1).
 */
export function integrationPoints(rule: IntegrationRule, n: number): { alphas: number[]; weights: number[] } {
  if (!(Number.isInteger(n) && n >= 2)) throw new Error(`integration needs an integer number of steps >= 2, got ${n}`);
  const uniform = Array.from({ length: n }, () => 1 / n);
  switch (rule) {
    case 'riemann_trapezoid': {
      const weights = [...uniform];
      weights[0] /= 2;
      weights[n - 1] /= 2;
      return { alphas: Array.from({ length: n }, (_, i) => i / (n - 1)), weights };
    }
    case 'riemann_left':
      return { alphas: Array.from({ length: n }, (_, i) => i / n), weights: uniform };
    case 'riemann_right':
      return { alphas: Array.from({ length: n }, (_, i) => (i + 1) / n), weights: uniform };
    case 'riemann_middle':
      return { alphas: Array.from({ length: n }, (_, i) => (i + 0.5) / n), weights: uniform };
    case 'gausslegendre': {
      const { nodes, weights } = gaussLegendre(n);
      return { alphas: nodes.map((x) => 0.5 * (1 + x)), weights: weights.map((w) => 0.5 * w) };
    }
  }
}

/** Captum's defaults (n_steps 50, Gauss-Legendre) and the engine batch. */
export const IG_DEFAULTS = { steps: 50, integration: 'gausslegendre' as IntegrationRule, batch: 16 };

export interface IntegratedGradientsOptions {
  /** Points on the path (Captum's n_steps); default 50. */
  steps?: number;
  /** Default 'gausslegendre', as Captum. */
  integration?: IntegrationRule;
  /** [1, C, H, W] in the model's input space; default zeros (after mean subtraction: the mean image). */
  baseline?: Tensor;
  /** Path points per engine call; default 16. */
  batch?: number;
  onProgress?: OnProgress;
}

export interface IntegratedGradients {
  attribution: Tensor;
  target: number;
  /** sum(attribution) - (score(input) - score(baseline)): how far the integral is from exact (Captum's delta). */
  delta: number;
  /** The target's score at the input and at the baseline. */
  scores: [number, number];
}

/** Integrated Gradients of one image [1, C, H, W] for one target class. */
export async function integratedGradients(engine: Engine, input: Tensor, target: number, options: IntegratedGradientsOptions = {}): Promise<IntegratedGradients> {
  if (input.shape[0] !== 1) throw new Error('integratedGradients takes one image');
  checkTarget(engine, target);
  const { alphas, weights } = integrationPoints(options.integration ?? IG_DEFAULTS.integration, options.steps ?? IG_DEFAULTS.steps);
  const baseline = options.baseline ?? tensor([...input.shape]);
  if (baseline.shape.join(',') !== input.shape.join(',')) throw new Error(`baseline has shape [${baseline.shape}], the input [${input.shape}]`);
  const batch = options.batch ?? IG_DEFAULTS.batch;
  if (!(Number.isInteger(batch) && batch >= 1)) throw new Error(`batch must be an integer >= 1, got ${batch}`);
  const per = sizeOf(input.shape);
  const diff = new Float32Array(per);
  for (let k = 0; k < per; k++) diff[k] = input.data[k] - baseline.data[k];
  const total = new Float64Array(per);
  const layer = classLayer(engine);
  for (let start = 0; start < alphas.length; start += batch) {
    const count = Math.min(batch, alphas.length - start);
    const points = tensor([count, ...input.shape.slice(1)]);
    for (let i = 0; i < count; i++) {
      const alpha = alphas[start + i];
      for (let k = 0; k < per; k++) points.data[i * per + k] = baseline.data[k] + alpha * diff[k];
    }
    const { projection } = await engine.backward(points, { layer, mask: classMask(engine, Array(count).fill(target)), value: 'one' }, { rule: 'gradient', lrn: 'gradient' });
    for (let i = 0; i < count; i++) {
      const w = weights[start + i];
      for (let k = 0; k < per; k++) total[k] += w * projection.data[i * per + k];
    }
    options.onProgress?.(start + count, alphas.length);
  }
  const attribution = tensor([...input.shape]);
  let sum = 0;
  for (let k = 0; k < per; k++) sum += attribution.data[k] = total[k] * diff[k];
  const ends = (await engine.forward(concatBatch([input, baseline]), [layer])).activations.get(layer)!;
  const classes = ends.shape[1];
  const scores: [number, number] = [ends.data[target], ends.data[classes + target]];
  return { attribution, target, delta: sum - (scores[0] - scores[1]), scores };
}
