// Fig. 5 as one PNG: per transform, example images and the curves of each layer's distance and p(true class).
import { meanCurves, transformFor, DISTANCE_LEGEND, FILL_LEGEND, type Curve, type NamedResult, type Sweep, type TransformKind } from '../analysis/invariance.js';
import { inputToImage, resizeImage, type RgbImage } from '../data/image.js';
import { transformInput } from '../data/transform.js';
import type { Model } from '../model/layers.js';
import type { Tensor } from '../tensor.js';
import { grid, hstack, label, vstack } from './figure.js';
import { legendStrip, linePlot, type Series } from './plot.js';

const X_LABELS: Record<TransformKind, string> = {
  translate: 'vertical translation (pixels, + = down)',
  scale: 'scale (ratio)',
  rotate: 'rotation (degrees, counter-clockwise)',
};

/** Up to `count` amounts spread evenly over the sweep, ends included, for the example thumbnails. */
function exampleIndices(length: number, count: number): number[] {
  if (length <= count) return Array.from({ length }, (_, i) => i);
  return [...new Set(Array.from({ length: count }, (_, k) => Math.round((k * (length - 1)) / (count - 1))))];
}

/** With many images per-image lines hide the mean; past this count only the mean is drawn (the CSV has them all). */
const MAX_LINES = 6;
const PLOT = { width: 400, height: 280, legend: false };
const THUMB = 80;

async function examples(input: Tensor, model: Model, sweep: Sweep): Promise<RgbImage> {
  const [, h, w] = model.input;
  const size: [number, number] = [Math.round((THUMB * h) / Math.max(h, w)), Math.round((THUMB * w) / Math.max(h, w))];
  const thumbs = await Promise.all(exampleIndices(sweep.amounts.length, 6).map(async (i) => {
    const img = inputToImage(transformInput(input, transformFor(sweep.kind, sweep.amounts[i]), model.preprocess), model.preprocess);
    return label(resizeImage(img, size), String(sweep.amounts[i]), { fontSize: 11 });
  }));
  return grid(thumbs, 2, { gap: 4, background: [255, 255, 255] });
}

/**
 * Fig. 5 as one PNG: a row per transform with example images (the first image), the distance at each layer and
 * p(true class); thin lines per image (up to six), the mean over images dashed black.
 */
export async function invarianceFigure(images: NamedResult[], firstInput: Tensor, model: Model, layers: string[], layerTitle: (l: string) => string, sweeps: Sweep[]): Promise<RgbImage> {
  const mean = meanCurves(images.map((i) => i.result));
  const perImage = images.length <= MAX_LINES;
  const rows: RgbImage[] = [];
  const seriesOf = (si: number, values: (c: Curve) => number[]): Series[] => [
    ...(perImage ? images.map(({ name, result }) => ({ name, x: sweeps[si].amounts, y: values(result.curves[si]) })) : []),
    { name: `mean of ${images.length}`, x: sweeps[si].amounts, y: values(mean[si]), color: '#000000', dashed: true },
  ];
  // Every plot draws the same series: one legend above the rows, where per-plot legends covered curves.
  if (sweeps.length > 0) rows.push(await legendStrip(seriesOf(0, (c) => c.probability)));
  for (const [si, sweep] of sweeps.entries()) {
    const plots = await Promise.all([
      ...layers.map((l) => linePlot({ ...PLOT, title: `${layerTitle(l)}: relative distance`, xLabel: X_LABELS[sweep.kind], yLabel: '‖f(T(x)) − f(x)‖ / ‖f(x)‖', series: seriesOf(si, (c) => c.distance[l]) })),
      linePlot({ ...PLOT, title: 'p(true class)', xLabel: X_LABELS[sweep.kind], yLabel: 'probability', yRange: [0, 1], series: seriesOf(si, (c) => c.probability) }),
    ]);
    rows.push(hstack([await examples(firstInput, model, sweep), ...plots], { gap: 8, background: [255, 255, 255] }));
  }
  const legend = `${model.name}, ${images.length} image${images.length === 1 ? '' : 's'}${perImage ? '' : ' (mean only; per image in invariance.csv)'}. ${DISTANCE_LEGEND}; ${FILL_LEGEND}. Examples: ${images[0].name}.`;
  return label(vstack(rows, { gap: 10, background: [255, 255, 255] }), legend, { position: 'bottom', fontSize: 13, color: [60, 60, 60] });
}
