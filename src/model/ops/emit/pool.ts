// Pooling matrices and divisors, shared by the average pools' forward and backward.
import type { Layer } from '../../layers.js';

/** AdaptiveAvgPool2d as a matrix [H*W, oh*ow] with PyTorch's bins: start floor(i*H/oh), end ceil((i+1)*H/oh). */
export function adaptivePoolMatrix(h: number, w: number, oh: number, ow: number): Float32Array {
  const m = new Float32Array(h * w * oh * ow);
  for (let oy = 0; oy < oh; oy++) {
    const y0 = Math.floor((oy * h) / oh);
    const y1 = Math.ceil(((oy + 1) * h) / oh);
    for (let ox = 0; ox < ow; ox++) {
      const x0 = Math.floor((ox * w) / ow);
      const x1 = Math.ceil(((ox + 1) * w) / ow);
      const inv = 1 / ((y1 - y0) * (x1 - x0));
      for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) m[(y * w + x) * oh * ow + oy * ow + ox] = inv;
    }
  }
  return m;
}

export function transposeMatrix(m: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(m.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = m[r * cols + c];
  return t;
}

/** Per output position, how many input (or padding) cells an average pool divides by. */
export function avgPoolDivisors(layer: Extract<Layer, { type: 'avgpool2d' }>, inShape: number[], outShape: number[]): Float32Array {
  const [, h, w] = inShape;
  const [, oh, ow] = outShape;
  const div = new Float32Array(oh * ow);
  for (let oy = 0; oy < oh; oy++) {
    for (let ox = 0; ox < ow; ox++) {
      const y0 = oy * layer.stride[0] - layer.padding[0];
      const x0 = ox * layer.stride[1] - layer.padding[1];
      const clip = (v: number, hi: number) => Math.min(Math.max(v, 0), hi);
      if (layer.countIncludePad) {
        // PyTorch counts padding cells but not the overhang past the padding that ceil_mode adds.
        const yh = Math.min(y0 + layer.kernel[0], h + layer.padding[0]) - y0;
        const xw = Math.min(x0 + layer.kernel[1], w + layer.padding[1]) - x0;
        div[oy * ow + ox] = yh * xw;
      } else {
        div[oy * ow + ox] = (clip(y0 + layer.kernel[0], h) - clip(y0, h)) * (clip(x0 + layer.kernel[1], w) - clip(x0, w));
      }
    }
  }
  return div;
}

