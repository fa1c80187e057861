// `convscope probe` and `convscope ablate`: parse options, call src/analysis/probe.ts and ablate.ts, write the tables.
import { checkOutputDir } from '../util/fs.js';
import { skippedSummary } from '../data/batches.js';
import { hasOwnSplits, type Split } from '../data/dataset.js';
import { openFilteredDataset, splitClassSpec } from '../data/filter.js';
import { Landmarks } from '../model/landmarks.js';
import type { Model } from '../model/layers.js';
import { parseSchedule } from '../train/optimizer.js';
import { randomlyInitialised, runAblations } from '../analysis/ablate.js';
import { ablationFiles } from '../report/ablate.js';
import { writeTrainingCurves } from '../report/training.js';
import { runProbe, type LabelledProbe } from '../analysis/probe.js';
import { writeOutputs } from '../report/files.js';
import { probeFiles } from '../report/probe.js';
import { UsageError, type Options, type OptionSpec, type Command } from './args.js';
import { layersOption, MODEL_OPTIONS, modelFrom, trainAndHeldOut } from './options.js';
import { Progress } from './progress.js';
import { parseQueueUrl } from '../distributed/connection.js';
import { distributedFeatures } from '../distributed/probe.js';
import { notice, say } from './notices.js';

const DATA_PATH: Record<string, OptionSpec> = {
  'data-path': { value: true, help: "where a named dataset's files are (default for fashion-mnist: /usr/share/datasets/fashion-mnist)" },
};

const SPEC_HELP = "shapes (e.g. shapes:count=2000,classes=6-9), fashion-mnist, a folder or IDX files; ',classes=LIST' or ':classes=LIST' at the end keeps those classes";


function openSpec(o: Options, key: string, split: Split) {
  const dataPath = o.string('data-path');
  return openFilteredDataset(o.required(key), { split, ...(dataPath ? { data: dataPath } : {}) });
}

function positiveInts(o: Options, key: string): number[] {
  const v = o.numbers(key);
  if (v === undefined) throw new UsageError(`${o.command} needs --${key}`);
  if (v.some((n) => !(Number.isInteger(n) && n > 0))) throw new UsageError(`--${key} must be positive integers, got ${v.join(',')}`);
  return v;
}

export const probeCommand: Command = {
  summary: 'transfer (paper Sec. 5): a linear softmax on frozen features of each layer, for N images per class; table and plot',
  options: {
    ...MODEL_OPTIONS,
    train: { value: true, help: `dataset to draw the probe's training images from (its train split): ${SPEC_HELP}` },
    test: { value: true, help: 'dataset to test on (its test split; shapes:split=val picks another); same classes as --train; the same plain folder as --train is cut 80/20 (seed 0, printed)' },
    ...DATA_PATH,
    layers: { value: true, help: "layers to probe (default: one per level of depth from the model's graph; relu1..relu7 on ZFNet, the paper's 7 layers; a ResNet's stage outputs and pooled features)" },
    'per-class': { value: true, help: 'training images per class, comma-separated; the default is the paper\'s Caltech-101 sizes', default: '15,30' },
    splits: { value: true, help: 'random draws of the training images; mean ± std over them', default: 5 },
    seed: { value: true, help: 'seed of the draws, the test subset and the --baseline weights', default: 0 },
    pool: { value: true, help: 'conv maps are average-pooled to at most K x K positions', default: 4 },
    l2: { value: true, help: 'L2 penalty λ of the softmax on standardised features: mean cross-entropy + λ/2 |W|², see docs/probes.md', default: 1 },
    'max-test': { value: true, help: 'test on a seeded subset of at most N images (default: the whole test set)' },
    baseline: { value: false, help: 'also probe the same architecture with random (He) weights: the "no pretraining" baseline' },
    'batch-size': { value: true, help: 'images per forward pass', default: 64 },
    queue: { value: true, help: 'extract the features on workers (convscope worker) through Redis, in shards of --shard-size images' },
    'shard-size': { value: true, help: 'with --queue: images per job', default: 1000 },
    out: { value: true, help: 'output folder: probe.md, probe.json, probe.png' },
  },
  async run(o) {
    const out = o.required('out');
    checkOutputDir(out);
    const model = modelFrom(o);
    const seed = o.int('seed');
    // The same one-split folder for both is cut in two, or the probe would test on the images it was fitted on.
    const cut = o.required('train') === o.required('test') && !hasOwnSplits(splitClassSpec(o.required('train')).base) ? await trainAndHeldOut(o, 'train') : undefined;
    const trainSet = cut?.train ?? (await openSpec(o, 'train', 'train'));
    const testSet = cut?.heldOut ?? (await openSpec(o, 'test', 'test'));
    const options = {
      layers: layersOption(o, model) ?? new Landmarks(model).levels(),
      perClass: positiveInts(o, 'per-class'),
      splits: o.int('splits', 1),
      seed,
      pool: o.int('pool', 1),
      l2: o.number('l2'),
      maxTest: o.has('max-test') ? o.int('max-test', 1) : undefined,
      batchSize: o.int('batch-size', 1),
      log: say,
    };
    if (!(options.l2 >= 0)) throw new UsageError(`--l2 must be >= 0, got ${options.l2}`);
    const fits = options.layers.length * options.perClass.length * options.splits * (o.flag('baseline') ? 2 : 1);
    notice(
      `probing ${model.name}: train on ${options.perClass.join(' and ')} images per class of ${trainSet.name} (${options.splits} seeded draws), ` +
        `test on ${Math.min(testSet.size, options.maxTest ?? Infinity)} images of ${testSet.name}; layers ${options.layers.join(',')}; ` +
        `${fits} classifier fits${o.flag('baseline') ? ' (half on random-init features)' : ''}`,
    );
    // With --queue the workers extract the features: they load the model from its path (and re-initialise it for the
    // baseline) and open the same specs.
    const address = o.has('queue') ? parseQueueUrl(o.required('queue')) : undefined;
    const shardSize = o.int('shard-size', 1);
    const onQueue = (reinit?: number) =>
      address && {
        extract: async (which: 'train' | 'test', _ds: unknown, indices: number[]) => {
          // Workers open the whole folder: a cut's indices go to them as the folder's and come back as the cut's.
          const inFolder = cut?.indices && (which === 'train' ? cut.indices.train : cut.indices.heldOut);
          const set = await distributedFeatures({
            address, indices: inFolder ? indices.map((i) => inFolder[i]) : indices, layers: options.layers, pool: options.pool, batchSize: options.batchSize, shardSize,
            model: { path: o.required('model'), seed: o.int('model-seed'), mean: o.numbers('mean'), std: o.numbers('std'), ...(reinit === undefined ? {} : { reinit }) },
            data: { spec: o.required(which), split: which, ...(o.string('data-path') ? { dataPath: o.string('data-path') } : {}) },
          });
          if (!inFolder) return set;
          const back = new Map(inFolder.map((f, i) => [f, i]));
          return { ...set, indices: set.indices.map((f) => back.get(f)!), skipped: set.skipped.map((k) => ({ ...k, index: back.get(k.index)! })) };
        },
      };
    const bar = () => ({ onProgress: new Progress('probe features', 0, 'images').report });
    const runs: LabelledProbe[] = [{ label: 'trained', result: await runProbe(model, trainSet, testSet, { ...options, ...bar(), ...onQueue() }) }];
    if (o.flag('baseline')) runs.push({ label: 'random init', result: await runProbe(randomlyInitialised(model, seed), trainSet, testSet, { ...options, ...bar(), ...onQueue(seed) }) });
    const { files, markdown } = await probeFiles(runs, `Linear probes: ${model.name} -> ${testSet.name}`);
    writeOutputs(out, files);
    const skipped = runs[0].result.skipped;
    if (skipped.length) say(skippedSummary(skipped));
    process.stdout.write(`${markdown}\nwrote probe.md, probe.json and probe.png to ${out}/\n`);
  },
};

