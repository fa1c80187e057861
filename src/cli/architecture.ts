// `convscope filters` and `convscope compare-arch` (paper Fig. 6): parse options, call the library, write files.
import { join } from 'node:path';
import { compareArchitectures } from '../analysis/architecture.js';
import { filterImages, filterReport, filterTableMarkdown } from '../analysis/filters.js';
import { Engine } from '../engine/engine.js';
import { DATA_OPTIONS, datasetFrom, MODEL_OPTIONS, modelFrom, validationSet } from './options.js';
import { architectureFigure, filterGrid } from '../render/architecture.js';
import { encodePng, label } from '../render/figure.js';
import { paperSnapshotEpochs } from '../train/optimizer.js';
import { PAPER_TRAINING, readTrainConfig } from '../train/trainer.js';
import { writeFileAtomic } from '../util/fs.js';
import { writeTrainingCurves } from '../report/training.js';
import { Progress } from './progress.js';
import type { Command } from './args.js';

const log = (line: string) => process.stderr.write(`${line}\n`);

export const filtersCommand: Command = {
  summary: 'conv1 filters as an image grid; per conv layer: dead maps, high-frequency energy, sparsity (Fig. 6)',
  options: {
    ...MODEL_OPTIONS,
    ...DATA_OPTIONS,
    count: { value: true, help: 'images of the dataset to measure activity on (default: all of its validation split)' },
    out: { value: true, help: 'output folder (default convscope-out/filters)' },
  },
  async run(o) {
    const model = modelFrom(o);
    const out = o.string('out', join('convscope-out', 'filters'));
    const first = model.layers.find((l) => l.type === 'conv2d');
    if (!first) throw new Error(`model ${model.name} has no conv layer`);
    const grid = await label(filterGrid(filterImages(model, first.name)), `${model.name} ${first.name} filters`, { position: 'top', fontSize: 15 });
    const files = new Map<string, Uint8Array | string>([[`${first.name}-filters.png`, await encodePng(grid)]]);
    if (o.has('data')) {
      const data = await validationSet(o);
      const count = o.int('count', data.size, 1);
      const engine = new Engine(model);
      try {
        const report = await filterReport(engine, data, { onProgress: new Progress('activity', Math.min(count, data.size), 'images').report, indices: Array.from({ length: Math.min(count, data.size) }, (_, i) => i) });
        const md = filterTableMarkdown(model.name, report.rows, report.images);
        files.set('filters.md', `${md}\n`);
        files.set('filters.json', JSON.stringify({ model: model.name, data: data.name, images: report.images, layers: report.rows }, null, 1));
        process.stdout.write(`${md}\n`);
      } finally {
        await engine.dispose();
      }
    }
    for (const [name, bytes] of files) writeFileAtomic(join(out, name), bytes);
    process.stdout.write(`wrote ${[...files.keys()].map((f) => join(out, f)).join(', ')}\n`);
  },
};

export const compareArchCommand: Command = {
  summary: 'train alexnet-small (11x11/4) and zfnet-small (7x7/2) on the same data and budget; Fig. 6 side by side',
  options: {
    ...DATA_OPTIONS,
    epochs: { value: true, help: 'epochs for each model (default 10)' },
    'batch-size': { value: true, help: 'mini-batch size (default 32)' },
    lr: { value: true, help: 'learning rate (default 0.01)' },
    seed: { value: true, help: 'seed of weights, order, dropout, augmentation (default 0)' },
    count: { value: true, help: 'validation images to measure activity on (default all)' },
    out: { value: true, help: 'output folder (default convscope-out/compare-arch)' },
    resume: { value: false, help: 'continue interrupted trainings from their checkpoints' },
    'zfnet-run': { value: true, help: 'a finished `convscope train` run of zfnet-small to use instead of training it; alexnet-small gets its settings' },
  },
  async run(o) {
    const epochs = o.int('epochs', 10, 1);
    const out = o.string('out', join('convscope-out', 'compare-arch'));
    const zfnetRun = o.string('zfnet-run');
    // The other architecture gets the finished run's recipe and data budget.
    const config = zfnetRun ? readTrainConfig(zfnetRun) : {
      ...PAPER_TRAINING,
      epochs,
      batchSize: o.int('batch-size', 32, 1),
      lr: o.number('lr', PAPER_TRAINING.lr),
      seed: o.int('seed', 0),
      snapshotEpochs: paperSnapshotEpochs(epochs),
    };
    const trainSet = await datasetFrom(o, 'train');
    const valSet = await validationSet(o);
    const count = Math.min(o.int('count', valSet.size, 1), valSet.size);
    const results = await compareArchitectures(trainSet, valSet, config, out, {
      log, resume: o.flag('resume'), activityIndices: Array.from({ length: count }, (_, i) => i),
      onRun: (name, dir) => ({
        onProgress: new Progress(`training ${name}`, 0, 'batches').report,
        onEpoch: (_, history) => writeTrainingCurves(dir, `${name} on ${trainSet.name}`, history),
        onActivityProgress: new Progress('activity', count, 'images').report,
      }),
      ...(zfnetRun ? { runs: { 'zfnet-small': zfnetRun } } : {}),
    });
    const acc = (v: number | undefined) => (v === undefined ? 'n/a' : `${(100 * v).toFixed(1)}%`);
    const figure = await architectureFigure(results.map((r) => {
      const conv1 = r.model.layers.find((l) => l.type === 'conv2d')!;
      const geometry = conv1.type === 'conv2d' ? `${conv1.kernel[0]}x${conv1.kernel[1]} stride ${conv1.stride[0]}` : '';
      return { title: `${r.name} (conv1 ${geometry}): validation accuracy ${acc(r.valAccuracy)}`, filters: filterImages(r.model, conv1.name), rows: r.rows };
    }));
    const md = results.map((r) => `### ${r.name}: validation accuracy ${acc(r.valAccuracy)}\n\n${filterTableMarkdown(r.name, r.rows, r.images)}`).join('\n\n');
    writeFileAtomic(join(out, 'fig6.png'), await encodePng(figure));
    writeFileAtomic(join(out, 'compare-arch.md'), `${md}\n`);
    writeFileAtomic(join(out, 'compare-arch.json'), JSON.stringify(results.map((r) => ({ model: r.name, valAccuracy: r.valAccuracy, history: r.history, layers: r.rows })), null, 1));
    process.stdout.write(`${md}\n\nwrote ${join(out, 'fig6.png')}, compare-arch.md, compare-arch.json\n`);
  },
};
