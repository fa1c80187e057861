// The bounded per-feature heaps of a top-k scan and how a batch's candidates enter them: an exact merge, so that the
// streamed result equals a sort of all activations under the ranking.
//
// Ranking (the tie rule): larger value first, then lower dataset index, then lower position in row-major order (lower
// y, then lower x). NaN and -Infinity are never kept (activations are assumed finite: a map holding NaN may lose its
// other values, as ONNX TopK orders NaN first).
import type { TopkCandidates } from '../engine/engine.js';

/** The ranking in words, for files that list entries. */
export const TOPK_TIE_RULE = 'larger value first, then lower dataset index, then lower position (row-major: y, then x)';

/** One kept activation: feature map value at (y, x) of dataset image `image`. */
export interface TopkEntry {
  value: number;
  image: number;
  y: number;
  x: number;
}

/** Negative when a ranks before b under the tie rule above. */
export function compareEntries(a: TopkEntry, b: TopkEntry): number {
  if (a.value !== b.value) return a.value > b.value ? -1 : 1;
  return a.image - b.image || a.y - b.y || a.x - b.x;
}

/**
 * For each of `features` maps, the k best entries seen so far, as a min-heap (worst entry at the root) in flat typed
 * arrays: memory is features x k whatever the number of images.
 */
export class FeatureHeaps {
  private readonly values: Float64Array;
  private readonly images: Int32Array;
  private readonly ys: Int32Array;
  private readonly xs: Int32Array;
  private readonly sizes: Int32Array;

  constructor(
    readonly features: number,
    readonly k: number,
  ) {
    this.values = new Float64Array(features * k);
    this.images = new Int32Array(features * k);
    this.ys = new Int32Array(features * k);
    this.xs = new Int32Array(features * k);
    this.sizes = new Int32Array(features);
  }

  /** A value below this cannot enter feature f's heap: its worst kept value once full, -Infinity before. */
  floor(f: number): number {
    return this.sizes[f] < this.k ? -Infinity : this.values[f * this.k];
  }

  /** Slot a ranks after slot b (is worse). */
  private worse(a: number, b: number): boolean {
    const va = this.values[a], vb = this.values[b];
    if (va !== vb) return va < vb;
    return (this.images[a] - this.images[b] || this.ys[a] - this.ys[b] || this.xs[a] - this.xs[b]) > 0;
  }

  private swap(a: number, b: number): void {
    [this.values[a], this.values[b]] = [this.values[b], this.values[a]];
    [this.images[a], this.images[b]] = [this.images[b], this.images[a]];
    [this.ys[a], this.ys[b]] = [this.ys[b], this.ys[a]];
    [this.xs[a], this.xs[b]] = [this.xs[b], this.xs[a]];
  }

  private set(slot: number, value: number, image: number, y: number, x: number): void {
    this.values[slot] = value;
    this.images[slot] = image;
    this.ys[slot] = y;
    this.xs[slot] = x;
  }

  offer(f: number, value: number, image: number, y: number, x: number): void {
    if (!(value > -Infinity)) return;
    const base = f * this.k;
    const n = this.sizes[f];
    if (n < this.k) {
      this.set(base + n, value, image, y, x);
      this.sizes[f] = n + 1;
      for (let i = n; i > 0; ) {
        const parent = (i - 1) >> 1;
        if (!this.worse(base + i, base + parent)) break;
        this.swap(base + i, base + parent);
        i = parent;
      }
      return;
    }
    const root = this.values[base];
    if (value < root) return;
    if (value === root) {
      const rank = image - this.images[base] || y - this.ys[base] || x - this.xs[base];
      if (rank >= 0) return;
    }
    this.set(base, value, image, y, x);
    for (let i = 0; ; ) {
      const l = 2 * i + 1, r = l + 1;
      let worst = i;
      if (l < n && this.worse(base + l, base + worst)) worst = l;
      if (r < n && this.worse(base + r, base + worst)) worst = r;
      if (worst === i) break;
      this.swap(base + i, base + worst);
      i = worst;
    }
  }

  /** Feature f's entries, best first. */
  sorted(f: number): TopkEntry[] {
    const out: TopkEntry[] = [];
    for (let s = f * this.k; s < f * this.k + this.sizes[f]; s++) {
      out.push({ value: this.values[s], image: this.images[s], y: this.ys[s], x: this.xs[s] });
    }
    return out.sort(compareEntries);
  }
}

/** One batch's per-image candidates ([N, C, per], best first per map) offered to a layer's heaps. */
export function offerCandidates({ values, positions, shape: [, C, per] }: TopkCandidates, images: number[], W: number, heaps: FeatureHeaps): void {
  for (let n = 0; n < images.length; n++) {
    for (let f = 0; f < C; f++) {
      const floor = heaps.floor(f);
      const base = (n * C + f) * per;
      // Candidates come best first: once one is below the floor, so are the rest (NaN stops the image too).
      for (let j = 0; j < per && values[base + j] >= floor; j++) {
        const p = Number(positions[base + j]);
        heaps.offer(f, values[base + j], images[n], Math.floor(p / W), p % W);
      }
    }
  }
}
