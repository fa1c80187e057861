// Pieces the figure layouts share: titled panels, text as an image, maps over a greyed image, compact numbers.
import { blankImage, toChannels, type RgbImage } from '../data/image.js';
import { overlay } from './colormap.js';
import { label, renderText } from './figure.js';

export const FONT = 13;
/** Opacity of a map drawn over its image. */
const ALPHA = 0.7;

export async function textImage(text: string, fontSize = FONT): Promise<RgbImage> {
  const mask = await renderText(text, { fontSize });
  const img = blankImage(Math.max(1, mask.width), Math.max(1, mask.height), 3, 255);
  for (let i = 0; i < mask.width * mask.height; i++) {
    const v = 255 - mask.alpha[i];
    img.data.set([v, v, v], 3 * i);
  }
  return img;
}

export async function titled(img: RgbImage, title: string, note?: string): Promise<RgbImage> {
  const top = await label(img, title, { position: 'top', fontSize: FONT + 1 });
  return note ? label(top, note, { position: 'bottom', fontSize: FONT - 1, color: [70, 70, 70] }) : top;
}

export const fmt = (v: number) =>
  Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v === 0 || Math.abs(v) >= 1e-3 ? v.toPrecision(3) : v.toExponential(2);

/** The image in grey under a map: colour in the photo would read as colour of the map. */
export function under(image: RgbImage, heat: RgbImage): RgbImage {
  return overlay(toChannels(image, 1), heat, ALPHA);
}

