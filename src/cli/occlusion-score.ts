// `convscope occlude --data D --score`: the localisation score over a dataset with object boxes.
import { checkOutputDir } from '../util/fs.js';
import { localisationItems, localisationScore, modelOcclusionGrid } from '../analysis/occlusion.js';
import { Engine } from '../engine/engine.js';
import { writeOutputs } from '../report/files.js';
import { localisationFiles } from '../report/occlusion.js';
import { Progress } from './progress.js';
import { notice } from './notices.js';
import type { Options } from './args.js';
import { modelFrom, validationSplit } from './options.js';
import { parseQueueUrl } from '../distributed/connection.js';
import { distributedScore } from '../distributed/score.js';

export async function runLocalisationScore(o: Options): Promise<void> {
  const out = o.required('out');
  checkOutputDir(out);
  const model = modelFrom(o);
  const { ds: data, split } = await validationSplit(o);
  const count = Math.min(o.int('count', 1), data.size);
  const window = o.has('window') ? o.int('window', 1) : undefined;
  const stride = o.has('stride') ? o.int('stride', 1) : undefined;
  const positions = modelOcclusionGrid(model.input, { window, stride }).boxes.length;
  notice(`score: ${count} images of ${data.name}, ${positions} occluder positions each (${count * positions} forward passes)`);
  if (o.has('queue')) {
    const r = await distributedScore({
      address: parseQueueUrl(o.required('queue')),
      model: { path: o.required('model'), seed: o.int('model-seed'), mean: o.numbers('mean'), std: o.numbers('std') },
      data: { spec: o.required('data'), split, ...(o.string('data-path') ? { dataPath: o.string('data-path') } : {}) },
      indices: Array.from({ length: count }, (_, i) => i),
      window,
      stride,
      resume: o.flag('resume'),
      onProgress: ((bar) => (done: number, all: number, note: string) => bar.update(done, all, note))(new Progress('score', 0, 'jobs')),
    });
    const { files, summary } = localisationFiles(model, data.name, r);
    writeOutputs(out, files);
    process.stdout.write(`${summary}\n`);
    return;
  }
  const items = await localisationItems(data, model, count);
  const engine = new Engine(model);
  try {
    const bar = new Progress('score', items.length, 'images');
    const r = await localisationScore(engine, items, {
      window,
      stride,
      onProgress: bar.report,
    });
    const { files, summary } = localisationFiles(model, data.name, r);
    writeOutputs(out, files);
    process.stdout.write(`${summary}\n`);
  } finally {
    await engine.dispose();
  }
}
