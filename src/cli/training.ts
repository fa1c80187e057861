// `convscope train`: parses options and calls the trainer.
import { join } from 'node:path';
import { skippedSummary } from '../data/batches.js';
import { loadModel } from '../model/load.js';
import { paperSnapshotEpochs, parseSchedule } from '../train/optimizer.js';
import { PAPER_TRAINING, train, type TrainConfig } from '../train/trainer.js';
import { featureEvolution, loadSnapshots } from '../analysis/evolution.js';
import { writeEvolution } from '../report/evolution.js';
import { writeTrainingCurves } from '../report/training.js';
import { Progress } from './progress.js';
import { UsageError, type Command, type Options } from './args.js';
import { DATA_OPTIONS, datasetFrom, validationSet } from './options.js';

export const trainCommand: Command = {
  summary: 'train a model the paper\'s way (SGD, momentum, dropout, filter renormalisation) with snapshots; --resume continues',
  options: {
    model: { value: true, help: 'zoo name or model file to train (default zfnet-small)' },
    ...DATA_OPTIONS,
    epochs: { value: true, help: 'epochs (default 10)' },
    out: { value: true, help: 'run folder: log.jsonl, curves.png, checkpoint, model.safetensors (default convscope-out/train)' },
    snapshots: { value: true, help: 'snapshot folder (default OUT/snapshots)' },
    'snapshot-epochs': { value: true, help: "epochs to snapshot, e.g. 1,2,5 (default: the paper's 1,2,5,10,20,30,40,64 scaled to --epochs)" },
    'batch-size': { value: true, help: 'mini-batch size (default 32: more steps per epoch learn faster on small data; the paper: 128)' },
    lr: { value: true, help: 'learning rate (default 0.01, the paper\'s)' },
    momentum: { value: true, help: 'momentum (default 0.9)' },
    'weight-decay': { value: true, help: 'L2 weight decay on weights, not biases (default 5e-4)' },
    schedule: { value: true, help: 'learning-rate schedule: constant (default), step:EVERY:GAMMA, manual:EPOCH=LR,...' },
    'renorm-cap': { value: true, help: "RMS cap of conv filters (default 0.1, the paper's) or 'off'" },
    'no-dropout': { value: false, help: 'turn dropout off' },
    'no-flip': { value: false, help: 'no random horizontal flips' },
    crop: { value: true, help: 'random-crop margin in pixels: fit to size+N, crop size (the paper: 256 -> 224; default 0)' },
    init: { value: true, help: "zoo weights: kaiming (default) or paper (N(0, 1e-2))" },
    'raw-pixels': { value: false, help: 'do not divide inputs by the data\'s pixel spread (the paper\'s raw pixels; slower to start)' },
    seed: { value: true, help: 'seed of the initial weights, the batch order, dropout and augmentation (default 0)' },
    'checkpoint-every': { value: true, help: 'batches between checkpoints (default 50; also at every epoch end)' },
    resume: { value: false, help: 'continue from the checkpoint in OUT with the same options' },
  },
  async run(o) {
    const epochs = o.int('epochs', 10, 1);
    const seed = o.int('seed', 0);
    const renorm = o.string('renorm-cap', '0.1');
    const renormCap = renorm === 'off' ? null : Number(renorm);
    if (renormCap !== null && !(renormCap > 0)) throw new UsageError(`--renorm-cap must be a positive number or 'off', got '${renorm}'`);
    const config: TrainConfig = {
      ...PAPER_TRAINING,
      epochs,
      batchSize: o.int('batch-size', 32, 1),
      lr: o.number('lr', PAPER_TRAINING.lr),
      momentum: o.number('momentum', PAPER_TRAINING.momentum),
      weightDecay: o.number('weight-decay', PAPER_TRAINING.weightDecay),
      schedule: parseSchedule(o.string('schedule', 'constant')),
      renormCap,
      dropout: !o.flag('no-dropout'),
      seed,
      snapshotEpochs: o.numbers('snapshot-epochs') ?? paperSnapshotEpochs(epochs),
      augment: { randomCrop: o.int('crop', 0, 0), cropMode: 'scale', flip: !o.flag('no-flip') },
      checkpointEvery: o.int('checkpoint-every', PAPER_TRAINING.checkpointEvery, 1),
      meanImage: true,
      normalizeStd: !o.flag('raw-pixels'),
    };
    const model = loadModel(o.string('model', 'zfnet-small'), { seed, init: o.choice('init', ['kaiming', 'paper'] as const, 'kaiming') });
    const trainSet = await datasetFrom(o, 'train');
    const valSet = await validationSet(o);
    const outDir = o.string('out', join('convscope-out', 'train'));
    const log = (line: string) => process.stderr.write(`${line}\n`);
    log(`training ${model.name} on ${trainSet.name} (${trainSet.size} images, ${trainSet.classes.length} classes), validating on ${valSet.name}`);
    const result = await train(model, trainSet, valSet, config, {
      outDir, snapshotDir: o.string('snapshots'), resume: o.flag('resume'), log,
      onProgress: new Progress('train', 0, 'batches').report,
      onEpoch: (_, history) => writeTrainingCurves(outDir, `${model.name} on ${trainSet.name}`, history),
    });
    const last = result.history[result.history.length - 1];
    if (result.skipped.length) log(skippedSummary(result.skipped));
    process.stdout.write(
      `trained ${model.name}: validation accuracy ${last?.valAccuracy !== undefined ? (100 * last.valAccuracy).toFixed(1) + '%' : 'n/a'}; ` +
        `wrote ${join(outDir, 'model.safetensors')}, ${result.snapshots.length} snapshots, log.jsonl and curves.png\n`,
    );
  },
};

export const evolveCommand: Command = {
  summary: 'feature evolution during training (Fig. 4): per layer, features x snapshots, and when each layer settles',
  options: {
    snapshots: { value: true, help: 'folder of snapshots (.safetensors or .onnx of one architecture), e.g. OUT/snapshots of convscope train' },
    ...DATA_OPTIONS,
    count: { value: true, help: 'scan only the first N images of the training split (default all)' },
    layers: { value: true, help: 'layers to follow (default the rectified conv maps relu1..relu5)' },
    features: { value: true, help: 'feature maps per layer, chosen at random (default 8)' },
    seed: { value: true, help: 'seed of the feature choice (default 0)' },
    out: { value: true, help: 'output folder (default convscope-out/evolution)' },
  },
  async run(o) {
    const snapshots = loadSnapshots(o.required('snapshots'));
    const data = await datasetFrom(o, 'train');
    const count = Math.min(o.int('count', data.size, 1), data.size);
    const out = o.string('out', join('convscope-out', 'evolution'));
    const result = await featureEvolution(snapshots, data, {
      layers: o.string('layers')?.split(','), features: o.int('features', 8, 1), seed: o.int('seed', 0),
      indices: Array.from({ length: count }, (_, i) => i),
      onProgress: (_done, _total, note) => {
        if (note) process.stderr.write(`${note}\n`);
      },
    });
    const files = await writeEvolution(result, out);
    for (const l of result.layers) {
      process.stdout.write(`${l.layer}: ${l.convergedEpoch === null ? 'still changing at the last snapshot' : `stable from epoch ${l.convergedEpoch}`} (median correlation per step: ${l.medianCorrelation.map((c) => c.toFixed(2)).join(', ')})\n`);
    }
    process.stdout.write(`wrote ${files.length} files to ${out}/\n`);
  },
};
