// One dataset item fitted to the model input (short side resized, centre crop), with the training augmentation
// (random crop from a margin, horizontal flip) applied to the image and to its object box alike.
import type { Rect } from '../util/rect.js';
import type { Dataset } from './dataset.js';
import { blankImage, fitImage, toChannels, type RgbImage } from './image.js';

export interface Augment {
  /**
   * Extra pixels for a random crop. 'scale' (the paper's: 256 -> random 224): fit the image to (H+n) x (W+n), then
   * crop H x W at a random offset. 'pad' (CIFAR/MNIST style): fit to H x W, pad with black to (H+n) x (W+n), crop.
   */
  randomCrop?: number;
  cropMode?: 'scale' | 'pad';
  /** Mirror left-right with probability 1/2. */
  flip?: boolean;
}

export interface CropParams {
  dy: number;
  dx: number;
  flip: boolean;
}

export interface FittedItem {
  /** [H, W] of the model input, C channels. */
  image: RgbImage;
  label: number;
  name: string;
  box?: Rect;
}

export type Loaded = ({ ok: true } & FittedItem) | { ok: false; reason: string };

export function shapeOf(input: readonly number[]): [1 | 3, number, number] {
  const [C, H, W] = input;
  if (input.length !== 3 || (C !== 1 && C !== 3) || !(Number.isInteger(H) && H > 0 && Number.isInteger(W) && W > 0)) {
    throw new Error(`input shape must be [C, H, W] with C = 1 or 3; got [${input}]`);
  }
  return [C, H, W];
}

/** Where a box lands after fitImage's resize and centre crop to [th, tw]: the same geometry as fitImage. */
function fitBox(box: Rect, h: number, w: number, th: number, tw: number): Rect {
  const scale = Math.max(th / h, tw / w);
  const rh = Math.max(th, Math.round(h * scale));
  const rw = Math.max(tw, Math.round(w * scale));
  const top = Math.round((rh - th) / 2);
  const left = Math.round((rw - tw) / 2);
  const sy = rh / h, sx = rw / w;
  return [box[0] * sy - top, box[1] * sx - left, box[2] * sy - top, box[3] * sx - left];
}

/** Offsets, rounds outward to whole pixels, clamps to the H x W input and mirrors if flipped. */
function placeBox(b: Rect, oy: number, ox: number, H: number, W: number, flip: boolean): Rect {
  const cy = (v: number) => Math.min(H, Math.max(0, v));
  const cx = (v: number) => Math.min(W, Math.max(0, v));
  const y0 = cy(Math.floor(b[0] - oy + 1e-9)), y1 = cy(Math.ceil(b[2] - oy - 1e-9));
  const x0 = cx(Math.floor(b[1] - ox + 1e-9)), x1 = cx(Math.ceil(b[3] - ox - 1e-9));
  return flip ? [y0, W - x1, y1, W - x0] : [y0, x0, y1, x1];
}

/** The H x W window of src at (oy, ox), black outside src, optionally mirrored. */
function cropWindow(src: RgbImage, oy: number, ox: number, H: number, W: number, flip: boolean): RgbImage {
  const C = src.channels;
  const out = blankImage(W, H, C);
  for (let y = 0; y < H; y++) {
    const sy = y + oy;
    if (sy < 0 || sy >= src.height) continue;
    for (let x = 0; x < W; x++) {
      const sx = (flip ? W - 1 - x : x) + ox;
      if (sx < 0 || sx >= src.width) continue;
      for (let c = 0; c < C; c++) out.data[(y * W + x) * C + c] = src.data[(sy * src.width + sx) * C + c];
    }
  }
  return out;
}

/**
 * An item fitted to the model input: what the network sees, before normalisation (top-9 patches, occlusion).
 * With `augment.randomCrop` but no `crop`, the crop is the centre one: the paper's test-time view.
 */
export async function fittedItem(ds: Dataset, index: number, input: readonly number[], augment?: Augment, crop?: CropParams): Promise<FittedItem> {
  const [C, H, W] = shapeOf(input);
  const item = await ds.item(index);
  const { image: img, box } = item;
  const pad = augment?.randomCrop ?? 0;
  const flip = crop?.flip ?? false;
  const dy = crop?.dy ?? Math.floor(pad / 2), dx = crop?.dx ?? Math.floor(pad / 2);
  let image: RgbImage;
  let outBox: Rect | undefined;
  if (pad > 0 && (augment?.cropMode ?? 'scale') === 'scale') {
    image = cropWindow(fitImage(img, [H + pad, W + pad], C), dy, dx, H, W, flip);
    if (box) outBox = placeBox(fitBox(box, img.height, img.width, H + pad, W + pad), dy, dx, H, W, flip);
  } else {
    // 'pad': the fitted image sits at (pad/2, pad/2) on a black canvas, so the crop's offset into it is d - pad/2.
    const oy = dy - Math.floor(pad / 2), ox = dx - Math.floor(pad / 2);
    const fitted = fitImage(img, [H, W], C);
    image = oy === 0 && ox === 0 && !flip ? fitted : cropWindow(fitted, oy, ox, H, W, flip);
    if (box) outBox = placeBox(fitBox(box, img.height, img.width, H, W), oy, ox, H, W, flip);
  }
  return { image: toChannels(image, C), label: item.label, name: item.name, box: outBox };
}
