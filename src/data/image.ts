import { readFile } from 'node:fs/promises';
import sharp, { type Metadata } from 'sharp';
import { errorLine } from '../util/errors.js';
import type { Model, Preprocess } from '../model/layers.js';
import { tensor, type Tensor } from '../tensor.js';

/** An 8-bit image, rows top to bottom, channels interleaved (HWC): grey (1) or RGB (3). */
export interface RgbImage {
  width: number;
  height: number;
  channels: 1 | 3;
  data: Uint8Array;
}

/** Transparent pixels are composited on white: icons and cut-outs are usually drawn for a white page. */
export const ALPHA_BACKGROUND = { r: 255, g: 255, b: 255 } as const;

export function checkImage(img: RgbImage, what = 'image'): void {
  const { width, height, channels, data } = img;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new Error(`${what} has size ${width}x${height}; width and height must be positive integers`);
  }
  if (channels !== 1 && channels !== 3) throw new Error(`${what} has ${channels} channels; expected 1 or 3`);
  if (data.length !== width * height * channels) {
    throw new Error(`${what} has ${data.length} bytes; ${width}x${height}x${channels} needs ${width * height * channels}`);
  }
}

export function blankImage(width: number, height: number, channels: 1 | 3, fill = 0): RgbImage {
  return { width, height, channels, data: new Uint8Array(width * height * channels).fill(fill) };
}

// ---------------------------------------------------------------- decoding

function readFailure(path: string, e: unknown): Error {
  const code = (e as NodeJS.ErrnoException).code;
  const reason =
    code === 'ENOENT' ? 'no such file' :
    code === 'EISDIR' ? 'is a directory' :
    code === 'EACCES' ? 'permission denied' :
    errorLine(e);
  return new Error(`cannot read ${path}: ${reason}`);
}


/**
 * Decodes JPEG, PNG, WebP (and whatever else the bundled libvips reads) to 8-bit grey or RGB.
 * EXIF orientation is applied, alpha is flattened on white, 16-bit and CMYK inputs become 8-bit sRGB,
 * and grey sources stay one channel (fitImage converts when a model wants RGB).
 */
export async function decodeImage(path: string): Promise<RgbImage> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch (e) {
    throw readFailure(path, e);
  }
  return decodeImageBuffer(buf, path);
}

/**
 * The most pixels an image may declare: 50 megapixels (a large camera photo; 150 MB decoded). The size is read from the
 * header before anything is decoded, so an 800 KB PNG that declares 16383x16383 costs nothing (a decompression bomb).
 */
export const MAX_IMAGE_PIXELS = 50_000_000;

