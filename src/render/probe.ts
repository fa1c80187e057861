// The probe figure: test accuracy against layer, per run and number of training images per class.
import { cellOf, type LabelledProbe } from '../analysis/probe.js';
import type { RgbImage } from '../data/image.js';
import { linePlot, PALETTE, type Series } from './plot.js';

/**
 * Accuracy against layer: one line per (run, images per class), one colour per number of images, runs after the
 * first dashed (so a baseline sits beside its trained counterpart), and chance.
 */
export async function probePlot(runs: readonly LabelledProbe[], title: string): Promise<RgbImage> {
  const first = runs[0].result;
  const xs = first.layers.map((_, i) => i + 1);
  const series: Series[] = runs.flatMap(({ label, result }, r) =>
    result.perClass.map((n, j) => ({
      name: `${label}, ${n}/class`,
      x: xs,
      y: result.layers.map((l) => 100 * cellOf(result, l.name, n).mean),
      color: PALETTE[j % PALETTE.length],
      dashed: r > 0,
    })));
  series.push({ name: 'chance', x: xs, y: xs.map(() => 100 / first.classes.length), color: '#999999', dashed: true });
  return linePlot({
    title,
    xLabel: `layer: ${first.layers.map((l, i) => `${i + 1} ${l.name}`).join(', ')}`,
    yLabel: 'test accuracy (%)',
    series,
    width: 720,
    height: 420,
    yRange: [0, 100],
  });
}
