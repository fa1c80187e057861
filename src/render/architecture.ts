import type { RgbImage } from '../data/image.js';
import type { Model } from '../model/layers.js';
import type { ConvLayerReport } from '../analysis/filters.js';
import { grid, label, upscale, vstack, hstack } from './figure.js';

/**
 * Each filter of a conv layer as a small image, contrast-stretched on its own (min -> 0, max -> 255) as in the
 * paper's filter figures. Three input channels show as colour, others as the mean over channels in grey.
 */
export function filterImages(model: Model, layer: string): RgbImage[] {
  const w = model.weights.get(`${layer}.weight`);
  if (!w || w.shape.length !== 4) throw new Error(`layer '${layer}' has no conv filters`);
  const [out, inC, kh, kw] = w.shape;
  const colour = inC === 3;
  const images: RgbImage[] = [];
  for (let f = 0; f < out; f++) {
    const base = f * inC * kh * kw;
    const px = (c: number, p: number) => w.data[base + c * kh * kw + p];
    const values = new Float32Array((colour ? 3 : 1) * kh * kw);
    for (let p = 0; p < kh * kw; p++) {
      if (colour) for (let c = 0; c < 3; c++) values[p * 3 + c] = px(c, p);
      else {
        let s = 0;
        for (let c = 0; c < inC; c++) s += px(c, p);
        values[p] = s / inC;
      }
    }
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of values) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    const span = hi - lo || 1;
    images.push({ width: kw, height: kh, channels: colour ? 3 : 1, data: Uint8Array.from(values, (v) => Math.round((255 * (v - lo)) / span)) });
  }
  return images;
}

/** conv1's filters as a grid, each contrast-stretched on its own and enlarged to about `cell` pixels. */
export function filterGrid(filters: RgbImage[], cell = 44, cols = 8): RgbImage {
  const factor = Math.max(1, Math.round(cell / Math.max(filters[0].width, filters[0].height)));
  return grid(filters.map((f) => upscale(f, factor)), cols, { gap: 3, background: [255, 255, 255] });
}

export interface ArchitecturePanel {
  title: string;
  filters: RgbImage[];
  rows: ConvLayerReport[];
  /** Extra panels below the filters, e.g. layer-2 feature projections. */
  extra?: RgbImage[];
}

function summary(rows: ConvLayerReport[]): string {
  const first = rows[0];
  const dead = rows.map((r) => `${r.conv} ${r.dead}/${r.features}`).join(', ');
  return `dead maps: ${dead}. ${first.conv} energy above half Nyquist: ${(100 * first.highFrequency).toFixed(1)}%`;
}

/** One column per architecture: title, conv1 filters, dead-map and frequency summary. */
export async function architectureFigure(panels: ArchitecturePanel[]): Promise<RgbImage> {
  const columns: RgbImage[] = [];
  for (const p of panels) {
    let col = await label(filterGrid(p.filters), `${p.title}`, { position: 'top', fontSize: 15 });
    col = await label(col, summary(p.rows), { position: 'bottom', fontSize: 12 });
    if (p.extra?.length) col = vstack([col, ...p.extra], { gap: 10, background: [255, 255, 255] });
    columns.push(col);
  }
  const fig = hstack(columns, { gap: 28, background: [255, 255, 255] });
  return label(fig, 'conv1 filters, each contrast-stretched on its own; dead = active on < 1% of images', { position: 'bottom', fontSize: 12, color: [70, 70, 70] });
}
