// Layer ablation (Zeiler & Fergus Table 3): remove named layers, adapt the layers that now receive a different
// input, retrain briefly, and compare with the full model trained the same way.
import { join } from 'node:path';
import type { Dataset } from '../data/dataset.js';
import { Engine } from '../engine/engine.js';
import { logitsLayer } from '../engine/graphs.js';
import { findLayer, layerParams, validateModel, type Layer, type Model } from '../model/layers.js';
import { inferShapes } from '../model/shapes.js';
import { initWeights, type InitScheme } from '../model/zoo.js';
import { sizeOf, type Tensor } from '../tensor.js';
import type { LrSchedule } from '../train/optimizer.js';
import { PAPER_TRAINING, evaluateDataset, train, type TrainConfig, type TrainRunOptions } from '../train/trainer.js';

const hasWeights = (l: Layer): boolean => l.type === 'conv2d' || l.type === 'linear';

function copyWeights(weights: Map<string, Tensor>): Map<string, Tensor> {
  return new Map([...weights].map(([k, t]) => [k, { shape: [...t.shape], data: t.data.slice() }]));
}

/**
 * The same architecture and preprocessing with fresh weights (He initialisation by default, as `convscope train`
 * starts): the "no pretraining" baseline of a probe, and the start of a from-scratch ablation run.
 */
export function randomlyInitialised(model: Model, seed: number, init: InitScheme = 'kaiming'): Model {
  return {
    ...model,
    name: `${model.name}-random-init`,
    layers: model.layers.map((l) => ({ ...l })),
    weights: initWeights(model.layers, init, seed),
    preprocess: { ...model.preprocess },
  };
}

export interface Ablation {
  model: Model;
  /** Every layer taken out: the named ones and the ReLU/dropout layers that belonged to a removed conv or linear layer. */
  removed: string[];
  /**
   * Layers given new weights: the first conv or linear layer whose input changed (its size, or a weight layer below it
   * was removed) and every conv or linear layer above it, whose inputs are then new features too.
   */
  reinitialised: string[];
}

/** The named layers plus, for each named conv or linear layer, the ReLU and dropout layers right after it. */
function expandRemoval(model: Model, names: readonly string[]): Set<string> {
  const out = new Set<string>();
  for (const name of names) {
    const { layer, index } = findLayer(model, name);
    out.add(name);
    if (!hasWeights(layer)) continue;
    for (let j = index + 1; j < model.layers.length && ['relu', 'dropout'].includes(model.layers[j].type); j++) out.add(model.layers[j].name);
  }
  return out;
}

/**
 * A copy of `model` without the named layers. Named conv/linear layers take their ReLU and dropout with them. A kept
 * conv or linear layer whose input size changed is resized. From the first weight layer whose input changed (resized,
 * or above a removed weight layer) upwards, every conv and linear layer gets fresh weights (`init`, `seed`): weights
 * tuned to features that no longer exist would only be a worse random start. The layers below keep their weights.
 * Examples (zfnet-small): without fc6, fc7, flatten feeds a new fc8; without conv3, conv4, conv5 takes conv2's 64
 * channels and conv5 to fc8 are new.
 */
export function ablateModel(model: Model, remove: readonly string[], opts: { seed?: number; init?: InitScheme } = {}): Ablation {
  if (remove.length === 0) throw new Error('ablation: name at least one layer to remove');
  const top = model.layers[logitsLayer(model)].name;
  const removed = expandRemoval(model, remove);
  if (removed.has(top)) throw new Error(`ablation: cannot remove ${top}, the layer that gives the class scores`);
  const layers: Layer[] = [];
  const reinit = new Set<string>();
  let shape: number[] = [...model.input];
  // Latches at the first change: every weight layer above it sees new features.
  let changed = false;
  for (const original of model.layers) {
    if (removed.has(original.name)) {
      changed ||= hasWeights(original);
      continue;
    }
    let layer: Layer = { ...original };
    let resized = false;
    if (layer.type === 'conv2d' && layer.inChannels !== shape[0]) {
      layer = { ...layer, inChannels: shape[0] };
      resized = true;
    }
    if (layer.type === 'linear' && layer.inFeatures !== sizeOf(shape)) {
      layer = { ...layer, inFeatures: sizeOf(shape) };
      resized = true;
    }
    if (hasWeights(layer) && (changed || resized)) {
      changed = true;
      reinit.add(layer.name);
    }
    layers.push(layer);
    shape = inferShapes({ input: model.input, layers }).at(-1)!.outShape;
  }
  const fresh = initWeights(layers.filter((l) => reinit.has(l.name)), opts.init ?? 'kaiming', opts.seed ?? 0);
  const weights = new Map<string, Tensor>();
  for (const layer of layers) {
    for (const { key } of layerParams(layer)) {
      const t = reinit.has(layer.name) ? fresh.get(key)! : model.weights.get(key)!;
      weights.set(key, { shape: [...t.shape], data: t.data.slice() });
    }
  }
  const ablated: Model = {
    ...model,
    name: `${model.name}-without-${remove.join('-')}`,
    layers,
    weights,
    preprocess: { ...model.preprocess },
  };
  validateModel(ablated);
  return { model: ablated, removed: model.layers.filter((l) => removed.has(l.name)).map((l) => l.name), reinitialised: [...reinit] };
}

