// The faithfulness figure: mean deletion and insertion curves of every method, side by side.
import type { RgbImage } from '../data/image.js';
import { METHOD_INFO } from '../analysis/attribution.js';
import type { MethodFaithfulness } from '../analysis/faithfulness.js';
import { hstack, label } from './figure.js';
import { linePlot, PALETTE, type Series } from './plot.js';

export async function faithfulnessPlot(rows: readonly MethodFaithfulness[], caption: string): Promise<RgbImage> {
  const series = (pick: (r: MethodFaithfulness) => number[], auc: (r: MethodFaithfulness) => number): Series[] =>
    rows.map((r, i) => {
      const y = pick(r);
      return {
        name: `${METHOD_INFO[r.method].title} (${auc(r).toFixed(3)})`,
        x: y.map((_, k) => k / (y.length - 1)),
        y,
        color: PALETTE[i % PALETTE.length],
        // Past the palette, a dashed line tells two methods of one colour apart.
        dashed: i >= PALETTE.length,
      };
    });
  const common = { xLabel: 'share of pixels, by decreasing attribution', yLabel: 'p(target), mean over images', width: 620, height: 420, yRange: [0, 1] as [number, number] };
  const deletion = await linePlot({ ...common, title: 'deletion: pixels removed (area: lower is better)', series: series((r) => r.meanDeletion, (r) => r.deletionAuc) });
  const insertion = await linePlot({ ...common, title: 'insertion: pixels restored onto a blur (area: higher is better)', series: series((r) => r.meanInsertion, (r) => r.insertionAuc) });
  return label(hstack([deletion, insertion], { gap: 8, background: 255 }), caption, { position: 'top', fontSize: 15 });
}
