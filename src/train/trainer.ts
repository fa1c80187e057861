// Training the paper's way (Sec. 3): SGD with momentum on the compiled train-step graph, dropout, filter
// renormalisation, snapshots at chosen epochs, and checkpoints that resume to the same weights.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Augment } from '../data/augment.js';
import { batches, seededPermutation } from '../data/batches.js';
import { computePixelStats } from '../data/pixel-stats.js';
import { mixSeed, requireLabels, type Dataset, type Skipped } from '../data/dataset.js';
import { Engine } from '../engine/engine.js';
import { logitsLayer } from '../engine/graphs.js';
import { trainedWeights, type Model } from '../model/layers.js';
import { decodeSafetensors, encodeSafetensors, modelToSafetensors } from '../model/safetensors.js';
import { inferShapes } from '../model/shapes.js';
import { sizeOf, type Tensor } from '../tensor.js';
import { writeFileAtomic } from '../util/fs.js';
import { compactJson } from '../util/json.js';
import type { OnProgress } from '../util/progress.js';
import { Rng } from '../util/random.js';
import { learningRate, renormalizeFilters, Sgd, type LrSchedule } from './optimizer.js';

export interface TrainConfig {
  epochs: number;
  batchSize: number;
  lr: number;
  momentum: number;
  weightDecay: number;
  schedule: LrSchedule;
  /** RMS cap of conv filters (the paper: 0.1); null turns renormalisation off. */
  renormCap: number | null;
  /** Dropout as the model's layers say (true), or off. */
  dropout: boolean;
  seed: number;
  /** Epochs (1-based) after which a snapshot is saved. */
  snapshotEpochs: number[];
  augment: Augment;
  /** Save a checkpoint every this many batches (and at every epoch's end). */
  checkpointEvery: number;
  /** Subtract the training set's per-pixel mean image (the paper) before training starts. */
  meanImage: boolean;
  /**
   * Divide inputs by the training set's per-channel pixel spread. Not the paper's (raw pixels, N(0, 1e-2) weights, 70
   * GPU epochs): with He-initialised weights it lets a small CPU budget start learning in the first epoch.
   */
  normalizeStd: boolean;
}

export const PAPER_TRAINING: Omit<TrainConfig, 'epochs' | 'snapshotEpochs'> = {
  batchSize: 128,
  lr: 0.01,
  momentum: 0.9,
  weightDecay: 5e-4,
  schedule: { kind: 'constant' },
  renormCap: 0.1,
  dropout: true,
  seed: 0,
  augment: { randomCrop: 0, flip: true },
  checkpointEvery: 50,
  meanImage: true,
  normalizeStd: true,
};

export interface EpochLog {
  epoch: number;
  lr: number;
  trainLoss: number;
  trainAccuracy: number;
  valLoss?: number;
  valAccuracy?: number;
  seconds: number;
  /** Filters renormalised during the epoch. */
  renormalized: number;
}

export interface TrainResult {
  model: Model;
  history: EpochLog[];
  skipped: Skipped[];
  snapshots: string[];
}

export interface TrainRunOptions {
  /** Run folder: log.jsonl, checkpoint.*, model.safetensors. */
  outDir: string;
  /** Where snapshots go; default `<outDir>/snapshots`. */
  snapshotDir?: string;
  /** Continue from the checkpoint in outDir. */
  resume?: boolean;
  log?: (line: string) => void;
  /** Batches done of the whole run (resumed batches count as done), with the epoch and running loss as the note. */
  onProgress?: OnProgress;
  /** Called after each epoch (after its snapshot, checkpoint and log are on disk), with the history so far. */
  onEpoch?: (entry: EpochLog, history: EpochLog[]) => void | Promise<void>;
  /** Stop after this many batches of the whole run (tests simulate a kill with it). */
  stopAfterBatches?: number;
  /** Also checkpoint when this many seconds passed since the last one (default 30), so a kill loses little. */
  checkpointSeconds?: number;
}

interface Checkpoint {
  config: TrainConfig;
  /** Next batch to run: epoch (1-based) and batch index within it. */
  epoch: number;
  batch: number;
  /** Accumulators of the epoch in progress. */
  lossSum: number;
  correct: number;
  seen: number;
  renormalized: number;
  elapsed: number;
  history: EpochLog[];
  snapshots: string[];
  skipped: Skipped[];
  /** The input divisor chosen at the start (the mean image travels with the weights). */
  std: number[];
}

