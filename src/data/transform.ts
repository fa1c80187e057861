// Geometric transforms of network inputs for the invariance experiment (Fig. 5): the picture moves, the frame stays.
import type { Preprocess } from '../model/layers.js';
import { sizeOf, tensor, type Tensor } from '../tensor.js';

/**
 * A transform about the image centre. translate: pixels, +dy moves the content down, +dx right; scale: ratio of the
 * content's new size to its old (2 = zoom in); rotate: degrees, counter-clockwise as seen on screen.
 */
export type Transform =
  | { kind: 'translate'; dy: number; dx: number }
  | { kind: 'scale'; factor: number }
  | { kind: 'rotate'; degrees: number };

/** cos and sin that are exact at multiples of 90 degrees, so that quarter turns move pixels without rounding. */
function cosSin(degrees: number): [number, number] {
  const d = ((degrees % 360) + 360) % 360;
  const exact: Record<number, [number, number]> = { 0: [1, 0], 90: [0, 1], 180: [-1, 0], 270: [0, -1] };
  if (d in exact) return exact[d];
  const r = (d * Math.PI) / 180;
  return [Math.cos(r), Math.sin(r)];
}

/** For each output pixel, the source position it samples (pixel-centre coordinates), or NaN when it falls off the source. */
function sourceGrid(t: Transform, H: number, W: number): Float64Array {
  const cy = (H - 1) / 2, cx = (W - 1) / 2;
  const grid = new Float64Array(2 * H * W);
  let map: (y: number, x: number) => [number, number];
  if (t.kind === 'translate') {
    if (!Number.isFinite(t.dy) || !Number.isFinite(t.dx)) throw new Error(`translate needs finite offsets, got ${t.dy}, ${t.dx}`);
    map = (y, x) => [y - t.dy, x - t.dx];
  } else if (t.kind === 'scale') {
    if (!(t.factor > 0 && Number.isFinite(t.factor))) throw new Error(`scale factor must be a positive number, got ${t.factor}`);
    map = (y, x) => [cy + (y - cy) / t.factor, cx + (x - cx) / t.factor];
  } else {
    if (!Number.isFinite(t.degrees)) throw new Error(`rotation must be a finite number of degrees, got ${t.degrees}`);
    const [c, s] = cosSin(t.degrees);
    // The inverse rotation: y grows downwards, so a screen-counter-clockwise turn by θ is undone by this matrix.
    map = (y, x) => [cy + s * (x - cx) + c * (y - cy), cx + c * (x - cx) - s * (y - cy)];
  }
  // The source covers [-0.5, size - 0.5] (pixel squares, not just centres); the epsilon absorbs rounding in the map.
  const eps = 1e-9;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const [sy, sx] = map(y, x);
      const inside = sy >= -0.5 - eps && sy <= H - 0.5 + eps && sx >= -0.5 - eps && sx <= W - 0.5 + eps;
      grid[2 * (y * W + x)] = inside ? sy : NaN;
      grid[2 * (y * W + x) + 1] = inside ? sx : NaN;
    }
  }
  return grid;
}

/** [C, H, W] or [1, C, H, W] -> [C, H, W]. */
function planes(t: Tensor, what: string): [number, number, number] {
  const s = t.shape.length === 4 && t.shape[0] === 1 ? t.shape.slice(1) : t.shape;
  if (s.length !== 3) throw new Error(`${what} must be [C, H, W] or [1, C, H, W], got [${t.shape}]`);
  return s as [number, number, number];
}

/**
 * Resamples planar images (bilinear, edge pixels extended by half a pixel) under t. Output pixels whose source falls
 * off the image take `fill`: one value, or a per-position [C, H, W] array. Integer shifts and quarter turns copy
 * values exactly. Bilinear sampling does not low-pass before shrinking: at the scales of Fig. 5 (down to about 0.6)
 * the aliasing is small.
 */
export function transformPlanes(src: Tensor, t: Transform, fill: number | Float32Array = 0): Tensor {
  const [C, H, W] = planes(src, 'transform input');
  const n = H * W;
  if (typeof fill !== 'number' && fill.length !== C * n) throw new Error(`fill has ${fill.length} values, the image ${C * n}`);
  const grid = sourceGrid(t, H, W);
  const out = tensor([...src.shape]);
  const d = src.data;
  for (let p = 0; p < n; p++) {
    const sy = grid[2 * p], sx = grid[2 * p + 1];
    if (Number.isNaN(sy)) {
      for (let c = 0; c < C; c++) out.data[c * n + p] = typeof fill === 'number' ? fill : fill[c * n + p];
      continue;
    }
    const y = Math.min(H - 1, Math.max(0, sy)), x = Math.min(W - 1, Math.max(0, sx));
    const y0 = Math.floor(y), x0 = Math.floor(x);
    const y1 = Math.min(H - 1, y0 + 1), x1 = Math.min(W - 1, x0 + 1);
    const fy = y - y0, fx = x - x0;
    for (let c = 0; c < C; c++) {
      const o = c * n;
      const top = (1 - fx) * d[o + y0 * W + x0] + fx * d[o + y0 * W + x1];
      const bottom = (1 - fx) * d[o + y1 * W + x0] + fx * d[o + y1 * W + x1];
      out.data[o + p] = (1 - fy) * top + fy * bottom;
    }
  }
  return out;
}

/**
 * A network input under t, as if the picture had been transformed before preprocessing: the uncovered area shows the
 * dataset mean (0 input). With a per-pixel mean image, moving the mean-subtracted input would drag the mean along
 * with the picture; the correction term (T(mean) - mean) / std puts it back.
 */
export function transformInput(input: Tensor, t: Transform, preprocess: Preprocess): Tensor {
  const [C, H, W] = planes(input, 'input');
  const out = transformPlanes(input, t, 0);
  const m = preprocess.meanImage;
  if (!m) return out;
  if (sizeOf(m.shape) !== C * H * W) throw new Error(`mean image has shape [${m.shape}], the input [${input.shape}]`);
  const moved = transformPlanes({ shape: [C, H, W], data: m.data }, t, m.data);
  const std = preprocess.std;
  for (let c = 0; c < C; c++) {
    const s = std.length === 1 ? std[0] : std[c];
    for (let p = c * H * W; p < (c + 1) * H * W; p++) out.data[p] += (moved.data[p] - m.data[p]) / s;
  }
  return out;
}
