// Multinomial logistic regression on standardised features, fitted by L-BFGS: the linear classifier of the probes.
import { minimizeLbfgs } from './lbfgs.js';

export interface LogisticRegressionOptions {
  /** λ of the penalty (λ/2)·||W||² added to the mean cross-entropy, on standardised features; the bias is free. */
  l2: number;
  maxIterations?: number;
  gradientTolerance?: number;
}

/** A linear softmax classifier on raw features: scores = weight · x + bias (the standardisation is folded in). */
export interface LinearClassifier {
  classes: number;
  dims: number;
  /** [classes, dims] row-major. */
  weight: Float64Array;
  bias: Float64Array;
  /** Training objective at the solution, iterations used, and whether the optimiser met its tolerance. */
  loss: number;
  iterations: number;
  converged: boolean;
}

/**
 * Per-dimension mean and 1/std over the rows. Constant dimensions (dead units; float32 rounding counts as constant)
 * get 1/std = 0: they carry nothing, and dividing by a rounding error would turn noise into a feature.
 */
function standardiser(x: ArrayLike<number>, rows: number, dims: number): { mean: Float64Array; invStd: Float64Array } {
  const mean = new Float64Array(dims);
  const sq = new Float64Array(dims);
  for (let r = 0; r < rows; r++) for (let d = 0; d < dims; d++) mean[d] += x[r * dims + d];
  for (let d = 0; d < dims; d++) mean[d] /= rows;
  for (let r = 0; r < rows; r++) for (let d = 0; d < dims; d++) sq[d] += (x[r * dims + d] - mean[d]) ** 2;
  const invStd = Float64Array.from(sq, (v, d) => {
    const sd = Math.sqrt(v / rows);
    return sd > 1e-6 * Math.abs(mean[d]) && sd > 0 ? 1 / sd : 0;
  });
  return { mean, invStd };
}

/** Mean softmax cross-entropy plus (l2/2)·||W||² and its gradient, for parameters [W (classes x dims), b (classes)]. */
function softmaxObjective(z: Float64Array, labels: Int32Array, dims: number, classes: number, l2: number) {
  const rows = labels.length;
  const scores = new Float64Array(classes);
  return (theta: Float64Array, grad: Float64Array): number => {
    grad.fill(0);
    const wEnd = classes * dims;
    let loss = 0;
    for (let r = 0; r < rows; r++) {
      const xr = r * dims;
      let max = -Infinity;
      for (let k = 0; k < classes; k++) {
        let s = theta[wEnd + k];
        const wk = k * dims;
        for (let d = 0; d < dims; d++) s += theta[wk + d] * z[xr + d];
        scores[k] = s;
        if (s > max) max = s;
      }
      let sum = 0;
      for (let k = 0; k < classes; k++) sum += Math.exp(scores[k] - max);
      loss += Math.log(sum) + max - scores[labels[r]];
      for (let k = 0; k < classes; k++) {
        const residual = (Math.exp(scores[k] - max) / sum - (k === labels[r] ? 1 : 0)) / rows;
        grad[wEnd + k] += residual;
        const wk = k * dims;
        for (let d = 0; d < dims; d++) grad[wk + d] += residual * z[xr + d];
      }
    }
    let penalty = 0;
    for (let i = 0; i < wEnd; i++) {
      penalty += theta[i] * theta[i];
      grad[i] += l2 * theta[i];
    }
    return loss / rows + 0.5 * l2 * penalty;
  };
}

/**
 * Multinomial logistic regression (the paper's "new softmax") trained with full-batch L-BFGS on standardised
 * features (mean 0, variance 1 per dimension over the training rows). `x` is [labels.length, dims] row-major.
 */
export function fitLogisticRegression(x: ArrayLike<number>, labels: Int32Array, dims: number, classes: number, opts: LogisticRegressionOptions): LinearClassifier {
  const rows = labels.length;
  if (rows === 0) throw new Error('logistic regression needs at least one training row');
  if (x.length !== rows * dims) throw new Error(`features have ${x.length} values, ${rows} rows of ${dims} need ${rows * dims}`);
  for (const l of labels) if (!(l >= 0 && l < classes)) throw new Error(`label ${l} is out of range for ${classes} classes`);
  if (!(opts.l2 >= 0)) throw new Error(`l2 must be >= 0, got ${opts.l2}`);
  const { mean, invStd } = standardiser(x, rows, dims);
  const z = new Float64Array(rows * dims);
  for (let r = 0; r < rows; r++) for (let d = 0; d < dims; d++) z[r * dims + d] = (x[r * dims + d] - mean[d]) * invStd[d];
  const fit = minimizeLbfgs(softmaxObjective(z, labels, dims, classes, opts.l2), new Float64Array(classes * (dims + 1)), {
    maxIterations: opts.maxIterations ?? 500,
    gradientTolerance: opts.gradientTolerance ?? 1e-6,
  });
  // Back to raw features: w·(x - mean)·invStd + b = (w·invStd)·x + (b - Σ w·invStd·mean).
  const weight = new Float64Array(classes * dims);
  const bias = fit.x.slice(classes * dims);
  for (let k = 0; k < classes; k++) {
    for (let d = 0; d < dims; d++) {
      const w = fit.x[k * dims + d] * invStd[d];
      weight[k * dims + d] = w;
      bias[k] -= w * mean[d];
    }
  }
  return { classes, dims, weight, bias, loss: fit.value, iterations: fit.iterations, converged: fit.converged };
}

/** The highest-scoring class of each row of x ([rows, dims] row-major). */
export function predictClasses(c: LinearClassifier, x: ArrayLike<number>): Int32Array {
  const rows = x.length / c.dims;
  if (!Number.isInteger(rows)) throw new Error(`features have ${x.length} values, not a multiple of ${c.dims}`);
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = -Infinity;
    for (let k = 0; k < c.classes; k++) {
      let s = c.bias[k];
      for (let d = 0; d < c.dims; d++) s += c.weight[k * c.dims + d] * x[r * c.dims + d];
      if (s > best) {
        best = s;
        out[r] = k;
      }
    }
  }
  return out;
}

export function accuracyOf(predicted: Int32Array, labels: Int32Array): number {
  let right = 0;
  predicted.forEach((p, i) => {
    if (p === labels[i]) right++;
  });
  return right / Math.max(labels.length, 1);
}
