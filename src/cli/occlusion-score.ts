// `convscope occlude --data D --score`: the localisation score over a dataset with object boxes.
import { join } from 'node:path';
import { localisationScore } from '../analysis/occlusion.js';
import { batches } from '../data/batches.js';
import { Engine } from '../engine/engine.js';
import { batchItem } from '../tensor.js';
import { writeFileAtomic } from '../util/fs.js';
import { UsageError, type Options } from './args.js';
import { modelFrom, validationSet } from './options.js';

export async function runLocalisationScore(o: Options): Promise<void> {
  const out = o.required('out');
  const model = modelFrom(o);
  const data = await validationSet(o);
  const count = Math.min(o.int('count', 50, 1), data.size);
  const items: Parameters<typeof localisationScore>[1] = [];
  for await (const b of batches(data, { input: model.input, preprocess: model.preprocess, batchSize: 16, indices: Array.from({ length: count }, (_, i) => i) })) {
    if (!b.boxes) throw new UsageError(`${data.name} has no object boxes: --score needs a dataset that records them, such as shapes`);
    b.indices.forEach((_, j) => items.push({ input: batchItem(b.input, j), label: b.labels[j], box: b.boxes![j]!, name: b.names[j] }));
  }
  const engine = new Engine(model);
  try {
    const r = await localisationScore(engine, items, {
      window: o.has('window') ? o.int('window', 0, 1) : undefined,
      stride: o.has('stride') ? o.int('stride', 0, 1) : undefined,
      onImage: (done, total) => { if (done % 10 === 0 || done === total) process.stderr.write(`score: ${done}/${total} images\n`); },
    });
    const pct = (v: number) => `${(100 * v).toFixed(1)}%`;
    const md = [
      `Localisation (pointing game) on ${r.images} images of ${data.name}: p(correct class) is lowest with the square's centre inside the object box in **${r.hits} of ${r.images} = ${pct(r.score)}** (chance, the share of square positions centred in the box: ${pct(r.chance)}).`,
    ].join('\n');
    writeFileAtomic(join(out, 'score.md'), `${md}\n`);
    writeFileAtomic(join(out, 'score.json'), JSON.stringify({ model: model.name, data: data.name, ...r }, null, 1));
    process.stdout.write(`${md}\n`);
  } finally {
    await engine.dispose();
  }
}
