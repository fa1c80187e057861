// Table 1's picture: per image the original, then each part and the first draw of each random row, occluded and outlined.
import { occludeInto, type CorrespondenceImage, type CorrespondenceResult } from '../analysis/correspondence.js';
import { inputToImage, toChannels, type RgbImage } from '../data/image.js';
import type { Model } from '../model/layers.js';
import { tensor, type Tensor } from '../tensor.js';
import type { Rect } from '../util/rect.js';
import { displayFactor, grid, label, upscale } from './figure.js';

function outlined(img: RgbImage, rect: Rect, factor: number): RgbImage {
  const out = { ...img, data: img.data.slice() };
  const [y0, x0, y1, x1] = rect.map((v) => v * factor);
  const set = (y: number, x: number) => {
    if (y < 0 || x < 0 || y >= out.height || x >= out.width) return;
    out.data.set([255, 0, 255], (y * out.width + x) * 3);
  };
  for (let x = x0 - 1; x <= x1; x++) [y0 - 1, y1].forEach((y) => set(y, x));
  for (let y = y0 - 1; y <= y1; y++) [x0 - 1, x1].forEach((x) => set(y, x));
  return out;
}

/** A row per image: the original, then each part and the first draw of each random row occluded, outlined in magenta. */
export async function correspondenceFigure(images: CorrespondenceImage[], r: CorrespondenceResult, model: Pick<Model, 'input' | 'preprocess'>): Promise<RgbImage> {
  const cells: RgbImage[] = [];
  const show = (t: Tensor) => {
    const img = toChannels(inputToImage(t, model.preprocess), 3);
    const factor = displayFactor(img, 128);
    return { img: upscale(img, factor), factor };
  };
  for (const [i, im] of images.entries()) {
    cells.push(await label(show(im.input).img, im.name, { fontSize: 11 }));
    for (const row of r.rows) {
      const rect = row.rects[0][i];
      const occluded = tensor([...im.input.shape]);
      occludeInto(im.input.data, im.input.shape.slice(1), rect, occluded.data, 0);
      const { img, factor } = show(occluded);
      cells.push(await label(outlined(img, rect, factor), row.kind === 'random' ? `${row.name}, draw 1` : row.name, { fontSize: 11 }));
    }
  }
  return grid(cells, r.rows.length + 1, { gap: 6, background: [255, 255, 255] });
}
