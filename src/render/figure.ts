import sharp from 'sharp';
import { blankImage, checkImage, toChannels, type RgbImage } from '../data/image.js';
import { maxAbs, type Tensor } from '../tensor.js';
import { writeFileAtomic } from '../util/fs.js';
import type { Rgb } from './colormap.js';
import { label } from './text.js';

export { label, renderText, textBackend, type LabelOptions, type TextBackend, type TextMask } from './text.js';
export type { RgbImage } from '../data/image.js';
export { blueRed, colorAt, colormaps, heatmap, overlay, viridis, type Colormap, type Rgb } from './colormap.js';

// ---------------------------------------------------------------- projections

/**
 * The paper's display of a deconvnet projection: v -> 128 + 127 v / max|v|, one scale for all channels,
 * so zero is mid-grey, the strongest value 255 or 1 and the sign stays visible. [1,C,H,W] or [C,H,W], C = 1 or 3.
 */
export function projectionToImage(t: Tensor): RgbImage {
  const shape = t.shape.length === 4 && t.shape[0] === 1 ? t.shape.slice(1) : t.shape;
  if (shape.length !== 3 || (shape[0] !== 1 && shape[0] !== 3)) {
    throw new Error(`projectionToImage needs [1, C, H, W] or [C, H, W] with C = 1 or 3; got [${t.shape}]`);
  }
  const [C, H, W] = shape as [1 | 3, number, number];
  const m = maxAbs(t.data);
  const out = blankImage(W, H, C, 128);
  if (m === 0 || !Number.isFinite(m)) return out;
  for (let c = 0; c < C; c++) {
    for (let p = 0; p < H * W; p++) out.data[p * C + c] = Math.round(128 + (127 * t.data[c * H * W + p]) / m);
  }
  return out;
}

// ---------------------------------------------------------------- layout

export interface LayoutOptions {
  /** Pixels between neighbouring images. */
  gap?: number;
  /** Fill for gaps and for cells larger than their image; a number is grey. */
  background?: number | Rgb;
}

function backgroundRgb(bg: number | Rgb | undefined): Rgb {
  if (bg === undefined) return [255, 255, 255];
  return typeof bg === 'number' ? [bg, bg, bg] : bg;
}

/** Grey only when every part is grey and the background is grey, so the output stays as small as it can. */
function outputChannels(images: RgbImage[], bg: Rgb): 1 | 3 {
  const greyBg = bg[0] === bg[1] && bg[1] === bg[2];
  return greyBg && images.every((i) => i.channels === 1) ? 1 : 3;
}

function canvas(width: number, height: number, channels: 1 | 3, bg: Rgb): RgbImage {
  const out = blankImage(width, height, channels, bg[0]);
  if (channels === 3 && !(bg[0] === bg[1] && bg[1] === bg[2])) {
    for (let i = 0; i < width * height; i++) out.data.set(bg, 3 * i);
  }
  return out;
}

/** Copies src into dst with its top-left corner at (top, left), converting grey to RGB if dst is RGB. */
export function blit(dst: RgbImage, src: RgbImage, top: number, left: number): void {
  const s = toChannels(src, dst.channels);
  const rowBytes = s.width * s.channels;
  for (let y = 0; y < s.height; y++) {
    dst.data.set(s.data.subarray(y * rowBytes, (y + 1) * rowBytes), ((top + y) * dst.width + left) * dst.channels);
  }
}

function checkAll(images: RgbImage[], what: string): void {
  if (images.length === 0) throw new Error(`${what} of no images`);
  images.forEach((img, i) => checkImage(img, `${what} image ${i}`));
}

/**
 * Images in rows of `cols`, left to right then top to bottom. Cells are as large as the largest image;
 * smaller images are centred in theirs. Gaps go between cells, not around the edge.
 */
export function grid(images: RgbImage[], cols: number, opts: LayoutOptions = {}): RgbImage {
  checkAll(images, 'grid');
  if (!(Number.isInteger(cols) && cols > 0)) throw new Error(`grid: cols must be a positive integer, got ${cols}`);
  const gap = opts.gap ?? 2;
  const bg = backgroundRgb(opts.background);
  const cw = Math.max(...images.map((i) => i.width));
  const ch = Math.max(...images.map((i) => i.height));
  const ncols = Math.min(cols, images.length);
  const nrows = Math.ceil(images.length / cols);
  const out = canvas(ncols * cw + (ncols - 1) * gap, nrows * ch + (nrows - 1) * gap, outputChannels(images, bg), bg);
  images.forEach((img, i) => {
    const r = Math.floor(i / cols), c = i % cols;
    blit(out, img, r * (ch + gap) + Math.floor((ch - img.height) / 2), c * (cw + gap) + Math.floor((cw - img.width) / 2));
  });
  return out;
}