// ---------------------------------------------------------------- the Table 3 experiment

export interface AblationConfig {
  /** Each entry is one ablated model: the layers it removes, e.g. [['fc7'], ['fc6', 'fc7']]. */
  ablations: string[][];
  /** Epochs of retraining for every model, the full one included. */
  epochs: number;
  /**
   * 'trained': kept layers start from the model's weights, new ones from a fresh init (fine-tuning, cheap).
   * 'scratch': every model, the full one included, starts from a fresh init (the paper's Table 3 trains each
   * architecture; costs full training runs).
   */
  start: 'trained' | 'scratch';
  lr: number;
  /** E.g. a lower rate for the last epoch, so that the final weights are not caught mid-oscillation. */
  schedule: LrSchedule;
  batchSize: number;
  seed: number;
}

export interface AblationRow {
  name: string;
  removed: string[];
  reinitialised: string[];
  /** Conv and linear layers left, and the parameter count. */
  weightLayers: number;
  params: number;
  /** Validation accuracy of the starting weights, then after `epochs` epochs of retraining. */
  before: number;
  after: number;
  seconds: number;
  /** The retrained model's file. */
  file: string;
}

export interface AblationResult {
  model: string;
  train: string;
  validation: string;
  config: AblationConfig;
  rows: AblationRow[];
}

async function accuracy(model: Model, ds: Dataset): Promise<number> {
  const engine = new Engine(model);
  try {
    return (await evaluateDataset(engine, model.weights, ds)).accuracy;
  } finally {
    await engine.dispose();
  }
}

/**
 * Table 3 on a small budget: the full model and each ablation, retrained for `epochs` epochs on `trainSet` with
 * the trainer's SGD (the model's own preprocessing kept), their accuracy on `valSet` before and after. Each run's
 * files go to `outDir/<row name>/`.
 */
export async function runAblations(model: Model, trainSet: Dataset, valSet: Dataset, config: AblationConfig, run: {
  outDir: string;
  log?: (line: string) => void;
  /** Per retrained model: the trainer's progress and epoch hooks (the CLI draws bars and writes curves with them). */
  onRun?: (name: string, dir: string) => Pick<TrainRunOptions, 'onProgress' | 'onEpoch'>;
}): Promise<AblationResult> {
  const log = run.log ?? (() => {});
  if (!(Number.isInteger(config.epochs) && config.epochs >= 1)) throw new Error(`ablation: epochs must be a positive integer, got ${config.epochs}`);
  const training: TrainConfig = {
    ...PAPER_TRAINING, epochs: config.epochs, lr: config.lr, schedule: config.schedule, batchSize: config.batchSize, seed: config.seed,
    snapshotEpochs: [], meanImage: false, normalizeStd: false,
  };
  const variants = [
    { name: 'full', removed: [] as string[], reinitialised: [] as string[], model: { ...model, weights: copyWeights(model.weights) } },
    ...config.ablations.map((names) => ({ name: `without-${names.join('-')}`, ...ablateModel(model, names, { seed: config.seed }) })),
  ];
  const rows: AblationRow[] = [];
  for (const v of variants) {
    const start = config.start === 'scratch' ? { ...randomlyInitialised(v.model, config.seed), name: v.model.name } : v.model;
    const before = await accuracy(start, valSet);
    const outDir = join(run.outDir, v.name);
    log(`${v.name}: ${(100 * before).toFixed(1)}% before retraining; ${config.epochs} epochs of SGD in ${outDir}`);
    const began = Date.now();
    const trained = await train(start, trainSet, valSet, training, { outDir, log, ...run.onRun?.(v.name, outDir) });
    const infos = inferShapes(trained.model);
    rows.push({
      name: v.name,
      removed: v.removed,
      reinitialised: config.start === 'scratch' ? trained.model.layers.filter(hasWeights).map((l) => l.name) : v.reinitialised,
      weightLayers: trained.model.layers.filter(hasWeights).length,
      params: infos.reduce((a, i) => a + i.params, 0),
      before,
      after: trained.history.at(-1)!.valAccuracy!,
      seconds: (Date.now() - began) / 1000,
      file: join(outDir, 'model.safetensors'),
    });
  }
  return { model: model.name, train: trainSet.name, validation: valSet.name, config, rows };
}
