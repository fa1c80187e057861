import { blankImage, checkImage, toChannels, type RgbImage } from '../data/image.js';

export type Rgb = [number, number, number];

/** A colormap as evenly spaced anchor colours, linearly interpolated in sRGB. */
export interface Colormap {
  name: string;
  /** Diverging maps put zero at their centre colour by default; sequential ones span min..max. */
  kind: 'sequential' | 'diverging';
  anchors: Rgb[];
}

function hex(s: string): Rgb {
  const n = parseInt(s, 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

/**
 * matplotlib's viridis (CC0) sampled at 10 points; interpolating between them stays within a few levels
 * of the full table, keeps lightness monotone and reads in greyscale and for colour-blind viewers.
 */
export const viridis: Colormap = {
  name: 'viridis',
  kind: 'sequential',
  anchors: ['440154', '482878', '3e4989', '31688e', '26828e', '1f9e89', '35b779', '6ece58', 'b5de2b', 'fde725'].map(hex),
};

/** ColorBrewer RdBu (11 classes), reversed so that negative is blue, zero near-white and positive red. */
export const blueRed: Colormap = {
  name: 'blue-red',
  kind: 'diverging',
  anchors: ['053061', '2166ac', '4393c3', '92c5de', 'd1e5f0', 'f7f7f7', 'fddbc7', 'f4a582', 'd6604d', 'b2182b', '67001f'].map(hex),
};

export const colormaps: Record<string, Colormap> = { viridis, 'blue-red': blueRed };

/** Colour at t in [0, 1] (clamped). */
export function colorAt(cmap: Colormap, t: number): Rgb {
  const a = cmap.anchors;
  const x = Math.min(1, Math.max(0, t)) * (a.length - 1);
  const i = Math.min(a.length - 2, Math.floor(x));
  const f = x - i;
  return [0, 1, 2].map((c) => Math.round(a[i][c] + f * (a[i + 1][c] - a[i][c]))) as Rgb;
}

export interface HeatmapOptions {
  /** Value shown at the low end; default: the data minimum, or -max|v| for a diverging map. */
  min?: number;
  /** Value shown at the high end; default: the data maximum, or +max|v| for a diverging map. */
  max?: number;
}

function valueRange(values: Float32Array, cmap: Colormap, opts: HeatmapOptions): [number, number] {
  let lo = Infinity, hi = -Infinity, abs = 0;
  for (const v of values) {
    if (!Number.isFinite(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
    if (Math.abs(v) > abs) abs = Math.abs(v);
  }
  if (cmap.kind === 'diverging') return [opts.min ?? -abs, opts.max ?? abs];
  return [opts.min ?? (lo === Infinity ? 0 : lo), opts.max ?? (hi === -Infinity ? 0 : hi)];
}

/**
 * An h x w map of values (row-major) as colours. A constant map shows the colour of its low end
 * (the centre colour for a diverging map); NaN and infinities are black so they stand out.
 */
export function heatmap(values: Float32Array, h: number, w: number, cmap: Colormap = viridis, opts: HeatmapOptions = {}): RgbImage {
  if (values.length !== h * w) throw new Error(`heatmap: ${values.length} values for ${h}x${w}`);
  const [lo, hi] = valueRange(values, cmap, opts);
  const span = hi - lo;
  const flat = cmap.kind === 'diverging' ? 0.5 : 0;
  const out = blankImage(w, h, 3);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isFinite(v)) continue;
    const rgb = colorAt(cmap, span > 0 ? (v - lo) / span : flat);
    out.data.set(rgb, 3 * i);
  }
  return out;
}

/** base * (1 - alpha) + heat * alpha; a grey base is shown as RGB. Both must have the same size. */
export function overlay(base: RgbImage, heat: RgbImage, alpha: number): RgbImage {
  checkImage(base, 'overlay base');
  checkImage(heat, 'overlay heat');
  if (base.width !== heat.width || base.height !== heat.height) {
    throw new Error(`overlay: base is ${base.width}x${base.height}, heat is ${heat.width}x${heat.height}; resize one first`);
  }
  if (!(alpha >= 0 && alpha <= 1)) throw new Error(`overlay: alpha ${alpha} is not in [0, 1]`);
  const channels: 1 | 3 = base.channels === 3 || heat.channels === 3 ? 3 : 1;
  const b = toChannels(base, channels).data;
  const h = toChannels(heat, channels).data;
  const out = blankImage(base.width, base.height, channels);
  for (let i = 0; i < out.data.length; i++) out.data[i] = Math.round(b[i] * (1 - alpha) + h[i] * alpha);
  return out;
}
