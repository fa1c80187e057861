// The files of `convscope probe`: probe.md (the table), probe.json (every split's accuracy), probe.png.
import { cellOf, type LabelledProbe } from '../analysis/probe.js';
import { encodePng } from '../render/figure.js';
import { probePlot } from '../render/probe.js';
import { compactJson } from '../util/json.js';
import type { OutputFiles } from './files.js';

const percent = (v: number): string => (100 * v).toFixed(1);

/** A Markdown table: one row per layer, one column per (run, images per class), cells "mean ± std" in %. */
export function probeMarkdown(runs: readonly LabelledProbe[]): string {
  const first = runs[0].result;
  const columns = runs.flatMap(({ label, result }) => result.perClass.map((n) => ({ label: `${label}, ${n}/class`, result, n })));
  const lines = [
    `Linear softmax (multinomial logistic regression, L-BFGS, L2 ${first.l2}, standardised features) on frozen features; ` +
      `conv maps average-pooled to at most ${first.pool}x${first.pool}.`,
    `Training images drawn from ${first.train} (${first.splits} seeded splits, seed ${first.seed}); ` +
      `test: ${first.testItems} images of ${first.test}; ${first.classes.length} classes, chance ${percent(1 / first.classes.length)}%. ` +
      `Test accuracy in %, mean ± std over the splits.`,
    '',
    `| layer | features | ${columns.map((c) => c.label).join(' | ')} |`,
    `|---|---|${columns.map(() => '---|').join('')}`,
    ...first.layers.map(({ name, shape, dims }) =>
      `| ${name} | ${shape.join('x')}${shape.length > 1 ? ` = ${dims}` : ''} | ${columns.map((c) => {
        const cell = cellOf(c.result, name, c.n);
        return `${percent(cell.mean)} ± ${percent(cell.std)}`;
      }).join(' | ')} |`),
    '',
    ...runs.map(({ label, result }) => `- ${label}: model ${result.model}`),
  ];
  return `${lines.join('\n')}\n`;
}

export async function probeFiles(runs: readonly LabelledProbe[], title: string): Promise<{ files: OutputFiles; markdown: string }> {
  const markdown = probeMarkdown(runs);
  const files: OutputFiles = new Map<string, Uint8Array | string>([
    ['probe.json', compactJson({ runs })],
    ['probe.md', markdown],
    ['probe.png', await encodePng(await probePlot(runs, title))],
  ]);
  return { files, markdown };
}
