// The files of `convscope ablate`: Table 3's layout as Markdown, and the rows as JSON.
import type { AblationResult } from '../analysis/ablate.js';
import type { LrSchedule } from '../train/optimizer.js';
import { compactJson } from '../util/json.js';
import type { OutputFiles } from './files.js';

function scheduleText(s: LrSchedule): string {
  switch (s.kind) {
    case 'constant':
      return '';
    case 'step':
      return ` x${s.gamma} every ${s.every} epochs`;
    case 'manual':
      return `, ${Object.entries(s.at).map(([e, lr]) => `${lr} from epoch ${e}`).join(', ')}`;
  }
}

/** Table 3's layout: one row per model, top-1 error in % (the paper gives top-5 error of 1000 classes). */
export function ablationMarkdown(r: AblationResult): string {
  const c = r.config;
  const how = c.start === 'trained'
    ? 'kept layers start from the trained weights, re-initialised layers from He init'
    : 'every model starts from He init';
  const lines = [
    `Ablation of ${r.model}: each model retrained ${c.epochs} epoch${c.epochs === 1 ? '' : 's'} on ${r.train} ` +
      `(SGD, lr ${c.lr}${scheduleText(c.schedule)}, batch ${c.batchSize}, seed ${c.seed}; ${how}); top-1 error on ${r.validation}.`,
    '',
    `| model | removed | re-initialised | conv+fc layers | parameters | error before retraining (%) | error after ${c.epochs} epoch${c.epochs === 1 ? '' : 's'} (%) |`,
    '|---|---|---|---|---|---|---|',
    ...r.rows.map((row) =>
      `| ${row.name} | ${row.removed.join(', ') || '-'} | ${row.reinitialised.join(', ') || '-'} | ${row.weightLayers} | ${row.params.toLocaleString('en-US')} | ` +
        `${(100 * (1 - row.before)).toFixed(1)} | ${(100 * (1 - row.after)).toFixed(1)} |`),
  ];
  return `${lines.join('\n')}\n`;
}

export function ablationFiles(r: AblationResult): { files: OutputFiles; markdown: string } {
  const markdown = ablationMarkdown(r);
  return { files: new Map([['ablation.json', compactJson(r)], ['ablation.md', markdown]]), markdown };
}
