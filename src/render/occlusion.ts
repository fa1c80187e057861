// Figures of the occlusion experiment (paper Fig. 7): maps over the image, the projection strip, the combined row.
import { blankImage, toChannels, type RgbImage } from '../data/image.js';
import type { AttributionMap, OcclusionGrid, PaperMaps } from '../analysis/occlusion.js';
import type { Rect } from '../util/rect.js';
import { blueRed, heatmap, viridis, type Colormap, type Rgb } from './colormap.js';
import { FONT, fmt, textImage, titled, under } from './panel.js';
import { displayFactor, hstack, label, projectionToImage, renderText, upscale, vstack } from './figure.js';

const OCCLUDER_OUTLINE: Rgb = [255, 255, 255];

/** Tableau 10: distinct hues that stay apart for colour-blind viewers; classes past the tenth share OTHER. */
const PALETTE: Rgb[] = ['4e79a7', 'f28e2b', 'e15759', '76b7b2', '59a14f', 'edc948', 'b07aa1', 'ff9da7', '9c755f', 'bab0ac'].map((s) => {
  const n = parseInt(s, 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
});
const OTHER: Rgb = [60, 60, 60];

/** For each pixel along an axis, the grid index whose occluder centre is nearest (the map shown at full size). */
function nearestCentre(starts: number[], window: number, size: number): Int32Array {
  const centres = starts.map((s) => s + Math.min(window, size - s) / 2);
  return Int32Array.from({ length: size }, (_, p) => {
    let best = 0;
    for (let i = 1; i < centres.length; i++) if (Math.abs(centres[i] - (p + 0.5)) < Math.abs(centres[best] - (p + 0.5))) best = i;
    return best;
  });
}

/** A [rows, cols] map spread over the H x W image: each pixel takes the value of the occluder centred nearest. */
export function mapToPixels(values: Float32Array, g: OcclusionGrid, height: number, width: number): Float32Array {
  const ry = nearestCentre(g.ys, g.window[0], height);
  const rx = nearestCentre(g.xs, g.window[1], width);
  const out = new Float32Array(height * width);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) out[y * width + x] = values[ry[y] * g.xs.length + rx[x]];
  return out;
}

/** The image (as RGB) with a box drawn around an occluder; box in input pixels, the image enlarged by `scale`. */
function outline(img: RgbImage, box: Rect, scale: number, color: Rgb): RgbImage {
  const rgb = toChannels(img, 3);
  const out = { ...rgb, data: rgb.data.slice() };
  const [y0, x0] = [box[0] * scale, box[1] * scale];
  const [y1, x1] = [Math.min(img.height, box[2] * scale) - 1, Math.min(img.width, box[3] * scale) - 1];
  const put = (y: number, x: number) => out.data.set(color, (y * img.width + x) * 3);
  for (let x = x0; x <= x1; x++) {
    put(y0, x);
    put(y1, x);
  }
  for (let y = y0; y <= y1; y++) {
    put(y, x0);
    put(y, x1);
  }
  return out;
}

/** A map as a colour overlay on the (enlarged) image, with its colour range in the note. */
async function mapPanel(image: RgbImage, values: Float32Array, g: OcclusionGrid, cmap: Colormap, title: string, unit: string): Promise<RgbImage> {
  const pixels = mapToPixels(values, g, image.height, image.width);
  const heat = heatmap(pixels, image.height, image.width, cmap);
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) [lo, hi] = [Math.min(lo, v), Math.max(hi, v)];
  const range = cmap.kind === 'diverging' ? `blue ${fmt(-Math.max(Math.abs(lo), Math.abs(hi)))} .. red ${fmt(Math.max(Math.abs(lo), Math.abs(hi)))}` : `dark ${fmt(lo)} .. yellow ${fmt(hi)}`;
  return titled(upscale(under(image, heat), displayFactor(image)), title, `${unit}: ${range}`);
}

/** Class names for the legend: the model's names where it has them. */
export type ClassNamer = (index: number) => string;

/** (e): the most probable class per position as colours, with a legend of the classes by share of positions. */
async function classPanel(image: RgbImage, m: PaperMaps, name: ClassNamer): Promise<RgbImage> {
  const counts = new Map<number, number>();
  for (const c of m.topClass.data) counts.set(c, (counts.get(c) ?? 0) + 1);
  const ranked = [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0]);
  const colour = new Map(ranked.slice(0, PALETTE.length).map(([c], i) => [c, PALETTE[i]]));
  const pixels = mapToPixels(m.topClass.data, m.grid, image.height, image.width);
  const heat = blankImage(image.width, image.height, 3);
  pixels.forEach((c, i) => heat.data.set(colour.get(c) ?? OTHER, 3 * i));
  const panel = await titled(upscale(under(image, heat), displayFactor(image)), '(e) most probable class');
  const total = m.topClass.data.length;
  const rows: RgbImage[] = [];
  for (const [c, n] of ranked.slice(0, PALETTE.length)) {
    const swatch = blankImage(FONT, FONT, 3);
    for (let i = 0; i < FONT * FONT; i++) swatch.data.set(colour.get(c)!, 3 * i);
    const share = (100 * n) / total;
    const text = `${name(c)}${c === m.target ? ' (target)' : ''}: ${share < 1 ? '<1' : share.toFixed(0)}% of positions`;
    rows.push(hstack([swatch, await textImage(text)], { gap: 6, background: 255 }));
  }
  if (ranked.length > PALETTE.length) {
    const swatch = blankImage(FONT, FONT, 3, OTHER[0]);
    rows.push(hstack([swatch, await textImage(`${ranked.length - PALETTE.length} other classes`)], { gap: 6, background: 255 }));
  }
  const legend = vstack(rows, { gap: 3, background: 255 });
  const padded = hstack([blankImage(4, 1, 3, 255), legend], { gap: 0, background: 255 });
  return vstack([panel, padded], { gap: 6, background: 255 });
}