/** Where the ablated models start (`--start`): the trained weights, fine-tuned, or He init. */
export const ABLATION_STARTS = ['trained', 'scratch'] as const;

export const ablateCommand: Command = {
  summary: 'layer ablation (paper Table 3): remove layers, adapt their neighbours, retrain briefly, compare errors',
  options: {
    ...MODEL_OPTIONS,
    data: { value: true, help: `dataset: its train split retrains, its val split (test where there is none) measures; a plain folder is cut 80/20 (seed 0, printed): ${SPEC_HELP}` },
    ...DATA_PATH,
    remove: { value: true, help: "layers to remove, one ablation per '/'-separated group, e.g. fc7/fc6,fc7/conv3,conv4,fc6,fc7" },
    epochs: { value: true, help: 'retraining epochs for every model, the full one included', default: 2 },
    start: { value: true, help: 'trained (fine-tune: kept layers keep their weights) or scratch (every model from He init)', default: 'trained' },
    lr: { value: true, help: 'learning rate', default: 0.01 },
    schedule: { value: true, help: 'learning-rate schedule: constant, step:EVERY:GAMMA or manual:EPOCH=LR,...', default: 'constant' },
    'batch-size': { value: true, help: 'mini-batch size', default: 64 },
    seed: { value: true, help: 'seed of new weights, batch order, dropout', default: 0 },
    out: { value: true, help: 'output folder: ablation.md, ablation.json, one run folder per model' },
  },
  async run(o) {
    const out = o.required('out');
    checkOutputDir(out);
    const ablations = o.required('remove').split('/').map((group) => group.split(',').map((s) => s.trim()).filter((s) => s.length > 0));
    if (ablations.some((a) => a.length === 0)) throw new UsageError(`--remove has an empty group: '${o.required('remove')}'`);
    const model = modelFrom(o);
    const { train: trainSet, heldOut: valSet } = await trainAndHeldOut(o);
    const result = await runAblations(model, trainSet, valSet, {
      ablations,
      epochs: o.int('epochs', 1),
      start: o.choice('start', ABLATION_STARTS),
      lr: o.number('lr'),
      schedule: parseSchedule(o.required('schedule')),
      batchSize: o.int('batch-size', 1),
      seed: o.int('seed'),
    }, {
      outDir: out, log: say,
      onRun: (name, dir) => ({
        onProgress: new Progress(`retrain ${name}`, 0, 'batches').report,
        onEpoch: (_, history) => writeTrainingCurves(dir, `${name} on ${trainSet.name}`, history),
      }),
    });
    const { files, markdown } = ablationFiles(result);
    writeOutputs(out, files);
    process.stdout.write(`${markdown}\nwrote ablation.md and ablation.json to ${out}/\n`);
  },
};
