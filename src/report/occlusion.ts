// The files of `convscope occlude` (paper Fig. 7, or Captum-style attribution) and of its localisation score.
import type { LocalisationScore, OcclusionResult } from '../analysis/occlusion.js';
import { inputToImage } from '../data/image.js';
import type { Model } from '../model/layers.js';
import { encodePng } from '../render/figure.js';
import { attributionFigure, paperFigures, type ClassNamer } from '../render/occlusion.js';
import { encodeNpy, type Tensor } from '../tensor.js';
import { compactJson } from '../util/json.js';
import type { OutputFiles } from './files.js';

export function classNamer(model: Pick<Model, 'classes'>): ClassNamer {
  return (c) => model.classes?.[c] ?? `class ${c}`;
}

/**
 * The occlusion folder: the maps (.npy), their figures (.png) and occlusion.json; with a one-line summary of what the
 * maps show. `seconds` is the run time recorded in the JSON.
 */
export async function occlusionFiles(model: Model, input: Tensor, r: OcclusionResult, seconds: number): Promise<{ files: OutputFiles; summary: string }> {
  const name = classNamer(model);
  const image = inputToImage(input, model.preprocess);
  const files: OutputFiles = new Map();
  const g = r.grid;
  const common = {
    model: model.name, mode: r.mode, window: g.window, stride: g.stride, fill: r.fill, rows: g.ys.length, cols: g.xs.length, ys: g.ys, xs: g.xs,
    target: r.target, predicted: r.predicted, flops: r.flops, seconds,
  };
  if (r.mode === 'attribution') {
    files.set('attribution.npy', encodeNpy(r.attribution));
    files.set('delta.npy', encodeNpy(r.delta));
    files.set('attribution.png', await encodePng(await attributionFigure(image, r, model.name, name)));
    files.set('occlusion.json', compactJson(common));
    return { files, summary: `target ${name(r.target)}: Captum-style occlusion attribution, [${r.attribution.shape}]` };
  }
  for (const [stem, t] of [['activation', r.activation], ['probability', r.probability], ['top_class', r.topClass]] as const) files.set(`${stem}.npy`, encodeNpy(t));
  const [c, h, w] = model.input;
  const all = new Float32Array(r.projections.length * c * h * w);
  r.projections.forEach((p, i) => all.set(p.projection.data, i * c * h * w));
  files.set('projections.npy', encodeNpy({ shape: [r.projections.length, c, h, w], data: all }));
  for (const [stem, img] of await paperFigures(image, r, model.name, name)) files.set(`${stem}.png`, await encodePng(img));
  const projections = r.projections.map((p) => ({ position: p.position, unit: p.unit, value: p.value }));
  files.set('occlusion.json', compactJson({ ...common, layer: r.layer, feature: r.feature, unoccluded: r.unoccluded, projections }));
  const lowest = r.probability.data.reduce((best, v, i, a) => (v < a[best] ? i : best), 0);
  const summary =
    `target ${name(r.target)}: p ${r.unoccluded.probability.toPrecision(4)} unoccluded, lowest ${r.probability.data[lowest].toPrecision(4)} ` +
    `at (${Math.floor(lowest / g.xs.length)},${lowest % g.xs.length}); ${r.layer} map ${r.feature} total ${r.unoccluded.activation.toPrecision(5)} unoccluded`;
  return { files, summary };
}

/** score.md (the sentence the report shows) and score.json (per image: the minimum, the box, hit or not). */
export function localisationFiles(model: Pick<Model, 'name'>, dataName: string, r: LocalisationScore): { files: OutputFiles; summary: string } {
  const pct = (v: number) => `${(100 * v).toFixed(1)}%`;
  const summary =
    `Localisation (pointing game) on ${r.images} images of ${dataName}: p(correct class) is lowest with the square's centre inside the object box in ` +
    `**${r.hits} of ${r.images} = ${pct(r.score)}** (chance, the share of square positions centred in the box: ${pct(r.chance)}).`;
  const files: OutputFiles = new Map([
    ['score.md', `${summary}\n`],
    ['score.json', compactJson({ model: model.name, data: dataName, ...r })],
  ]);
  return { files, summary };
}