const CHECKPOINT_JSON = 'checkpoint.json';
const CHECKPOINT_WEIGHTS = 'checkpoint.safetensors';
const VELOCITY = 'velocity.';

export function snapshotPath(snapshotDir: string, epoch: number): string {
  return join(snapshotDir, `epoch-${String(epoch).padStart(3, '0')}.safetensors`);
}

/** Dropout masks for one batch: Bernoulli(1-p) scaled by 1/(1-p), from the batch's own seeded stream. */
function dropoutMasks(model: Model, n: number, seed: number): Map<string, Tensor> {
  const rng = new Rng(seed);
  const infos = inferShapes(model);
  const masks = new Map<string, Tensor>();
  model.layers.forEach((layer, i) => {
    if (layer.type !== 'dropout') return;
    const shape = [n, ...infos[i].outShape];
    const data = new Float32Array(sizeOf(shape));
    const keep = 1 - layer.p;
    for (let j = 0; j < data.length; j++) data[j] = rng.next() < keep ? 1 / keep : 0;
    masks.set(layer.name, { shape, data });
  });
  return masks;
}

function argmaxCorrect(logits: Tensor, labels: Int32Array): number {
  const k = logits.shape[1];
  let correct = 0;
  labels.forEach((label, i) => {
    let best = 0;
    for (let c = 1; c < k; c++) if (logits.data[i * k + c] > logits.data[i * k + best]) best = c;
    if (best === label) correct++;
  });
  return correct;
}

function crossEntropySum(logits: Tensor, labels: Int32Array): number {
  const k = logits.shape[1];
  let total = 0;
  labels.forEach((label, i) => {
    const row = logits.data.subarray(i * k, (i + 1) * k);
    const max = Math.max(...row);
    let z = 0;
    for (const v of row) z += Math.exp(v - max);
    total += Math.log(z) + max - row[label];
  });
  return total;
}

/** Loss and accuracy of a model's current weights on a dataset (dropout off). */
export async function evaluateDataset(engine: Engine, weights: Map<string, Tensor>, ds: Dataset, batchSize = 256): Promise<{ loss: number; accuracy: number; skipped: Skipped[] }> {
  let loss = 0;
  let correct = 0;
  let seen = 0;
  const stream = batches(ds, { input: engine.model.input, preprocess: engine.model.preprocess, batchSize });
  for await (const b of stream) {
    const logits = await engine.evaluate(b.input, weights);
    loss += crossEntropySum(logits, b.labels);
    correct += argmaxCorrect(logits, b.labels);
    seen += b.labels.length;
  }
  return { loss: loss / Math.max(seen, 1), accuracy: correct / Math.max(seen, 1), skipped: stream.skipped };
}

function configKey(c: TrainConfig): string {
  const { checkpointEvery: _ignored, ...rest } = c;
  return JSON.stringify(rest);
}

function saveCheckpoint(dir: string, model: Model, sgd: Sgd, state: Checkpoint): void {
  const tensors = new Map(model.weights);
  for (const [key, v] of sgd.velocity) tensors.set(`${VELOCITY}${key}`, { shape: model.weights.get(key)!.shape, data: v });
  if (model.preprocess.meanImage) tensors.set('preprocess.mean_image', model.preprocess.meanImage);
  // One file is the checkpoint: the state travels in the weights' metadata, so a single rename replaces both and a
  // kill at any point leaves the previous checkpoint or the new one whole. checkpoint.json is a readable copy.
  const step = `${state.epoch}:${state.batch}`;
  writeFileAtomic(join(dir, CHECKPOINT_WEIGHTS), encodeSafetensors(tensors, { step, state: JSON.stringify(state) }));
  writeFileAtomic(join(dir, CHECKPOINT_JSON), compactJson({ ...state, step }));
}

/** The settings a run in `dir` was started with (from its checkpoint). */
export function readTrainConfig(dir: string): TrainConfig {
  const jsonPath = join(dir, CHECKPOINT_JSON);
  if (!existsSync(jsonPath)) throw new Error(`${dir} holds no convscope training run (no ${CHECKPOINT_JSON})`);
  return (JSON.parse(readFileSync(jsonPath, 'utf8')) as Checkpoint).config;
}

/** Whether `dir` holds a checkpoint to resume from. */
function hasCheckpoint(dir: string): boolean {
  return existsSync(join(dir, CHECKPOINT_WEIGHTS));
}

