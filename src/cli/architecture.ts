// `convscope filters` and `convscope compare-arch` (paper Fig. 6): parse options, call the library, write files.
import { checkOutputDir } from '../util/fs.js';
import { join } from 'node:path';
import { compareArchitectures } from '../analysis/architecture.js';
import { filterReport, type ConvLayerReport } from '../analysis/filters.js';
import { Engine } from '../engine/engine.js';
import { DATA_OPTIONS, MODEL_OPTIONS, modelFrom, trainAndHeldOut, validationSet } from './options.js';
import { compareArchFiles, filterFiles } from '../report/architecture.js';
import { writeOutputs } from '../report/files.js';
import { paperSnapshotEpochs } from '../train/optimizer.js';
import { PAPER_TRAINING, readTrainConfig } from '../train/trainer.js';
import { writeTrainingCurves } from '../report/training.js';
import { Progress } from './progress.js';
import type { Command } from './args.js';
import { say } from './notices.js';

export const filtersCommand: Command = {
  summary: 'conv1 filters as an image grid; per conv layer: dead maps, high-frequency energy, sparsity (Fig. 6)',
  options: {
    ...MODEL_OPTIONS,
    ...DATA_OPTIONS,
    count: { value: true, help: 'images of the dataset to measure activity on (default: all of its validation split)' },
    out: { value: true, help: 'output folder', default: join('convscope-out', 'filters') },
  },
  async run(o) {
    const model = modelFrom(o);
    const out = o.required('out');
    checkOutputDir(out);
    let activity: { data: string; rows: ConvLayerReport[]; images: number } | undefined;
    if (o.has('data')) {
      const data = await validationSet(o);
      const count = Math.min(o.has('count') ? o.int('count', 1) : data.size, data.size);
      const engine = new Engine(model);
      try {
        const report = await filterReport(engine, data, { onProgress: new Progress('activity', count, 'images').report, indices: Array.from({ length: count }, (_, i) => i) });
        activity = { data: data.name, rows: report.rows, images: report.images };
      } finally {
        await engine.dispose();
      }
    }
    const { files, markdown } = await filterFiles(model, activity);
    writeOutputs(out, files);
    if (markdown) process.stdout.write(`${markdown}\n`);
    process.stdout.write(`wrote ${[...files.keys()].map((f) => join(out, f)).join(', ')}\n`);
  },
};

export const compareArchCommand: Command = {
  summary: 'train alexnet-small (11x11/4) and zfnet-small (7x7/2) on the same data and budget; Fig. 6 side by side',
  options: {
    ...DATA_OPTIONS,
    epochs: { value: true, help: 'epochs for each model', default: 10 },
    'batch-size': { value: true, help: 'mini-batch size', default: 32 },
    lr: { value: true, help: 'learning rate', default: PAPER_TRAINING.lr },
    seed: { value: true, help: 'seed of weights, order, dropout, augmentation', default: 0 },
    count: { value: true, help: 'validation images to measure activity on (default all)' },
    out: { value: true, help: 'output folder', default: join('convscope-out', 'compare-arch') },
    resume: { value: false, help: 'continue interrupted trainings from their checkpoints' },
    'zfnet-run': { value: true, help: 'a finished `convscope train` run of zfnet-small to use instead of training it; alexnet-small gets its settings' },
  },
  async run(o) {
    const epochs = o.int('epochs', 1);
    const out = o.required('out');
    checkOutputDir(out);
    const zfnetRun = o.string('zfnet-run');
    // The other architecture gets the finished run's recipe and data budget.
    const config = zfnetRun ? readTrainConfig(zfnetRun) : {
      ...PAPER_TRAINING,
      epochs,
      batchSize: o.int('batch-size', 1),
      lr: o.number('lr'),
      seed: o.int('seed'),
      snapshotEpochs: paperSnapshotEpochs(epochs),
    };
    const { train: trainSet, heldOut: valSet } = await trainAndHeldOut(o);
    const count = Math.min(o.has('count') ? o.int('count', 1) : valSet.size, valSet.size);
    const results = await compareArchitectures(trainSet, valSet, config, out, {
      log: say, resume: o.flag('resume'), activityIndices: Array.from({ length: count }, (_, i) => i),
      onRun: (name, dir) => ({
        onProgress: new Progress(`training ${name}`, 0, 'batches').report,
        onEpoch: (_, history) => writeTrainingCurves(dir, `${name} on ${trainSet.name}`, history),
        onActivityProgress: new Progress('activity', count, 'images').report,
      }),
      ...(zfnetRun ? { runs: { 'zfnet-small': zfnetRun } } : {}),
    });
    const { files, markdown } = await compareArchFiles(results);
    writeOutputs(out, files);
    process.stdout.write(`${markdown}\n\nwrote ${join(out, 'fig6.png')}, compare-arch.md, compare-arch.json\n`);
  },
};
