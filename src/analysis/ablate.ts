// Layer ablation (Zeiler & Fergus Table 3): remove named layers, adapt the layers that now receive a different
// input, retrain briefly, and compare with the full model trained the same way.
import { join } from 'node:path';
import type { Dataset } from '../data/dataset.js';
import { Engine } from '../engine/engine.js';
import { logitsLayer } from '../engine/graphs.js';
import { findLayer, layerParams, validateModel, type Layer, type Model } from '../model/layers.js';
import { inputsOf, MODEL_INPUT, withChainInputs } from '../model/graph.js';
import { opOf } from '../model/ops/index.js';
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

/** Layers that belong to the weight layer they follow: removing a conv takes its batch norm and ReLU with it. */
const TRAILING: ReadonlySet<Layer['type']> = new Set(['relu', 'dropout', 'batchnorm2d']);

/**
 * The named layers (a module name such as `layer2.1`, a prefix of layer names, stands for all its layers) plus, for
 * each conv or linear layer, the batch norm, ReLU and dropout layers that are its only readers, one after another.
 */
function expandRemoval(model: Model, names: readonly string[]): Set<string> {
  const infos = inferShapes(model);
  const readers = infos.map(() => [] as number[]);
  for (const info of infos) for (const p of info.inputs) if (p >= 0) readers[p].push(info.index);
  const out = new Set<string>();
  for (const name of names) {
    const members = model.layers.filter((l) => l.name.startsWith(`${name}.`));
    const indices = members.length > 0 && !model.layers.some((l) => l.name === name) ? members.map((l) => findLayer(model, l.name).index) : [findLayer(model, name).index];
    for (const index of indices) {
      out.add(model.layers[index].name);
      if (!hasWeights(model.layers[index])) continue;
      for (let j = index; readers[j].length === 1 && TRAILING.has(model.layers[readers[j][0]].type); j = readers[j][0]) out.add(model.layers[readers[j][0]].name);
    }
  }
  return out;
}

/**
 * A copy of `model` without the named layers; their readers read what they read (through a removed residual add, the
 * skip connection: a residual block removed whole becomes the identity). Named conv/linear layers take their batch
 * norm, ReLU and dropout with them. A kept conv, linear or batch-norm layer whose input size changed is resized. Every
 * conv and linear layer whose input changed (resized, or downstream of a removed weight layer) gets fresh weights
 * (`init`, `seed`): weights tuned to features that no longer exist would only be a worse random start. The layers
 * not downstream keep their weights. Examples (zfnet-small): without fc6, fc7, flatten feeds a new fc8; without
 * conv3, conv4, conv5 takes conv2's 64 channels and conv5 to fc8 are new.
 */
export function ablateModel(model: Model, remove: readonly string[], opts: { seed?: number; init?: InitScheme } = {}): Ablation {
  if (remove.length === 0) throw new Error('ablation: name at least one layer to remove');
  const top = model.layers[logitsLayer(model)].name;
  const removed = expandRemoval(model, remove);
  if (removed.has(top)) throw new Error(`ablation: cannot remove ${top}, the layer that gives the class scores`);
  const layers: Layer[] = [];
  const reinit = new Set<string>();
  /** A removed layer -> the layer its readers read instead. */
  const substitute = new Map<string, string>();
  /** Layers (kept or removed) whose output is not what the trained model computed there. */
  const changed = new Set<string>();
  const shapes = new Map<string, number[]>([[MODEL_INPUT, [...model.input]]]);
  model.layers.forEach((original, index) => {
    const originalInputs = inputsOf(model.layers, index);
    const inputs = originalInputs.map((name) => substitute.get(name) ?? name);
    const inputChanged = originalInputs.some((name) => changed.has(name));
    if (removed.has(original.name)) {
      const distinct = [...new Set(inputs)];
      if (distinct.length !== 1) throw new Error(`ablation: without ${original.name} its readers would read ${distinct.join(' and ')}; remove all but one of its input branches too`);
      substitute.set(original.name, distinct[0]);
      if (hasWeights(original) || inputChanged) changed.add(original.name);
      return;
    }
    const inShapes = inputs.map((name) => shapes.get(name)!);
    let layer: Layer = { ...original, inputs };
    let resized = false;
    if (layer.type === 'conv2d' && layer.inChannels !== inShapes[0][0]) {
      layer = { ...layer, inChannels: inShapes[0][0] };
      resized = true;
    }
    if (layer.type === 'linear' && layer.inFeatures !== sizeOf(inShapes[0])) {
      layer = { ...layer, inFeatures: sizeOf(inShapes[0]) };
      resized = true;
    }
    if (layer.type === 'batchnorm2d' && layer.channels !== inShapes[0][0]) {
      layer = { ...layer, channels: inShapes[0][0] };
      resized = true;
    }
    if ((hasWeights(layer) && (inputChanged || resized)) || (layer.type === 'batchnorm2d' && resized)) reinit.add(layer.name);
    if (inputChanged || resized) changed.add(layer.name);
    try {
      shapes.set(layer.name, opOf(layer).shape(layer, inShapes));
    } catch (e) {
      // A block that changes the map size or width cannot become the identity: say which removal broke the graph.
      throw new Error(`ablation: without ${remove.join(', ')}, ${(e as Error).message}`);
    }
    layers.push(layer);
  });
  const kept = withChainInputs(layers);
  const fresh = initWeights(kept.filter((l) => reinit.has(l.name)), opts.init ?? 'kaiming', opts.seed ?? 0);
  const weights = new Map<string, Tensor>();
  for (const layer of kept) {
    for (const { key } of layerParams(layer)) {
      const t = reinit.has(layer.name) ? fresh.get(key)! : model.weights.get(key)!;
      weights.set(key, { shape: [...t.shape], data: t.data.slice() });
    }
  }
  const ablated: Model = {
    ...model,
    name: `${model.name}-without-${remove.join('-')}`,
    layers: kept,
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
    log(`${v.name}: ${(100 * before).toFixed(1)}% before retraining; ${config.epochs} epoch${config.epochs === 1 ? '' : 's'} of SGD in ${outDir}`);
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
