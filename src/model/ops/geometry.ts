// Shape, receptive-field and JSON helpers that several op kinds share.
import type { Layer, LayerJson, Pair } from '../layers.js';
import type { ReceptiveField } from '../shapes.js';

export function poolOutputSize(inSize: number, k: number, s: number, p: number, ceilMode: boolean): number {
  const span = inSize + 2 * p - k;
  if (span < 0) return 0;
  let out = (ceilMode ? Math.ceil(span / s) : Math.floor(span / s)) + 1;
  // PyTorch and ONNX drop a last window that would start inside the right padding.
  if (ceilMode && (out - 1) * s >= inSize + p) out--;
  return out;
}

export function windowRf(rf: ReceptiveField, k: Pair, s: Pair, p: Pair): ReceptiveField {
  if (rf.global) return rf;
  return {
    size: [rf.size[0] + (k[0] - 1) * rf.jump[0], rf.size[1] + (k[1] - 1) * rf.jump[1]],
    jump: [rf.jump[0] * s[0], rf.jump[1] * s[1]],
    start: [rf.start[0] - p[0] * rf.jump[0], rf.start[1] - p[1] * rf.jump[1]],
    global: false,
  };
}

export function need(cond: boolean, layer: Layer, msg: string): void {
  if (!cond) throw new Error(`layer '${layer.name}' (${layer.type}): ${msg}`);
}

export function needMap(layer: Layer, shape: number[]): void {
  need(shape.length === 3, layer, `needs a [C,H,W] input, got [${shape}]`);
}

export const sameRf = (_l: unknown, rfs: ReceptiveField[]): ReceptiveField => rfs[0];
export const imageRf = (_l: unknown, _rfs: ReceptiveField[], _s: number[][], image: ReceptiveField): ReceptiveField => image;
export const sameShape = (_l: unknown, shapes: number[][]): number[] => shapes[0];
export const inputSize = (_l: unknown, shapes: number[][]): number => shapes[0].reduce((a, d) => a * d, 1);
export const noParams = (): [] => [];

export function pair(v: unknown, what: string): Pair {
  if (typeof v === 'number') return [v, v];
  if (Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'number')) return [v[0], v[1]];
  throw new Error(`layer field ${what} must be a number or [h, w], got ${JSON.stringify(v)}`);
}

export function num(o: LayerJson, key: string, fallback?: number): number {
  const v = o[key];
  if (typeof v === 'number') return v;
  if (v === undefined && fallback !== undefined) return fallback;
  throw new Error(`layer '${o.name}' (${o.type}) needs a numeric '${key}'`);
}

export function scalarOrPair(p: Pair): number | Pair {
  return p[0] === p[1] ? p[0] : p;
}
