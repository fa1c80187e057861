// The figure of `convscope synthesize`: each feature's synthetic image with the value it reached, and the ascent curves.
import type { RgbImage } from '../data/image.js';
import type { Synthesis } from '../analysis/synthesize.js';
import { displayFactor, grid, hstack, label, upscale, vstack } from './figure.js';
import { linePlot } from './plot.js';
import { fmt } from './panel.js';

export async function synthesisFigure(images: RgbImage[], s: Synthesis, caption: string): Promise<RgbImage> {
  const factor = displayFactor(images[0], 128);
  const cells = await Promise.all(images.map((img, i) => label(upscale(img, factor), `#${s.features[i]}  ${fmt(s.final[i])}`, { position: 'top', fontSize: 12, align: 'left' })));
  const body = grid(cells, Math.min(8, cells.length), { gap: 8, background: 255 });
  const steps = s.history[0].length;
  const curves = await linePlot({
    title: `${s.objective === 'map' ? 'map mean' : 'centre unit'} during the ascent`,
    xLabel: 'step',
    yLabel: s.layer,
    series: s.history.slice(0, 8).map((h, i) => ({ name: `#${s.features[i]}`, x: Array.from({ length: steps }, (_, t) => t), y: Array.from(h) })),
    width: 520,
    height: 320,
  });
  return label(vstack([body, hstack([curves], { gap: 0, background: 255 })], { gap: 10, background: 255 }), caption, { position: 'top', fontSize: 15 });
}
