// Resizing and blurring of [N, C, H, W] maps, with PyTorch's conventions where attribution methods borrow them
// (Captum upsamples Grad-CAM with F.interpolate).
import { sizeOf, tensor, type Tensor } from '../tensor.js';

function dims(t: Tensor): [number, number, number] {
  if (t.shape.length !== 4) throw new Error(`expected an [N, C, H, W] tensor, got [${t.shape}]`);
  const [n, c, h, w] = t.shape;
  return [n * c, h, w];
}

/** One axis of F.interpolate(mode='bilinear', align_corners=False): per output index, two sources and a weight. */
function bilinearAxis(inSize: number, outSize: number): { lo: Int32Array; hi: Int32Array; t: Float64Array } {
  const scale = inSize / outSize;
  const lo = new Int32Array(outSize);
  const hi = new Int32Array(outSize);
  const t = new Float64Array(outSize);
  for (let o = 0; o < outSize; o++) {
    const src = Math.max(0, (o + 0.5) * scale - 0.5);
    lo[o] = Math.min(Math.floor(src), inSize - 1);
    hi[o] = Math.min(lo[o] + 1, inSize - 1);
    t[o] = src - lo[o];
  }
  return { lo, hi, t };
}

/** F.interpolate(x, size=[height, width], mode='bilinear', align_corners=False). */
export function resizeBilinear(x: Tensor, height: number, width: number): Tensor {
  const [planes, h, w] = dims(x);
  const out = tensor([x.shape[0], x.shape[1], height, width]);
  const ys = bilinearAxis(h, height);
  const xs = bilinearAxis(w, width);
  for (let p = 0; p < planes; p++) {
    const src = p * h * w;
    const dst = p * height * width;
    for (let oy = 0; oy < height; oy++) {
      const r0 = src + ys.lo[oy] * w;
      const r1 = src + ys.hi[oy] * w;
      const ty = ys.t[oy];
      for (let ox = 0; ox < width; ox++) {
        const tx = xs.t[ox];
        const top = x.data[r0 + xs.lo[ox]] * (1 - tx) + x.data[r0 + xs.hi[ox]] * tx;
        const bottom = x.data[r1 + xs.lo[ox]] * (1 - tx) + x.data[r1 + xs.hi[ox]] * tx;
        out.data[dst + oy * width + ox] = top * (1 - ty) + bottom * ty;
      }
    }
  }
  return out;
}

/** F.interpolate(x, size=[height, width], mode='nearest'): source index floor(o * in / out). */
export function resizeNearest(x: Tensor, height: number, width: number): Tensor {
  const [planes, h, w] = dims(x);
  const out = tensor([x.shape[0], x.shape[1], height, width]);
  const sy = Array.from({ length: height }, (_, o) => Math.min(Math.floor((o * h) / height), h - 1));
  const sx = Array.from({ length: width }, (_, o) => Math.min(Math.floor((o * w) / width), w - 1));
  for (let p = 0; p < planes; p++) {
    for (let oy = 0; oy < height; oy++) {
      for (let ox = 0; ox < width; ox++) out.data[(p * height + oy) * width + ox] = x.data[(p * h + sy[oy]) * w + sx[ox]];
    }
  }
  return out;
}

/** The normalised 1-d Gaussian of standard deviation `sigma` (pixels), radius ceil(3 sigma). */
function gaussianKernel(sigma: number): Float64Array {
  const radius = Math.max(1, Math.ceil(3 * sigma));
  const k = new Float64Array(2 * radius + 1);
  let total = 0;
  for (let i = -radius; i <= radius; i++) total += k[i + radius] = Math.exp(-(i * i) / (2 * sigma * sigma));
  return k.map((v) => v / total);
}

/** Separable Gaussian blur of every plane; borders replicate the edge pixel, so a constant image stays constant. */
export function gaussianBlur(x: Tensor, sigma: number): Tensor {
  if (!(Number.isFinite(sigma) && sigma >= 0)) throw new Error(`blur sigma must be a finite number >= 0, got ${sigma}`);
  if (sigma === 0) return { shape: [...x.shape], data: x.data.slice() };
  const [planes, h, w] = dims(x);
  const k = gaussianKernel(sigma);
  const radius = (k.length - 1) / 2;
  const rows = new Float32Array(sizeOf(x.shape));
  const out = tensor([...x.shape]);
  const clamp = (v: number, n: number) => (v < 0 ? 0 : v >= n ? n - 1 : v);
  for (let p = 0; p < planes; p++) {
    const base = p * h * w;
    for (let y = 0; y < h; y++) {
      for (let xx = 0; xx < w; xx++) {
        let s = 0;
        for (let j = -radius; j <= radius; j++) s += k[j + radius] * x.data[base + y * w + clamp(xx + j, w)];
        rows[base + y * w + xx] = s;
      }
    }
    for (let y = 0; y < h; y++) {
      for (let xx = 0; xx < w; xx++) {
        let s = 0;
        for (let j = -radius; j <= radius; j++) s += k[j + radius] * rows[base + clamp(y + j, h) * w + xx];
        out.data[base + y * w + xx] = s;
      }
    }
  }
  return out;
}