function loadCheckpoint(dir: string, model: Model, sgd: Sgd, config: TrainConfig): Checkpoint {
  const { tensors, metadata } = decodeSafetensors(readFileSync(join(dir, CHECKPOINT_WEIGHTS)), join(dir, CHECKPOINT_WEIGHTS));
  let state: Checkpoint;
  if (metadata.state !== undefined) state = JSON.parse(metadata.state) as Checkpoint;
  else {
    // A checkpoint of an earlier version: its state is in checkpoint.json, which must name the weights' step.
    const jsonPath = join(dir, CHECKPOINT_JSON);
    const json = existsSync(jsonPath) ? (JSON.parse(readFileSync(jsonPath, 'utf8')) as Checkpoint & { step: string }) : undefined;
    if (!json || metadata.step !== json.step) throw new Error(`--resume: ${dir} holds a checkpoint interrupted while being written; start again without --resume`);
    state = json;
  }
  if (configKey(state.config) !== configKey(config)) {
    throw new Error(`--resume: the checkpoint in ${dir} was made with other settings (${configKey(state.config)}); resume with the same options`);
  }
  for (const [key, w] of model.weights) {
    const saved = tensors.get(key);
    if (!saved) throw new Error(`--resume: checkpoint lacks '${key}'`);
    w.data.set(saved.data);
  }
  // Momentum for the trained weights; running statistics have none.
  for (const [key, velocity] of sgd.velocity) {
    const v = tensors.get(`${VELOCITY}${key}`);
    if (!v) throw new Error(`--resume: checkpoint lacks the momentum of '${key}'`);
    velocity.set(v.data);
  }
  const mean = tensors.get('preprocess.mean_image');
  if (mean) model.preprocess.meanImage = mean;
  model.preprocess.std = state.std;
  return state;
}

function writeHistory(dir: string, history: EpochLog[]): void {
  writeFileAtomic(join(dir, 'log.jsonl'), history.map((h) => JSON.stringify(h)).join('\n') + '\n');
}

/**
 * Trains `model` in place on `trainSet`, evaluating on `valSet` after every epoch. Writes log.jsonl,
 * checkpoint.* and model.safetensors to `outDir`, snapshots (epoch-NNN.safetensors + .json) to `snapshotDir`. With
 * `resume`, continues from the last checkpoint and ends with the same weights as an uninterrupted run.
 */