/** (c): the projections, unoccluded first, each with its occluder outlined. */
async function projectionPanels(image: RgbImage, m: PaperMaps): Promise<RgbImage[]> {
  const f = displayFactor(image);
  return Promise.all(
    m.projections.map(async (p) => {
      let img = upscale(projectionToImage(p.projection), f);
      if (p.position) img = outline(img, m.grid.boxes[p.position[0] * m.grid.xs.length + p.position[1]], f, [255, 0, 0]);
      const title = p.position ? `occluder at (${p.position[0]},${p.position[1]})` : 'unoccluded';
      return titled(img, title, `unit (${p.unit.y},${p.unit.x}) = ${fmt(p.value)}`);
    }),
  );
}

/** Pads panels at the bottom to one height, so that their titles line up in a row. */
function topAligned(panels: RgbImage[]): RgbImage[] {
  const h = Math.max(...panels.map((p) => p.height));
  return panels.map((p) => (p.height === h ? p : vstack([p, blankImage(p.width, h - p.height, 3, 255)], { gap: 0, background: 255 })));
}

function describeGrid(g: OcclusionGrid, fill: PaperMaps['fill']): string {
  return `${g.window[0]}x${g.window[1]} square, stride ${g.stride[0]}, fill ${fill}, ${g.ys.length}x${g.xs.length} positions`;
}

/** Every figure of a paper-mode result, by file stem: the four maps, the projection strip and the Fig. 7 row. */
export async function paperFigures(image: RgbImage, m: PaperMaps, modelName: string, name: ClassNamer): Promise<Map<string, RgbImage>> {
  const figures = new Map<string, RgbImage>();
  const b = await mapPanel(image, m.activation.data, m.grid, viridis, `(b) total activation, ${m.layer} map ${m.feature}`, 'sum');
  const d = await mapPanel(image, m.probability.data, m.grid, viridis, `(d) p(${name(m.target)})`, 'p');
  const e = await classPanel(image, m, name);
  const strip = await projectionPanels(image, m);
  const caption = `${modelName}: ${describeGrid(m.grid, m.fill)}`;
  figures.set('activation', b);
  figures.set('probability', d);
  figures.set('top_class', e);
  figures.set('projections', await label(hstack(strip, { gap: 10, background: 255 }), `(c) deconvnet projections of ${m.layer} map ${m.feature}'s top activation; each scaled by its own max |value|`, { position: 'top', fontSize: FONT + 1 }));
  // The occluder drawn where it lowers p(target) most, as the paper marks its squares on the image.
  const worst = m.probability.data.reduce((best, v, i, a) => (v < a[best] ? i : best), 0);
  const a = await titled(outline(upscale(image, displayFactor(image)), m.grid.boxes[worst], displayFactor(image), OCCLUDER_OUTLINE), '(a) input', `white box: occluder with the lowest p(${name(m.target)})`);
  const unoccluded = m.projections[0];
  const c = await titled(upscale(projectionToImage(unoccluded.projection), displayFactor(image)), `(c) projection, map ${m.feature}`, `unit (${unoccluded.unit.y},${unoccluded.unit.x}) = ${fmt(unoccluded.value)}`);
  const row = hstack(topAligned([a, b, c, d, e]), { gap: 10, background: 255 });
  figures.set('figure', await label(row, caption, { position: 'top', fontSize: FONT + 2 }));
  return figures;
}

/** The attribution (channel 0; all channels are equal) as a diverging overlay. */
export async function attributionFigure(image: RgbImage, m: AttributionMap, modelName: string, name: ClassNamer): Promise<RgbImage> {
  const [, , h, w] = m.attribution.shape;
  const values = m.attribution.data.subarray(0, h * w);
  const heat = heatmap(values, h, w, blueRed);
  let peak = 0;
  for (const v of values) peak = Math.max(peak, Math.abs(v));
  const panel = await titled(upscale(under(image, heat), displayFactor(image)), `occlusion attribution, ${name(m.target)}`, `output drop, blue ${fmt(-peak)} .. red ${fmt(peak)}`);
  return label(panel, `${modelName}: ${describeGrid(m.grid, m.fill)}`, { position: 'top', fontSize: FONT });
}
