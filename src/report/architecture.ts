// The files of `convscope filters` and `convscope compare-arch` (Fig. 6): filter grids, activity tables, JSON.
import type { ArchitectureResult } from '../analysis/architecture.js';
import type { ConvLayerReport } from '../analysis/filters.js';
import type { Model } from '../model/layers.js';
import { architectureFigure, filterGrid, filterImages } from '../render/architecture.js';
import { encodePng, label } from '../render/figure.js';
import { compactJson } from '../util/json.js';
import type { OutputFiles } from './files.js';

export function filterTableMarkdown(model: string, rows: ConvLayerReport[], images: number): string {
  const pct = (v: number) => `${(100 * v).toFixed(1)}%`;
  return [
    `${model}, activity over ${images} images`,
    '',
    '| layer | kernel / stride | maps | dead (< 1% of images) | zero units | energy above half Nyquist |',
    '|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.conv} | ${r.kernel} / ${r.stride} | ${r.features} | ${r.dead} | ${pct(r.sparsity)} | ${pct(r.highFrequency)} |`),
  ].join('\n');
}

/** The first conv layer's filters as `<layer>-filters.png`; with an activity report also filters.md and filters.json. */
export async function filterFiles(model: Model, activity?: { data: string; rows: ConvLayerReport[]; images: number }): Promise<{ files: OutputFiles; markdown?: string }> {
  const first = model.layers.find((l) => l.type === 'conv2d');
  if (!first) throw new Error(`model ${model.name} has no conv layer`);
  const grid = await label(filterGrid(filterImages(model, first.name)), `${model.name} ${first.name} filters`, { position: 'top', fontSize: 15 });
  const files: OutputFiles = new Map<string, Uint8Array | string>([[`${first.name}-filters.png`, await encodePng(grid)]]);
  if (!activity) return { files };
  const markdown = filterTableMarkdown(model.name, activity.rows, activity.images);
  files.set('filters.md', `${markdown}\n`);
  files.set('filters.json', compactJson({ model: model.name, data: activity.data, images: activity.images, layers: activity.rows }));
  return { files, markdown };
}

/** fig6.png (both models' conv1 filters and activity), compare-arch.md and compare-arch.json. */
export async function compareArchFiles(results: ArchitectureResult[]): Promise<{ files: OutputFiles; markdown: string }> {
  const acc = (v: number | undefined) => (v === undefined ? 'n/a' : `${(100 * v).toFixed(1)}%`);
  const figure = await architectureFigure(results.map((r) => {
    const conv1 = r.model.layers.find((l) => l.type === 'conv2d')!;
    const geometry = conv1.type === 'conv2d' ? `${conv1.kernel[0]}x${conv1.kernel[1]} stride ${conv1.stride[0]}` : '';
    return { title: `${r.name} (conv1 ${geometry}): validation accuracy ${acc(r.valAccuracy)}`, filters: filterImages(r.model, conv1.name), rows: r.rows };
  }));
  const markdown = results.map((r) => `### ${r.name}: validation accuracy ${acc(r.valAccuracy)}\n\n${filterTableMarkdown(r.name, r.rows, r.images)}`).join('\n\n');
  const files: OutputFiles = new Map<string, Uint8Array | string>([
    ['fig6.png', await encodePng(figure)],
    ['compare-arch.md', `${markdown}\n`],
    ['compare-arch.json', compactJson(results.map((r) => ({ model: r.name, valAccuracy: r.valAccuracy, history: r.history, layers: r.rows })))],
  ]);
  return { files, markdown };
}
