// Limited-memory BFGS: the optimiser of the linear probes (a smooth, convex objective in a few thousand variables).
export interface LbfgsOptions {
  maxIterations: number;
  /** Stop when every gradient component is at most this. */
  gradientTolerance: number;
  /** Stop when an iteration lowers the value by less than this, relative to max(1, |value|). */
  valueTolerance?: number;
  /** Correction pairs kept; default 10. */
  memory?: number;
}

export interface LbfgsResult {
  x: Float64Array;
  value: number;
  iterations: number;
  converged: boolean;
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

function normInf(a: Float64Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/** The L-BFGS direction -H g from the two-loop recursion over the stored pairs (s, y). */
function lbfgsDirection(g: Float64Array, s: Float64Array[], y: Float64Array[]): Float64Array {
  const q = Float64Array.from(g, (v) => -v);
  const alpha = new Array<number>(s.length);
  for (let j = s.length - 1; j >= 0; j--) {
    alpha[j] = dot(s[j], q) / dot(y[j], s[j]);
    for (let i = 0; i < q.length; i++) q[i] -= alpha[j] * y[j][i];
  }
  if (s.length > 0) {
    const last = s.length - 1;
    const gamma = dot(s[last], y[last]) / dot(y[last], y[last]);
    for (let i = 0; i < q.length; i++) q[i] *= gamma;
  }
  for (let j = 0; j < s.length; j++) {
    const beta = dot(y[j], q) / dot(y[j], s[j]);
    for (let i = 0; i < q.length; i++) q[i] += (alpha[j] - beta) * s[j][i];
  }
  return q;
}

/**
 * Minimises a smooth function with L-BFGS and a backtracking (Armijo) line search. `fg` returns the value at x and
 * writes the gradient into its second argument. Meant for convex objectives, where every step keeps s.y > 0.
 */
export function minimizeLbfgs(fg: (x: Float64Array, grad: Float64Array) => number, x0: Float64Array, opts: LbfgsOptions): LbfgsResult {
  const memory = opts.memory ?? 10;
  const valueTol = opts.valueTolerance ?? 1e-10;
  let x = Float64Array.from(x0);
  let g = new Float64Array(x.length);
  let f = fg(x, g);
  const S: Float64Array[] = [];
  const Y: Float64Array[] = [];
  for (let it = 0; it < opts.maxIterations; it++) {
    if (normInf(g) <= opts.gradientTolerance) return { x, value: f, iterations: it, converged: true };
    let d = lbfgsDirection(g, S, Y);
    let slope = dot(g, d);
    if (!(slope < 0)) {
      // Curvature pairs from far away can point uphill: start again from steepest descent.
      S.length = 0;
      Y.length = 0;
      d = Float64Array.from(g, (v) => -v);
      slope = dot(g, d);
    }
    // Without curvature information the scale of the first step is unknown: make it move x by about one unit.
    let step = S.length > 0 ? 1 : 1 / Math.max(1, Math.sqrt(dot(g, g)));
    const xNew = new Float64Array(x.length);
    const gNew = new Float64Array(x.length);
    let fNew = Infinity;
    for (let tries = 0; tries < 60; tries++) {
      for (let i = 0; i < x.length; i++) xNew[i] = x[i] + step * d[i];
      fNew = fg(xNew, gNew);
      if (fNew <= f + 1e-4 * step * slope) break;
      step /= 2;
    }
    if (!(fNew <= f)) return { x, value: f, iterations: it, converged: false };
    const s = Float64Array.from(xNew, (v, i) => v - x[i]);
    const y = Float64Array.from(gNew, (v, i) => v - g[i]);
    if (dot(s, y) > 1e-12 * dot(y, y)) {
      S.push(s);
      Y.push(y);
      if (S.length > memory) {
        S.shift();
        Y.shift();
      }
    }
    const decrease = f - fNew;
    x = xNew;
    g = gNew;
    f = fNew;
    if (decrease <= valueTol * Math.max(1, Math.abs(f))) return { x, value: f, iterations: it + 1, converged: true };
  }
  return { x, value: f, iterations: opts.maxIterations, converged: normInf(g) <= opts.gradientTolerance };
}
