// `convscope occlude --data D --score`: the localisation score over a dataset with object boxes.
import { localisationItems, localisationScore } from '../analysis/occlusion.js';
import { Engine } from '../engine/engine.js';
import { writeOutputs } from '../report/files.js';
import { localisationFiles } from '../report/occlusion.js';
import { Progress } from './progress.js';
import type { Options } from './args.js';
import { modelFrom, validationSet } from './options.js';

export async function runLocalisationScore(o: Options): Promise<void> {
  const out = o.required('out');
  const model = modelFrom(o);
  const data = await validationSet(o);
  const items = await localisationItems(data, model, o.int('count', 1));
  const engine = new Engine(model);
  try {
    const bar = new Progress('score', items.length, 'images');
    const r = await localisationScore(engine, items, {
      window: o.has('window') ? o.int('window', 1) : undefined,
      stride: o.has('stride') ? o.int('stride', 1) : undefined,
      onProgress: bar.report,
    });
    const { files, summary } = localisationFiles(model, data.name, r);
    writeOutputs(out, files);
    process.stdout.write(`${summary}\n`);
  } finally {
    await engine.dispose();
  }
}
