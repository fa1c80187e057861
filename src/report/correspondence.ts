// The files of `convscope correspond`: Table 1 as Markdown, the numbers as JSON, the occluded images as a PNG.
import type { CorrespondenceImage, CorrespondenceResult, LayerDelta } from '../analysis/correspondence.js';
import { join } from 'node:path';
import type { RgbImage } from '../data/image.js';
import type { Model } from '../model/layers.js';
import type { Rect } from '../util/rect.js';
import { correspondenceFigure } from '../render/correspondence.js';
import { encodePng } from '../render/figure.js';
import { compactJson } from '../util/json.js';
import type { OutputFiles } from './files.js';

function cell(d: LayerDelta): string {
  const spread = d.drawStd ?? d.pairStd;
  return `${d.delta.toFixed(3)} ± ${spread.toFixed(3)}`;
}

/** Table 1 in Markdown, with the definitions a reader needs to compare it with the paper. */
export function correspondenceMarkdown(r: CorrespondenceResult, layerTitle: (l: string) => string = (l) => l): string {
  const lines = [
    `| occlusion location | ${r.layers.map((l) => `Δ ${layerTitle(l)}`).join(' | ')} |`,
    `|---|${r.layers.map(() => '---').join('|')}|`,
    ...r.rows.map((row) => `| ${row.name} | ${r.layers.map((l) => cell(row.layers[l])).join(' | ')} |`),
    '',
    `${r.images.length} images (${r.images.length * (r.images.length - 1) / 2} pairs); occluder: the dataset mean (0 input).`,
    'Δ = mean over image pairs of the Hamming distance between sign(ε_i) and sign(ε_j), as a fraction of the feature length;',
    'ε_i = f(x_i) − f(occluded x_i); signs −1/0/+1, so units unchanged in both images agree.',
    `± for parts: standard deviation of the pair distances; for random rows: standard deviation of Δ over ${r.draws} draws`,
    `(seed ${r.seed}; regions of the parts' sizes at uniform positions). Population standard deviations (÷ n).`,
    '',
  ];
  return lines.join('\n');
}

export async function correspondenceFiles(model: Model, images: CorrespondenceImage[], result: CorrespondenceResult, layerTitle: (l: string) => string): Promise<{ files: OutputFiles; markdown: string }> {
  const markdown = correspondenceMarkdown(result, layerTitle);
  const files: OutputFiles = new Map<string, Uint8Array | string>([
    ['correspondence.md', markdown],
    ['correspondence.json', compactJson({ model: model.name, fill: 'dataset mean (0 input)', normalisation: 'Hamming distance / feature length, averaged over image pairs', ...result })],
    ['correspondence.png', await encodePng(await correspondenceFigure(images, result, model))],
  ]);
  return { files, markdown };
}

/**
 * A parts set drawn from a dataset (its images and their object boxes) in the form `--images DIR --parts FILE` reads,
 * under set/, so the run can be repeated or edited by hand.
 */
export async function partsSetFiles(items: { name: string; image: RgbImage; parts: Record<string, Rect> }[]): Promise<OutputFiles> {
  const files: OutputFiles = new Map();
  const parts: Record<string, Record<string, Rect>> = {};
  for (const [i, it] of items.entries()) {
    const file = `${String(i).padStart(2, '0')}-${it.name.replace(/[^\w.-]+/g, '_')}.png`;
    files.set(join('set', file), await encodePng(it.image));
    parts[file] = it.parts;
  }
  files.set(join('set', 'parts.json'), compactJson({ coordinates: 'image', images: parts }));
  return files;
}