export async function train(model: Model, trainSet: Dataset, valSet: Dataset | undefined, config: TrainConfig, run: TrainRunOptions): Promise<TrainResult> {
  const hooks = run;
  const { outDir } = run;
  const snapshotDir = run.snapshotDir ?? join(outDir, 'snapshots');
  const log = hooks.log ?? (() => {});
  requireLabels(trainSet, 'training');
  if (trainSet.classes.length > inferShapes(model)[logitsLayer(model)].outShape[0]) {
    throw new Error(`${trainSet.name} has ${trainSet.classes.length} classes, model ${model.name} outputs ${inferShapes(model)[logitsLayer(model)].outShape[0]}`);
  }
  mkdirSync(outDir, { recursive: true });
  const sgd = new Sgd(model.weights, trainedWeights(model.layers));
  let state: Checkpoint;
  const resume = run.resume === true && hasCheckpoint(outDir);
  // A run killed before its first checkpoint has nothing to continue: it starts over, and says so.
  if (run.resume && !resume) log(`no checkpoint in ${outDir} yet: starting from the beginning`);
  if (resume) {
    state = loadCheckpoint(outDir, model, sgd, config);
    log(`resuming at epoch ${state.epoch}, batch ${state.batch}`);
  } else {
    if (config.meanImage || config.normalizeStd) {
      log(`computing the per-pixel mean image of ${trainSet.name} (${trainSet.size} images)`);
      const stats = await computePixelStats(trainSet, model.input);
      if (config.meanImage) model.preprocess.meanImage = stats.meanImage;
      if (config.normalizeStd) model.preprocess.std = stats.channelStd.map((s) => Math.max(s, 1));
    }
    if (config.renormCap !== null) renormalizeFilters(model.layers, model.weights, config.renormCap);
    state = { config, epoch: 1, batch: 0, lossSum: 0, correct: 0, seen: 0, renormalized: 0, elapsed: 0, history: [], snapshots: [], skipped: [], std: model.preprocess.std };
  }
  model.classes = trainSet.classes;
  const engine = new Engine(model);
  const perEpoch = Math.ceil(trainSet.size / config.batchSize);
  let batchesRun = 0;
  const checkpointMs = 1000 * (run.checkpointSeconds ?? 30);
  let lastCheckpoint = Date.now();
  try {
    while (state.epoch <= config.epochs) {
      const epoch = state.epoch;
      const lr = learningRate(config.lr, config.schedule, epoch);
      const order = seededPermutation(trainSet.size, mixSeed(config.seed, epoch));
      const started = Date.now() - state.elapsed * 1000;
      const stream = batches(trainSet, {
        input: model.input, preprocess: model.preprocess, batchSize: config.batchSize, indices: order,
        augment: config.augment, seed: mixSeed(config.seed, epoch, 1), startBatch: state.batch,
      });
      for await (const b of stream) {
        const masks = config.dropout ? dropoutMasks(model, b.labels.length, mixSeed(config.seed, epoch, b.batch, 2)) : new Map();
        const step = await engine.trainStep(b.input, b.labels, model.weights, { dropoutMasks: masks });
        if (!Number.isFinite(step.loss)) throw new Error(`training diverged: loss ${step.loss} at epoch ${epoch}, batch ${b.batch}; lower --lr`);
        sgd.step(model.weights, step.grads, { lr, momentum: config.momentum, weightDecay: config.weightDecay });
        for (const [key, v] of step.statistics) model.weights.get(key)!.data.set(v);
        if (config.renormCap !== null) state.renormalized += renormalizeFilters(model.layers, model.weights, config.renormCap);
        state.lossSum += step.loss * b.labels.length;
        state.correct += argmaxCorrect(step.logits, b.labels);
        state.seen += b.labels.length;
        state.skipped.push(...b.skipped);
        state.batch = b.batch + 1;
        batchesRun++;
        hooks.onProgress?.((epoch - 1) * perEpoch + state.batch, config.epochs * perEpoch, `epoch ${epoch}/${config.epochs} loss ${(state.lossSum / state.seen).toFixed(3)}`);
        if (hooks.stopAfterBatches !== undefined && batchesRun >= hooks.stopAfterBatches) {
          state.elapsed = (Date.now() - started) / 1000;
          saveCheckpoint(outDir, model, sgd, state);
          return { model, history: state.history, skipped: state.skipped, snapshots: state.snapshots };
        }
        if ((state.batch % config.checkpointEvery === 0 || Date.now() - lastCheckpoint >= checkpointMs) && state.batch < perEpoch) {
          state.elapsed = (Date.now() - started) / 1000;
          saveCheckpoint(outDir, model, sgd, state);
          lastCheckpoint = Date.now();
        }
      }
      const val = valSet ? await evaluateDataset(engine, model.weights, valSet) : undefined;
      const entry: EpochLog = {
        epoch, lr,
        trainLoss: state.lossSum / Math.max(state.seen, 1),
        trainAccuracy: state.correct / Math.max(state.seen, 1),
        ...(val ? { valLoss: val.loss, valAccuracy: val.accuracy } : {}),
        seconds: (Date.now() - started) / 1000,
        renormalized: state.renormalized,
      };
      state.history.push(entry);
      log(`epoch ${epoch}: loss ${entry.trainLoss.toFixed(4)}, train accuracy ${(100 * entry.trainAccuracy).toFixed(1)}%` +
        (val ? `, validation accuracy ${(100 * val.accuracy).toFixed(1)}%` : '') + ` (${entry.seconds.toFixed(1)} s)`);
      if (config.snapshotEpochs.includes(epoch)) {
        const path = snapshotPath(snapshotDir, epoch);
        writeFileAtomic(path, modelToSafetensors(model));
        writeFileAtomic(path.replace(/\.safetensors$/, '.json'), compactJson(entry));
        state.snapshots.push(path);
      }
      Object.assign(state, { epoch: epoch + 1, batch: 0, lossSum: 0, correct: 0, seen: 0, renormalized: 0, elapsed: 0 });
      saveCheckpoint(outDir, model, sgd, state);
      lastCheckpoint = Date.now();
      writeHistory(outDir, state.history);
      await hooks.onEpoch?.(entry, state.history);
    }
    writeFileAtomic(join(outDir, 'model.safetensors'), modelToSafetensors(model));
    return { model, history: state.history, skipped: state.skipped, snapshots: state.snapshots };
  } finally {
    await engine.dispose();
  }
}
