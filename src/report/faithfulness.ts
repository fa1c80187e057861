// The files of `convscope faithfulness`: faithfulness.md (the table), faithfulness.json (every image's numbers and
// the mean curves), faithfulness.png (the curves).
import { METHOD_INFO } from '../analysis/attribution.js';
import type { MethodFaithfulness } from '../analysis/faithfulness.js';
import { encodePng } from '../render/figure.js';
import { faithfulnessPlot } from '../render/faithfulness.js';
import { compactJson } from '../util/json.js';
import type { OutputFiles } from './files.js';

export interface FaithfulnessRun {
  model: string;
  data: string;
  images: number;
  steps: number;
  target: 'label' | 'predicted';
  rows: MethodFaithfulness[];
}

export function faithfulnessMarkdown(run: FaithfulnessRun): string {
  const boxes = run.rows.some((r) => r.pointing !== undefined);
  const lines = [
    `${run.model} on ${run.images} images of ${run.data}, explaining the ${run.target === 'label' ? 'labelled' : 'predicted'} class; curves of ${run.steps} steps.`,
    '',
    '| method | deletion AUC ↓ | insertion AUC ↑ | pointing game ↑ | ms per image |',
    '|---|---|---|---|---|',
    ...run.rows.map((r) => `| ${METHOD_INFO[r.method].title} | ${r.deletionAuc.toFixed(3)} | ${r.insertionAuc.toFixed(3)} | ${r.pointing === undefined ? 'n/a' : `${(100 * r.pointing).toFixed(0)}%`} | ${r.msPerImage.toFixed(1)} |`),
    '',
    'Deletion: p(target) as pixels are set to the mean colour in order of decreasing attribution; insertion: as they are restored onto a blurred copy. ' +
      `Areas under the mean curves over [0, 1]. Pointing game: share of images whose highest-scoring pixel lies in the object's box${boxes ? '' : ' (this dataset records no boxes)'}. ` +
      'Milliseconds: the median of one attribution, warm.',
  ];
  return `${lines.join('\n')}\n`;
}

export async function faithfulnessFiles(run: FaithfulnessRun): Promise<{ files: OutputFiles; markdown: string }> {
  const markdown = faithfulnessMarkdown(run);
  const caption = `${run.model}, ${run.images} images of ${run.data}`;
  const files: OutputFiles = new Map<string, Uint8Array | string>([
    ['faithfulness.md', markdown],
    ['faithfulness.json', compactJson(run)],
    ['faithfulness.png', await encodePng(await faithfulnessPlot(run.rows, caption))],
  ]);
  return { files, markdown };
}
