// `convscope train`: parses options and calls the trainer.
import { checkOutputDir } from '../util/fs.js';
import { join } from 'node:path';
import { skippedSummary } from '../data/batches.js';
import { loadModel } from '../model/load.js';
import type { InitScheme } from '../model/zoo.js';
import { paperSnapshotEpochs, parseSchedule } from '../train/optimizer.js';
import { PAPER_TRAINING, train, type TrainConfig } from '../train/trainer.js';
import { featureEvolution, loadSnapshots, type Snapshot } from '../analysis/evolution.js';
import { parseQueueUrl } from '../distributed/connection.js';
import { distributedTopk } from '../distributed/topk.js';
import { writeEvolution } from '../report/evolution.js';
import { writeTrainingCurves } from '../report/training.js';
import { Progress } from './progress.js';
import { UsageError, type Command, type Options } from './args.js';
import { DATA_OPTIONS, datasetFrom, layersOption, trainAndHeldOut } from './options.js';
import { notice, say } from './notices.js';

/** Initial weights of a zoo model (`--init`). */
export const INIT_SCHEMES: readonly InitScheme[] = ['kaiming', 'paper'];

export const trainCommand: Command = {
  summary: 'train a model the paper\'s way (SGD, momentum, dropout, filter renormalisation) with snapshots; --resume continues',
  options: {
    model: { value: true, help: 'zoo name or model file to train', default: 'zfnet-small' },
    ...DATA_OPTIONS,
    epochs: { value: true, help: 'epochs', default: 10 },
    out: { value: true, help: 'run folder: log.jsonl, curves.png, checkpoint, model.safetensors', default: join('convscope-out', 'train') },
    snapshots: { value: true, help: 'snapshot folder (default OUT/snapshots)' },
    'snapshot-epochs': { value: true, help: "epochs to snapshot, e.g. 1,2,5 (default: the paper's 1,2,5,10,20,30,40,64 scaled to --epochs)" },
    'batch-size': { value: true, help: 'mini-batch size; more steps per epoch learn faster on small data (the paper: 128)', default: 32 },
    lr: { value: true, help: 'learning rate; the default is the paper\'s', default: PAPER_TRAINING.lr },
    momentum: { value: true, help: 'momentum', default: PAPER_TRAINING.momentum },
    'weight-decay': { value: true, help: 'L2 weight decay on weights, not biases', default: PAPER_TRAINING.weightDecay },
    schedule: { value: true, help: 'learning-rate schedule: constant, step:EVERY:GAMMA or manual:EPOCH=LR,...', default: 'constant' },
    'renorm-cap': { value: true, help: "RMS cap of conv filters, or 'off'; the default is the paper's", default: PAPER_TRAINING.renormCap ?? 'off' },
    'no-dropout': { value: false, help: 'turn dropout off' },
    'no-flip': { value: false, help: 'no random horizontal flips' },
    crop: { value: true, help: 'random-crop margin in pixels: fit to size+N, crop size (the paper: 256 -> 224)', default: 0 },
    init: { value: true, help: 'zoo weights: kaiming or paper (N(0, 1e-2))', default: 'kaiming' },
    'raw-pixels': { value: false, help: 'do not divide inputs by the data\'s pixel spread (the paper\'s raw pixels; slower to start)' },
    seed: { value: true, help: 'seed of the initial weights, the batch order, dropout and augmentation', default: 0 },
    'checkpoint-every': { value: true, help: 'batches between checkpoints, and one at every epoch end', default: PAPER_TRAINING.checkpointEvery },
    resume: { value: false, help: 'continue from the checkpoint in OUT with the same options (saved every --checkpoint-every batches, every 30 s and at each epoch; none yet: start over)' },
  },
  async run(o) {
    const epochs = o.int('epochs', 1);
    const seed = o.int('seed');
    const renorm = o.required('renorm-cap');
    const renormCap = renorm === 'off' ? null : Number(renorm);
    if (renormCap !== null && !(renormCap > 0)) throw new UsageError(`--renorm-cap must be a positive number or 'off', got '${renorm}'`);
    const config: TrainConfig = {
      ...PAPER_TRAINING,
      epochs,
      batchSize: o.int('batch-size', 1),
      lr: o.number('lr'),
      momentum: o.number('momentum'),
      weightDecay: o.number('weight-decay'),
      schedule: parseSchedule(o.required('schedule')),
      renormCap,
      dropout: !o.flag('no-dropout'),
      seed,
      snapshotEpochs: o.numbers('snapshot-epochs') ?? paperSnapshotEpochs(epochs),
      augment: { randomCrop: o.int('crop', 0), cropMode: 'scale', flip: !o.flag('no-flip') },
      checkpointEvery: o.int('checkpoint-every', 1),
      meanImage: true,
      normalizeStd: !o.flag('raw-pixels'),
    };
    const model = loadModel(o.required('model'), { seed, init: o.choice('init', INIT_SCHEMES) });
    const { train: trainSet, heldOut: valSet } = await trainAndHeldOut(o);
    const outDir = o.required('out');
    checkOutputDir(outDir);
    notice(`training ${model.name} on ${trainSet.name} (${trainSet.size} images, ${trainSet.classes.length} classes), validating on ${valSet.name}`);
    const result = await train(model, trainSet, valSet, config, {
      outDir, snapshotDir: o.string('snapshots'), resume: o.flag('resume'), log: say,
      onProgress: new Progress('train', 0, 'batches').report,
      onEpoch: (_, history) => writeTrainingCurves(outDir, `${model.name} on ${trainSet.name}`, history),
    });
    const last = result.history[result.history.length - 1];
    if (result.skipped.length) say(skippedSummary(result.skipped));
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
    layers: { value: true, help: "layers to follow (default: five of the model's rectified feature maps, evenly spread over its depth: relu1..relu5 on ZFNet)" },
    features: { value: true, help: 'feature maps per layer, chosen at random', default: 8 },
    seed: { value: true, help: 'seed of the feature choice', default: 0 },
    out: { value: true, help: 'output folder', default: join('convscope-out', 'evolution') },
    queue: { value: true, help: "scan each snapshot on workers (convscope worker) through Redis, in shards of --shard-size images" },
    'shard-size': { value: true, help: 'with --queue: images per job', default: 1000 },
  },
  async run(o) {
    const snapshots = loadSnapshots(o.required('snapshots'));
    const data = await datasetFrom(o, 'train');
    const count = Math.min(o.has('count') ? o.int('count', 1) : data.size, data.size);
    const out = o.required('out');
    checkOutputDir(out);
    const indices = Array.from({ length: count }, (_, i) => i);
    const address = o.has('queue') ? parseQueueUrl(o.required('queue')) : undefined;
    const shardSize = o.int('shard-size', 1);
    const result = await featureEvolution(snapshots, data, {
      layers: layersOption(o, snapshots[0].model), features: o.int('features', 1), seed: o.int('seed'),
      indices,
      ...(address
        ? {
            scan: (snap: Snapshot, layers: string[]) =>
              distributedTopk({
                address, model: { path: snap.path, seed: 0 },
                data: { spec: o.required('data'), split: 'train', ...(o.string('data-path') ? { dataPath: o.string('data-path') } : {}) },
                layers, k: 9, perImage: 1, batchSize: 64, indices, shardSize,
              }),
          }
        : {}),
      onProgress: (_done, _total, note) => {
        if (note) say(note);
      },
    });
    const files = await writeEvolution(result, out);
    for (const l of result.layers) {
      process.stdout.write(`${l.layer}: ${l.convergedEpoch === null ? 'still changing at the last snapshot' : `stable from epoch ${l.convergedEpoch}`} (median correlation per step: ${l.medianCorrelation.map((c) => c.toFixed(2)).join(', ')})\n`);
    }
    process.stdout.write(`wrote ${files.length} files to ${out}/\n`);
  },
};
