// What the benchmarks share: their one argument check and their one agreement measure.
import { maxAbs, type Tensor } from '../src/tensor.js';

/** An integer command-line value, at least `min`; the benchmarks' one argument check. */
export function intArg(name: string, v: string | undefined, min: number): number {
  const n = Number(v);
  if (v === undefined || !Number.isInteger(n) || n < min) throw new Error(`${name} needs an integer >= ${min}, got ${v ?? 'nothing'}`);
  return n;
}

/** max|ours - ref| / max|ref|: 0 when both are all zero, Infinity when only the reference is. */
export function relError(ours: Tensor, ref: Tensor): number {
  if (ours.shape.join(',') !== ref.shape.join(',')) throw new Error(`shape [${ours.shape}] vs [${ref.shape}]`);
  let m = 0;
  for (let i = 0; i < ref.data.length; i++) m = Math.max(m, Math.abs(ours.data[i] - ref.data[i]));
  const scale = maxAbs(ref.data);
  return scale > 0 ? m / scale : m === 0 ? 0 : Infinity;
}
