import { Rng } from '../util/random.js';

/**
 * One 32-bit seed from several integers (murmur3's finaliser between words), so that streams such as
 * (seed, split, item) or (seed, batch) are unrelated even when the inputs differ by one.
 */
export function mixSeed(...words: number[]): number {
  let h = 0x2545f491;
  for (const w of words) {
    h = fmix32((h ^ fmix32((w >>> 0) + 0x9e3779b9)) >>> 0);
    h = (Math.imul(h, 5) + 0xe6546b64) >>> 0;
  }
  return fmix32(h);
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** 0..n-1 in a seeded random order (Fisher-Yates): a training epoch's order that a resumed run can recompute. */
export function seededPermutation(n: number, seed: number): number[] {
  if (!(Number.isInteger(n) && n >= 0)) throw new Error(`seededPermutation: n must be a non-negative integer, got ${n}`);
  const rng = new Rng(mixSeed(seed, 0x5045524d));
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}

/**
 * Disjoint index sets of a dataset of `size` items, e.g. fractions [0.8, 0.1, 0.1] for train/val/test. The same
 * (size, fractions, seed) always gives the same sets. Fractions may sum to less than 1 (the rest is left out).
 * Each set is returned in ascending order, so reading it walks the files in order; shuffle per epoch separately.
 */
export function splitIndices(size: number, fractions: number[], seed: number): number[][] {
  if (!(Number.isInteger(size) && size >= 0)) throw new Error(`splitIndices: size must be a non-negative integer, got ${size}`);
  if (fractions.length === 0 || fractions.some((f) => !(f >= 0))) {
    throw new Error(`splitIndices: fractions must be non-negative numbers, got [${fractions}]`);
  }
  const total = fractions.reduce((a, b) => a + b, 0);
  if (total > 1 + 1e-9) throw new Error(`splitIndices: fractions [${fractions}] sum to ${total}, more than 1`);
  const order = seededPermutation(size, mixSeed(seed, 0x53504c54));
  const parts: number[][] = [];
  let cum = 0;
  let start = 0;
  for (const f of fractions) {
    cum += f;
    // Rounding the cumulative boundary (not each part) keeps the parts' sizes summing to round(size * total).
    const end = Math.min(size, Math.round(size * cum));
    parts.push(order.slice(start, end).sort((a, b) => a - b));
    start = end;
  }
  return parts;
}

export function checkIndex(ds: { name: string; size: number }, i: number): void {
  if (!(Number.isInteger(i) && i >= 0 && i < ds.size)) {
    throw new Error(`${ds.name}: item index ${i} is out of range 0..${ds.size - 1}`);
  }
}