export async function decodeImageBuffer(buf: Uint8Array, what = 'image data', maxPixels = MAX_IMAGE_PIXELS): Promise<RgbImage> {
  // failOn 'warning' rejects truncated files instead of returning a half-grey image.
  const pipeline = sharp(buf, { failOn: 'warning', autoOrient: true, limitInputPixels: false });
  let meta: Metadata;
  try {
    meta = await pipeline.metadata();
  } catch (e) {
    throw new Error(`cannot decode image ${what}: ${errorLine(e)}`);
  }
  const pixels = (meta.width ?? 0) * (meta.height ?? 0);
  if (pixels > maxPixels) throw new Error(`image ${what} is ${meta.width}x${meta.height} (${(pixels / 1e6).toFixed(1)} megapixels); the limit is ${(maxPixels / 1e6).toFixed(0)} megapixels`);
  try {
    const grey = meta.space === 'b-w' || meta.space === 'grey16';
    if (meta.hasAlpha) pipeline.flatten({ background: ALPHA_BACKGROUND });
    const { data, info } = await pipeline
      .toColourspace(grey ? 'b-w' : 'srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 1 && info.channels !== 3) throw new Error(`decoder gave ${info.channels} channels`);
    return { width: info.width, height: info.height, channels: info.channels, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  } catch (e) {
    throw new Error(`cannot decode image ${what}: ${errorLine(e)}`);
  }
}

// ---------------------------------------------------------------- colour

/** ITU-R 601 luma in PIL's fixed point, so grey inputs match a PIL/torchvision pipeline. */
function luma(r: number, g: number, b: number): number {
  return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;
}

export function toChannels(img: RgbImage, channels: 1 | 3): RgbImage {
  if (img.channels === channels) return img;
  const n = img.width * img.height;
  const out = blankImage(img.width, img.height, channels);
  const src = img.data;
  if (channels === 3) {
    for (let i = 0; i < n; i++) out.data[3 * i] = out.data[3 * i + 1] = out.data[3 * i + 2] = src[i];
  } else {
    for (let i = 0; i < n; i++) out.data[i] = luma(src[3 * i], src[3 * i + 1], src[3 * i + 2]);
  }
  return out;
}

// ---------------------------------------------------------------- resampling

interface Taps {
  start: Int32Array;
  count: Int32Array;
  /** maxTaps weights per output sample, normalised to sum 1. */
  weights: Float64Array;
  maxTaps: number;
}

/**
 * Triangle (bilinear) filter whose support widens by 1/scale when shrinking, as PIL's BILINEAR and
 * torchvision's antialiased resize do: plain 4-tap bilinear would alias badly when a photo is shrunk 10x.
 * `first` is the index of the first wanted sample in the resized grid, which lets a crop skip the rest.
 */
function taps(inSize: number, scale: number, first: number, count: number): Taps {
  const filterScale = Math.max(1, 1 / scale);
  const support = filterScale;
  const maxTaps = Math.ceil(support) * 2 + 1;
  const t: Taps = { start: new Int32Array(count), count: new Int32Array(count), weights: new Float64Array(count * maxTaps), maxTaps };
  for (let j = 0; j < count; j++) {
    const centre = (first + j + 0.5) / scale;
    const lo = Math.max(0, Math.floor(centre - support + 0.5));
    const hi = Math.min(inSize, Math.floor(centre + support + 0.5));
    let sum = 0;
    for (let i = lo; i < hi; i++) {
      const w = Math.max(0, 1 - Math.abs((i + 0.5 - centre) / filterScale));
      t.weights[j * maxTaps + (i - lo)] = w;
      sum += w;
    }
    // Clamping at the border drops taps; renormalising keeps flat regions flat up to the edge.
    for (let i = lo; i < hi; i++) t.weights[j * maxTaps + (i - lo)] /= sum || 1;
    t.start[j] = lo;
    t.count[j] = hi - lo;
  }
  return t;
}

/** Resamples img to the resized grid rh x rw and returns the window [top, top+h) x [left, left+w) of it. */
function resampleWindow(img: RgbImage, rh: number, rw: number, top: number, left: number, h: number, w: number): RgbImage {
  const C = img.channels;
  const tx = taps(img.width, rw / img.width, left, w);
  const ty = taps(img.height, rh / img.height, top, h);
  const mid = new Float64Array(img.height * w * C);
  for (let y = 0; y < img.height; y++) {
    const row = y * img.width;
    for (let x = 0; x < w; x++) {
      const s = tx.start[x], n = tx.count[x], wo = x * tx.maxTaps;
      for (let c = 0; c < C; c++) {
        let acc = 0;
        for (let k = 0; k < n; k++) acc += tx.weights[wo + k] * img.data[(row + s + k) * C + c];
        mid[(y * w + x) * C + c] = acc;
      }
    }
  }
  const out = blankImage(w, h, C);
  for (let y = 0; y < h; y++) {
    const s = ty.start[y], n = ty.count[y], wo = y * ty.maxTaps;
    for (let i = 0; i < w * C; i++) {
      let acc = 0;
      for (let k = 0; k < n; k++) acc += ty.weights[wo + k] * mid[(s + k) * w * C + i];
      out.data[y * w * C + i] = Math.min(255, Math.max(0, Math.round(acc)));
    }
  }
  return out;
}

/** Antialiased bilinear resize to exactly h x w (aspect ratio not kept); e.g. to lay an occlusion map over its image. */
export function resizeImage(img: RgbImage, size: [number, number]): RgbImage {
  checkImage(img);
  const [h, w] = size;
  if (h === img.height && w === img.width) return img;
  return resampleWindow(img, h, w, 0, 0, h, w);
}

/**
 * The paper's preprocessing: scale so the image covers size [h, w] (the short side becomes the target),
 * antialiased bilinear, then take the centre crop; grey and RGB are converted to `channels`.
 */
export function fitImage(img: RgbImage, size: [number, number], channels: 1 | 3): RgbImage {
  checkImage(img);
  const [h, w] = size;
  if (!(h > 0 && w > 0 && Number.isInteger(h) && Number.isInteger(w))) throw new Error(`fitImage: target size [${size}] must be positive integers`);
  const scale = Math.max(h / img.height, w / img.width);
  const rh = Math.max(h, Math.round(img.height * scale));
  const rw = Math.max(w, Math.round(img.width * scale));
  // Same rounding as torchvision's CenterCrop, so crops agree with PyTorch pipelines.
  const top = Math.round((rh - h) / 2);
  const left = Math.round((rw - w) / 2);
  // Converting to grey first makes the resample a third of the work.
  const src = channels === 1 ? toChannels(img, 1) : img;
  const fitted = rh === img.height && rw === img.width && top === 0 && left === 0 ? src : resampleWindow(src, rh, rw, top, left, h, w);
  return toChannels(fitted, channels);
}

// ---------------------------------------------------------------- network input

function meanImageOf(p: Preprocess, C: number, H: number, W: number): Float32Array | undefined {
  const m = p.meanImage;
  if (!m) return undefined;
  const shape = m.shape.length === 4 && m.shape[0] === 1 ? m.shape.slice(1) : m.shape;
  if (shape.length !== 3 || shape[0] !== C || shape[1] !== H || shape[2] !== W) {
    throw new Error(`mean image has shape [${m.shape}]; this input needs [${C}, ${H}, ${W}]`);
  }
  return m.data;
}

/** Per-channel values, accepting one value for all channels. */
function perChannel(values: number[], C: number, what: string): number[] {
  if (values.length === C) return values;
  if (values.length === 1) return new Array<number>(C).fill(values[0]);
  throw new Error(`preprocess ${what} has ${values.length} values for a ${C}-channel image`);
}

/** The affine map between pixels (0..255) and the network input: input = (pixel - mean) / std, mean per value. */
export function inputFrame(preprocess: Preprocess, shape: readonly [number, number, number]): { mean: Float32Array; std: number[] } {
  const [C, H, W] = shape;
  const std = perChannel(preprocess.std, C, 'std');
  const meanImage = meanImageOf(preprocess, C, H, W);
  if (meanImage) return { mean: meanImage, std };
  const channel = perChannel(preprocess.mean, C, 'mean');
  const mean = new Float32Array(C * H * W);
  for (let c = 0; c < C; c++) mean.fill(channel[c], c * H * W, (c + 1) * H * W);
  return { mean, std };
}

/**
 * (u8 - mean) / std into [1, C, H, W]. Arithmetic is rounded to float32 at each step, as PyTorch does on
 * float32 tensors, so inputs match reference tensors bit for bit; a mean image replaces the per-channel mean.
 */
export function imageToInput(img: RgbImage, preprocess: Preprocess): Tensor {
  checkImage(img);
  const { width: W, height: H, channels: C } = img;
  const mean = perChannel(preprocess.mean, C, 'mean').map(Math.fround);
  const std = perChannel(preprocess.std, C, 'std').map(Math.fround);
  const meanImage = meanImageOf(preprocess, C, H, W);
  const out = tensor([1, C, H, W]);
  for (let c = 0; c < C; c++) {
    for (let p = 0; p < H * W; p++) {
      const i = c * H * W + p;
      const m = meanImage ? meanImage[i] : mean[c];
      out.data[i] = Math.fround(Math.fround(img.data[p * C + c] - m) / std[c]);
    }
  }
  return out;
}

/** The inverse of imageToInput, rounded and clamped to 0..255: for showing an input (or an edited one). */
export function inputToImage(t: Tensor, preprocess: Preprocess): RgbImage {
  const shape = t.shape.length === 4 && t.shape[0] === 1 ? t.shape.slice(1) : t.shape;
  if (shape.length !== 3 || (shape[0] !== 1 && shape[0] !== 3)) {
    throw new Error(`inputToImage needs [1, C, H, W] or [C, H, W] with C = 1 or 3; got [${t.shape}]`);
  }
  const [C, H, W] = shape as [1 | 3, number, number];
  const mean = perChannel(preprocess.mean, C, 'mean');
  const std = perChannel(preprocess.std, C, 'std');
  const meanImage = meanImageOf(preprocess, C, H, W);
  const out = blankImage(W, H, C);
  for (let c = 0; c < C; c++) {
    for (let p = 0; p < H * W; p++) {
      const i = c * H * W + p;
      const u = t.data[i] * std[c] + (meanImage ? meanImage[i] : mean[c]);
      out.data[p * C + c] = Math.min(255, Math.max(0, Math.round(u)));
    }
  }
  return out;
}

/** Decode, fit to the model's input size and channels, normalise: one [1, C, H, W] network input. */
export async function loadInput(path: string, model: Pick<Model, 'input' | 'preprocess'>): Promise<Tensor> {
  const [C, H, W] = model.input;
  if (C !== 1 && C !== 3) throw new Error(`model input has ${C} channels; images give 1 or 3`);
  const img = await decodeImage(path);
  return imageToInput(fitImage(img, [H, W], C), model.preprocess);
}