/** Side by side, left to right, vertically centred. */
export function hstack(images: RgbImage[], opts: LayoutOptions = {}): RgbImage {
  checkAll(images, 'hstack');
  const gap = opts.gap ?? 2;
  const bg = backgroundRgb(opts.background);
  const h = Math.max(...images.map((i) => i.height));
  const w = images.reduce((a, i) => a + i.width, 0) + gap * (images.length - 1);
  const out = canvas(w, h, outputChannels(images, bg), bg);
  let x = 0;
  for (const img of images) {
    blit(out, img, Math.floor((h - img.height) / 2), x);
    x += img.width + gap;
  }
  return out;
}

/** One above the other, top to bottom, horizontally centred. */
export function vstack(images: RgbImage[], opts: LayoutOptions = {}): RgbImage {
  checkAll(images, 'vstack');
  const gap = opts.gap ?? 2;
  const bg = backgroundRgb(opts.background);
  const w = Math.max(...images.map((i) => i.width));
  const h = images.reduce((a, i) => a + i.height, 0) + gap * (images.length - 1);
  const out = canvas(w, h, outputChannels(images, bg), bg);
  let y = 0;
  for (const img of images) {
    blit(out, img, y, Math.floor((w - img.width) / 2));
    y += img.height + gap;
  }
  return out;
}

/** Nearest-neighbour enlargement by an integer factor: keeps a 64 px projection's pixels crisp when shown large. */
export function upscale(img: RgbImage, factor: number): RgbImage {
  checkImage(img);
  if (!(Number.isInteger(factor) && factor >= 1)) throw new Error(`upscale: factor must be an integer >= 1, got ${factor}`);
  if (factor === 1) return img;
  const C = img.channels;
  const out = blankImage(img.width * factor, img.height * factor, C);
  const row = new Uint8Array(out.width * C);
  for (let y = 0; y < img.height; y++) {
    for (let x = 0; x < img.width; x++) {
      for (let k = 0; k < factor; k++) row.set(img.data.subarray((y * img.width + x) * C, (y * img.width + x + 1) * C), (x * factor + k) * C);
    }
    for (let k = 0; k < factor; k++) out.data.set(row, (y * factor + k) * row.length);
  }
  return out;
}

/** The integer enlargement that brings an image's long side to about `target` pixels (never shrinks). */
export function displayFactor(img: RgbImage, target = 256): number {
  return Math.max(1, Math.round(target / Math.max(img.width, img.height)));
}

// ---------------------------------------------------------------- figures

export const PROJECTION_LEGEND = 'projection scaled by its own max |value|; zero = mid-grey';

/**
 * Input on the left, its projection on the right, each enlarged to about 256 px and titled,
 * with an optional caption above and the display legend below.
 */
export async function sideBySide(input: RgbImage, projection: RgbImage, caption?: string): Promise<RgbImage> {
  const fontSize = 14;
  const panels = await Promise.all([
    label(upscale(input, displayFactor(input)), 'input', { position: 'top', fontSize }),
    label(upscale(projection, displayFactor(projection)), 'projection', { position: 'top', fontSize }),
  ]);
  let fig = hstack(panels, { gap: 12 });
  if (caption) fig = await label(fig, caption, { position: 'top', fontSize: 16 });
  fig = await label(fig, PROJECTION_LEGEND, { position: 'bottom', fontSize: 13, color: [70, 70, 70] });
  return pad(fig, 8, [255, 255, 255]);
}

function pad(img: RgbImage, by: number, bg: Rgb): RgbImage {
  const out = canvas(img.width + 2 * by, img.height + 2 * by, outputChannels([img], bg), bg);
  blit(out, img, by, by);
  return out;
}

// ---------------------------------------------------------------- PNG

export async function encodePng(img: RgbImage): Promise<Buffer> {
  checkImage(img, 'PNG image');
  const { width, height, channels, data } = img;
  const pipeline = sharp(Buffer.from(data.buffer, data.byteOffset, data.byteLength), { raw: { width, height, channels } });
  // sharp writes sRGB unless told otherwise, which would triple the size of a grey figure.
  return (channels === 1 ? pipeline.toColourspace('b-w') : pipeline).png().toBuffer();
}

/** Encodes fully before writing, and writes through a rename: a failure leaves no file, not a broken one. */
export async function writePng(path: string, img: RgbImage): Promise<void> {
  writeFileAtomic(path, await encodePng(img));
}
