// `convscope demo`: the whole paper on one dataset, as the sequence of convscope commands a user could type, then the
// report. Running the commands themselves keeps the demo and the CLI one code path.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { buildReport, RUN_LAYOUT } from '../report/report.js';
import { openFilteredDataset } from '../data/filter.js';
import { encodePng } from '../render/figure.js';
import { isZooName } from '../model/zoo.js';
import { writeFileAtomic } from '../util/fs.js';
import { formatSeconds } from '../util/progress.js';
import { parseOptions, type Command } from './args.js';

export interface DemoSettings {
  out: string;
  /** Dataset spec; default the built-in shapes set. */
  data: string;
  /** A zoo name to train, or a trained model file (then training, evolution and the architecture comparison are skipped). */
  model: string;
  epochs: number;
  /** Images scanned by the analyses that sweep a dataset. */
  scan: number;
  /** Images occluded one by one for Fig. 7. */
  occlusions: number;
}

export const DEMO_DEFAULTS: DemoSettings = { out: 'convscope-out', data: 'shapes', model: 'zfnet-small', epochs: 20, scan: 1000, occlusions: 3 };

/** Small enough for a test: a few hundred images, two epochs. */
export const DEMO_QUICK: Partial<DemoSettings> = { data: 'shapes:count=192', epochs: 2, scan: 64, occlusions: 1 };

export async function runDemoPipeline(commands: Record<string, Command>, s: DemoSettings, log: (line: string) => void): Promise<string> {
  const at = (step: keyof typeof RUN_LAYOUT) => join(s.out, RUN_LAYOUT[step]);
  const started = Date.now();
  const run = async (name: string, args: (string | number)[]) => {
    const argv = args.map(String);
    log(`\n== convscope ${name} ${argv.join(' ')}`);
    const t = Date.now();
    await commands[name].run(parseOptions(name, argv, commands[name].options));
    log(`== ${name} done in ${formatSeconds((Date.now() - t) / 1000)}`);
  };
  const training = isZooName(s.model);
  const model = training ? join(at('train'), 'model.safetensors') : s.model;
  if (training) {
    await run('train', ['--model', s.model, '--data', s.data, '--epochs', s.epochs, '--out', at('train')]);
  } else if (!existsSync(s.model)) throw new Error(`model ${s.model} is neither a zoo name nor a file`);
  await run('topk', ['--model', model, '--data', s.data, '--limit', s.scan, '--out', at('topk')]);
  if (training) {
    await run('evolve', ['--snapshots', join(at('train'), 'snapshots'), '--data', s.data, '--count', s.scan, '--features', 6, '--out', at('evolution')]);
  }
  await run('invariance', ['--model', model, '--data', s.data, '--count', Math.min(10, s.scan), '--out', at('invariance')]);
  if (training && s.model === 'zfnet-small') {
    await run('compare-arch', ['--data', s.data, '--zfnet-run', at('train'), '--count', s.scan, '--out', at('architecture')]);
  }
  // Fig. 7 on the first few held-out images, each written as a file first, as a user would pass them.
  const held = await openFilteredDataset(s.data, { split: 'val' }).catch(() => openFilteredDataset(s.data, { split: 'test' }));
  for (let i = 0; i < Math.min(s.occlusions, held.size); i++) {
    const item = await held.item(i);
    const file = join(at('occlusion'), 'inputs', `${String(i).padStart(2, '0')}-${held.classes[item.label].replace(/\W+/g, '-')}.png`);
    writeFileAtomic(file, await encodePng(item.image));
    await run('occlude', ['--model', model, '--image', file, '--target', item.label, '--out', join(at('occlusion'), `image-${String(i).padStart(2, '0')}`)]);
  }
  await run('occlude', ['--model', model, '--data', s.data, '--score', '--count', Math.min(50, s.scan), '--out', at('occlusion')]);
  await run('correspond', ['--model', model, '--data', s.data, '--out', at('correspondence')]);
  const report = buildReport(s.out, `convscope report: ${training ? `${s.model} trained on` : s.model + ','} ${s.data}`);
  log(`\nall steps done in ${formatSeconds((Date.now() - started) / 1000)}; open ${report}`);
  return report;
}
