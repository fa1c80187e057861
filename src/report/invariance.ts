// The files of `convscope invariance`: invariance.png (Fig. 5), invariance.csv (every point) and invariance.json.
import { DISTANCE_LEGEND, FILL_LEGEND, meanCurves, type Curve, type NamedResult, type Sweep } from '../analysis/invariance.js';
import type { Model } from '../model/layers.js';
import { encodePng } from '../render/figure.js';
import { invarianceFigure } from '../render/invariance.js';
import type { Tensor } from '../tensor.js';
import { compactJson } from '../util/json.js';
import type { OutputFiles } from './files.js';


function csvField(v: string | number): string {
  const s = String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** One row per image, transform and amount, then the mean over images (image = "mean", class empty). */
export function invarianceCsv(images: NamedResult[], layers: string[], className: (c: number) => string): string {
  const header = ['image', 'true_class', 'transform', 'amount', ...layers.map((l) => `${l}_distance`), 'p_true_class'];
  const rows = [header.join(',')];
  const emit = (name: string, cls: string, curves: Curve[]) => {
    for (const c of curves) {
      c.amounts.forEach((a, i) => rows.push([name, cls, c.kind, a, ...layers.map((l) => c.distance[l][i]), c.probability[i]].map(csvField).join(',')));
    }
  };
  for (const { name, result } of images) emit(name, className(result.trueClass), result.curves);
  emit('mean', '', meanCurves(images.map((i) => i.result)));
  return `${rows.join('\n')}\n`;
}


export interface InvarianceRun {
  model: Model;
  layers: string[];
  sweeps: Sweep[];
  results: NamedResult[];
  /** Per image, where its true class came from: given, dataset label or predicted. */
  classSources: string[];
  /** The input whose transforms the figure shows as examples. */
  exampleInput: Tensor;
  /** How the figure titles a layer (the paper's "layer 1", "layer 7" where they apply). */
  layerTitle: (layer: string) => string;
}

export async function invarianceFiles(run: InvarianceRun): Promise<OutputFiles> {
  const { model, layers, sweeps, results } = run;
  const className = (c: number) => model.classes?.[c] ?? String(c);
  const mean = meanCurves(results.map((r) => r.result));
  return new Map<string, Uint8Array | string>([
    ['invariance.csv', invarianceCsv(results, layers, className)],
    ['invariance.png', await encodePng(await invarianceFigure(results, run.exampleInput, model, layers, run.layerTitle, sweeps))],
    ['invariance.json', compactJson({
      model: model.name, layers, distance: DISTANCE_LEGEND, fill: FILL_LEGEND, translate: 'vertical, input pixels, + = down', rotate: 'degrees, counter-clockwise',
      sweeps, images: results.map((r, i) => ({ name: r.name, trueClass: className(r.result.trueClass), classSource: run.classSources[i], predicted: className(r.result.predicted) })),
      mean, perImage: results.map((r) => ({ name: r.name, curves: r.result.curves })),
    })],
  ]);
}
