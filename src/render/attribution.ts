// Figures of class attributions: each method's per-pixel score as a heat map over the greyed image, with a colour bar.
import { blankImage, type RgbImage } from '../data/image.js';
import { METHOD_INFO, type Attribution } from '../analysis/attribution.js';
import { blueRed, colorAt, heatmap, viridis, type Colormap } from './colormap.js';
import { blit, displayFactor, grid, hstack, label, upscale, vstack } from './figure.js';
import { FONT, fmt, textImage, titled, under } from './panel.js';

/** Share of pixels whose scores may pass the end of the colour scale: a few extreme gradients would grey out the rest. */
const CLIP_QUANTILE = 0.99;

/** The colour range of a map: 0..q99 of the values for magnitudes, -q99..q99 of |values| for signed scores. */
export function displayRange(pixels: Float32Array, signed: boolean): [number, number] {
  const mags = Float32Array.from(pixels, Math.abs).sort();
  const top = mags.length === 0 ? 0 : mags[Math.min(mags.length - 1, Math.floor(CLIP_QUANTILE * (mags.length - 1)))];
  const peak = top > 0 ? top : mags.at(-1) ?? 0;
  return signed ? [-peak, peak] : [0, peak];
}

/** A vertical colour bar `height` px tall with its top, middle and bottom values written beside it. */
export async function colourBar(cmap: Colormap, lo: number, hi: number, height: number): Promise<RgbImage> {
  const width = 12;
  const bar = blankImage(width, height, 3);
  for (let y = 0; y < height; y++) {
    const rgb = colorAt(cmap, 1 - y / Math.max(1, height - 1));
    for (let x = 0; x < width; x++) bar.data.set(rgb, (y * width + x) * 3);
  }
  const ticks = await Promise.all([hi, (lo + hi) / 2, lo].map((v) => textImage(fmt(v), FONT - 2)));
  const labelsWidth = Math.max(...ticks.map((t) => t.width));
  const out = blankImage(width + 4 + labelsWidth, height, 3, 255);
  blit(out, bar, 0, 0);
  blit(out, ticks[0], 0, width + 4);
  blit(out, ticks[1], Math.max(0, Math.round(height / 2 - ticks[1].height / 2)), width + 4);
  blit(out, ticks[2], Math.max(0, height - ticks[2].height), width + 4);
  return out;
}

/** One method's panel: the map over the image, enlarged for display, its colour bar, and what it explains. */
export async function attributionPanel(image: RgbImage, a: Attribution, className: (c: number) => string): Promise<RgbImage> {
  const info = METHOD_INFO[a.method];
  const cmap = info.signed ? blueRed : viridis;
  const [lo, hi] = displayRange(a.pixels, info.signed);
  const heat = heatmap(a.pixels, image.height, image.width, cmap, { min: lo, max: hi });
  const factor = displayFactor(image);
  const map = upscale(under(image, heat), factor);
  const bar = await colourBar(cmap, lo, hi, map.height);
  const notes = [`${className(a.target)}`, a.gradcam ? `at ${a.gradcam.layer}` : '', a.ig ? `delta ${fmt(a.ig.delta)}` : '', `${(a.seconds * 1000).toFixed(0)} ms`];
  return titled(hstack([map, bar], { gap: 4, background: 255 }), info.title, notes.filter((n) => n !== '').join(', '));
}

/** The input and every method's panel, in rows of up to five, under a caption naming the model and the target. */
export async function attributionFigure(image: RgbImage, results: Attribution[], modelName: string, className: (c: number) => string): Promise<RgbImage> {
  if (results.length === 0) throw new Error('attributionFigure needs at least one attribution');
  const input = await titled(upscale(image, displayFactor(image)), 'input', `predicted ${className(results[0].predicted)}`);
  const panels = [input, ...(await Promise.all(results.map((a) => attributionPanel(image, a, className))))];
  const height = Math.max(...panels.map((p) => p.height));
  const aligned = panels.map((p) => (p.height === height ? p : vstack([p, blankImage(p.width, height - p.height, 3, 255)], { gap: 0, background: 255 })));
  const body = grid(aligned, Math.min(5, aligned.length), { gap: 12, background: 255 });
  const signed = results.some((a) => METHOD_INFO[a.method].signed);
  const scale = `colour scales clipped at the 99th percentile of |score|${signed ? '; signed scores: blue negative, red positive' : ''}`;
  return label(await label(body, scale, { position: 'bottom', fontSize: FONT - 1, color: [70, 70, 70] }), `${modelName}: attributions of ${className(results[0].target)}`, { position: 'top', fontSize: FONT + 2 });
}
