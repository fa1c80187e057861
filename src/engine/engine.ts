import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import ort from 'onnxruntime-node';
import { findLayer, validateModel, type Model } from '../model/layers.js';
import { inferShapes, type LayerInfo } from '../model/shapes.js';
import { sizeOf, type Tensor } from '../tensor.js';
import { BACKWARD_RULES, LRN_MODES, type BackwardRule, type LrnBackward } from './compile.js';
import {
  activationName, buildEvalGraph, buildForwardGraph, buildLayerGradientGraph, buildProjectionGraph, buildTrainStepGraph, dropoutMaskName, gradientName, statisticName,
  INPUT, INPUT_GRADIENT, LABELS, LAYER_GRADIENT, layerOfSwitches, LOGITS, logitsLayer, LOSS, PROJECTION, SEED_BY_ACTIVATION, SEED_MASK,
} from './graphs.js';
import { buildTopkGraph, mapShape, topkPositionsName, topkValuesName } from './topk-graph.js';

export interface EngineOptions {
  /** Threads for one ORT session; default: the cores available. */
  threads?: number;
  /** What every session run passes through (the viewer lets interactive runs overtake background jobs with it). */
  gate?: EngineGate;
  /**
   * Layers whose projection graphs stay compiled: past this many, the least recently projected layer's graphs are
   * freed (a viewer browsing a large model's layers would otherwise hold one per layer). Default: no limit.
   */
  projectionLayers?: number;
}

/** A lock around each session run: `enter` resolves when the run may start, with the function that ends it. */
export interface EngineGate {
  enter(): Promise<() => void>;
}

/** Max-pool switches: for each pooled output, the flat index (over the whole batch tensor) of the max in the input. */
export interface Switches {
  shape: number[];
  data: BigInt64Array;
}

export interface ForwardResult {
  activations: Map<string, Tensor>;
  switches: Map<string, Switches>;
}

/** What to propagate back: a mask over one layer's output, scaled by the activation (Zeiler & Fergus) or not (Captum). */
export interface Seed {
  layer: string;
  /** Same shape as the layer's output for the batch: [N, C, H, W] or [N, F]. */
  mask: Tensor;
  value: 'activation' | 'one';
  /** 'max': of each item's mask (one whole feature map), seed only the first maximum of the activation in it. */
  at?: 'mask' | 'max';
}

export interface BackwardSettings {
  rule: BackwardRule;
  lrn: LrnBackward;
}

/** One layer's best positions of every feature map, per image of a batch. */
export interface TopkCandidates {
  /** [N, C, per]: per = min(perImage, H x W); a vector layer's F units are F maps of one position. */
  shape: [number, number, number];
  /** Best first per map; equal values in row-major order. */
  values: Float32Array;
  /** Row-major position in the map (y x W + x) of each value. */
  positions: BigInt64Array;
}

export interface TrainStepResult {
  /** Mean softmax cross-entropy over the batch. */
  loss: number;
  logits: Tensor;
  /** dLoss/dWeight for every trained weight, by key. */
  grads: Map<string, Float32Array>;
  /** The running statistics after this batch (batch norm in training mode, as PyTorch updates them), by key. */
  statistics: Map<string, Float32Array>;
  /** dLoss/dInput, [N, C, H, W], when the step was asked for it. */
  inputGradient?: Tensor;
}

export interface TrainStepOptions {
  /** Dropout masks by dropout layer name, [N, ...], already scaled by 1/(1-p); a layer without one drops nothing. */
  dropoutMasks?: Map<string, Tensor>;
  /** Also return dLoss/dInput (adversarial examples, input-space checks); costs the first layer's input gradient. */
  inputGradient?: boolean;
}

/**
 * Pins onnxruntime's pool threads (all but the calling thread) to distinct CPUs after the first allowed one. Unpinned,
 * Linux's wake-affine placement put the pool thread on the caller's core whenever another process had just run (a
 * PyTorch step between ours: zfnet-small train step 28 -> 38 ms with one core idle); pinned, 28.5 ms either way.
 */
function poolAffinity(threads: number): { intra_op_thread_affinities?: string } {
  let allowed: number[] = [];
  try {
    const list = /^Cpus_allowed_list:\s*(.+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '';
    allowed = list.split(',').flatMap((range) => {
      const [lo, hi = lo] = range.split('-').map(Number);
      return Array.from({ length: hi - lo + 1 }, (_, k) => lo + k);
    });
  } catch {
    return {}; // not Linux: leave placement to the OS
  }
  if (threads < 2 || allowed.some((id) => !Number.isInteger(id)) || allowed.length < threads) return {};
  // onnxruntime numbers logical processors from 1.
  return { intra_op_thread_affinities: allowed.slice(1, threads).map((id) => String(id + 1)).join(';') };
}

/** How convscope runs every onnxruntime session. */
export function sessionOptions(threads: number, pinned = true): ort.InferenceSession.SessionOptions {
  return {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    logSeverityLevel: 3,
    // An idle session's pool would otherwise spin and take a core from the session that runs next
    // (projectUnit alternates two): 70 -> 43 ms for one ZFNet projection in the bench.
    extra: { session: { intra_op: { allow_spinning: '0' }, ...(pinned ? poolAffinity(threads) : {}) } },
  };
}

// Set in Engine's static block, which may reach the private session cache: runEngineGraph gets at the cache without
// the cache, or a way to run any graph, becoming part of Engine's API.
let runGraphOf: (engine: Engine, key: string, build: () => Uint8Array, feeds: Record<string, ort.Tensor>) => Promise<Record<string, ort.Tensor>>;

/** A compiled graph: its session, the runs that hold it, and whether it is to be freed once they end. */
interface CompiledGraph {
  session: Promise<ort.InferenceSession>;
  running: number;
  retired: boolean;
  /** For a projection graph, the index of the layer it projects from. */
  projectsFrom?: number;
}

async function release(graph: CompiledGraph): Promise<void> {
  try {
    await (await graph.session).release();
  } catch {
    // a session that failed to compile has nothing to release
  }
}

/** Runs a model's compiled graphs in onnxruntime, one cached session per graph kind and configuration. */
export class Engine {
  readonly infos: LayerInfo[];
  private readonly graphs = new Map<string, CompiledGraph>();
  private readonly threads: number;
  private readonly gate: EngineGate | undefined;
  private readonly projectionLayers: number;

  static {
    runGraphOf = (engine, key, build, feeds) => engine.runGraph(key, build, feeds);
  }

  constructor(
    readonly model: Model,
    options: EngineOptions = {},
  ) {
    validateModel(model);
    this.infos = inferShapes(model);
    this.threads = options.threads ?? availableParallelism();
    this.gate = options.gate;
    this.projectionLayers = options.projectionLayers ?? Infinity;
    if (!(this.projectionLayers >= 1)) throw new Error(`projectionLayers must be at least 1, got ${options.projectionLayers}`);
  }

  /**
   * Compiles the graph under `key` once (the key names everything the graph bakes in) and runs it. Every session run
   * goes through here, and through the gate when there is one. A run holds its graph from the call on, so a release
   * can never free a session between its lookup and its run.
   */
  private async runGraph(key: string, build: () => Uint8Array, feeds: Record<string, ort.Tensor>, projectsFrom?: number): Promise<Record<string, ort.Tensor>> {
    let graph = this.graphs.get(key);
    if (graph) {
      // Most recently used last: the map's order is what the projection limit evicts by.
      this.graphs.delete(key);
      this.graphs.set(key, graph);
    } else {
      const bytes = build();
      // Should onnxruntime refuse the pinning option, run unpinned rather than not at all (a bad graph fails twice).
      const session = ort.InferenceSession.create(bytes, sessionOptions(this.threads)).catch(() => ort.InferenceSession.create(bytes, sessionOptions(this.threads, false)));
      const compiled: CompiledGraph = { session, running: 0, retired: false, projectsFrom };
      // A failed compile must not poison the cache for the next caller.
      session.catch(() => this.graphs.get(key) === compiled && this.graphs.delete(key));
      this.graphs.set(key, compiled);
      graph = compiled;
      if (projectsFrom !== undefined) this.evictProjections();
    }
    graph.running++;
    try {
      const session = await graph.session;
      const leave = await this.gate?.enter();
      try {
        return await session.run(feeds);
      } finally {
        leave?.();
      }
    } finally {
      graph.running--;
      if (graph.retired && graph.running === 0) await release(graph);
    }
  }

  /**
   * Frees the compiled projection graphs from `layer`, for a sweep that is done with it (top-k, a layer after the
   * other): each holds its weights and buffers (hundreds of MB on a large map) until freed. Runs still going finish
   * first; a later projection from the layer compiles again.
   */
  async releaseProjections(layer: string): Promise<void> {
    await this.releaseProjectionsFrom(findLayer(this.model, layer).index);
  }

  private async releaseProjectionsFrom(index: number): Promise<void> {
    const now: Promise<void>[] = [];
    for (const [key, graph] of this.graphs) {
      if (graph.projectsFrom !== index) continue;
      this.graphs.delete(key);
      graph.retired = true;
      if (graph.running === 0) now.push(release(graph));
    }
    await Promise.all(now);
  }

  /** Frees the projection graphs of the least recently projected layers beyond the `projectionLayers` limit. */
  private evictProjections(): void {
    // Layers by their latest use, least recent first (the map is in order of use).
    const recentFirst = [...this.graphs.values()].reverse().flatMap((g) => (g.projectsFrom === undefined ? [] : [g.projectsFrom]));
    const layers = [...new Set(recentFirst)].reverse();
    for (const index of layers.slice(0, Math.max(0, layers.length - this.projectionLayers))) void this.releaseProjectionsFrom(index);
  }

  /** The keys of the graphs compiled and held now (what each costs in memory until released or disposed). */
  compiledGraphs(): string[] {
    return [...this.graphs.keys()];
  }

  info(layer: string): LayerInfo {
    return this.infos[findLayer(this.model, layer).index];
  }

  private checkInput(input: Tensor): number {
    const [c, h, w] = this.model.input;
    if (input.shape.length !== 4 || input.shape[1] !== c || input.shape[2] !== h || input.shape[3] !== w) {
      throw new Error(`input has shape [${input.shape}], model ${this.model.name} takes [N,${c},${h},${w}]`);
    }
    return input.shape[0];
  }

  /** Activations of the named layers for a batch, and the max-pool switches when asked for. */
  async forward(input: Tensor, layers: string[], options: { switches?: boolean } = {}): Promise<ForwardResult> {
    this.checkInput(input);
    const indices = [...new Set(layers.map((l) => findLayer(this.model, l).index))].sort((a, b) => a - b);
    if (indices.length === 0) throw new Error('forward needs at least one layer');
    const withSwitches = options.switches === true;
    const key = `forward:${indices.join(',')}:${withSwitches}`;
    const out = await this.runGraph(key, () => buildForwardGraph(this.model, this.infos, indices, withSwitches), { [INPUT]: new ort.Tensor('float32', input.data, input.shape) });
    const activations = new Map<string, Tensor>();
    for (const i of indices) {
      const name = this.model.layers[i].name;
      const t = out[activationName(name)];
      activations.set(name, { shape: [...t.dims], data: t.data as Float32Array });
    }
    const switches = new Map<string, Switches>();
    if (withSwitches) {
      for (const [name, t] of Object.entries(out)) {
        const layer = layerOfSwitches(name);
        if (layer) switches.set(layer, { shape: [...t.dims], data: t.data as BigInt64Array });
      }
    }
    return { activations, switches };
  }

  /**
   * Per requested layer, each image's `perImage` best positions of every feature map (fewer where a map has fewer),
   * from one forward pass to the deepest of the layers.
   */
  async topkScan(input: Tensor, layers: string[], perImage: number): Promise<Map<string, TopkCandidates>> {
    this.checkInput(input);
    if (!(Number.isInteger(perImage) && perImage >= 1)) throw new Error(`perImage must be an integer >= 1, got ${perImage}`);
    const indices = [...new Set(layers.map((l) => findLayer(this.model, l).index))].sort((a, b) => a - b);
    if (indices.length === 0) throw new Error('topkScan needs at least one layer');
    const shapes = indices.map((i) => mapShape(this.infos[i].outShape));
    const per = shapes.map(([, h, w]) => Math.min(perImage, h * w));
    const out = await this.runGraph(`topk:${indices.join(',')}:${per.join(',')}`, () => buildTopkGraph(this.model, this.infos, indices, per), { [INPUT]: new ort.Tensor('float32', input.data, input.shape) });
    const result = new Map<string, TopkCandidates>();
    indices.forEach((i, j) => {
      const name = this.model.layers[i].name;
      result.set(name, {
        shape: [input.shape[0], shapes[j][0], per[j]],
        values: out[topkValuesName(name)].data as Float32Array,
        positions: out[topkPositionsName(name)].data as BigInt64Array,
      });
    });
    return result;
  }

  /**
   * Backward from a seed at one layer to the input pixels with the given ReLU rule. Returns the signal at the input
   * (the projection) and the seeded layer's activations.
   */
  async backward(input: Tensor, seed: Seed, settings: BackwardSettings): Promise<{ projection: Tensor; activation: Tensor }> {
    const n = this.checkInput(input);
    if (!BACKWARD_RULES.includes(settings.rule)) throw new Error(`unknown rule '${settings.rule}'; use ${BACKWARD_RULES.join(', ')}`);
    if (!LRN_MODES.includes(settings.lrn)) throw new Error(`unknown LRN mode '${settings.lrn}'; use ${LRN_MODES.join(', ')}`);
    const { index } = findLayer(this.model, seed.layer);
    const outShape = [n, ...this.infos[index].outShape];
    if (seed.mask.shape.join(',') !== outShape.join(',')) {
      throw new Error(`seed mask has shape [${seed.mask.shape}], layer ${seed.layer} outputs [${outShape}]`);
    }
    const atMax = seed.at === 'max';
    const key = `project:${index}:${settings.rule}:${settings.lrn}:${atMax}`;
    const out = await this.runGraph(key, () => buildProjectionGraph(this.model, this.infos, index, settings.rule, settings.lrn, atMax), {
      [INPUT]: new ort.Tensor('float32', input.data, input.shape),
      [SEED_MASK]: new ort.Tensor('float32', seed.mask.data, seed.mask.shape),
      [SEED_BY_ACTIVATION]: new ort.Tensor('float32', Float32Array.of(seed.value === 'activation' ? 1 : 0), [1]),
    }, index);
    const p = out[PROJECTION];
    const a = out[activationName(seed.layer)];
    return {
      projection: { shape: [...p.dims], data: p.data as Float32Array },
      activation: { shape: [...a.dims], data: a.data as Float32Array },
    };
  }

  /**
   * The derivative of a seed at layer `seed.layer` (weighted by the mask, seeded with one) with respect to the output
   * of the lower layer `at`, under the given rule: the gradient at `at`, `at`'s activation and the seeded layer's.
   */
  async layerGradient(
    input: Tensor,
    seed: { layer: string; mask: Tensor },
    at: string,
    settings: BackwardSettings,
  ): Promise<{ gradient: Tensor; activation: Tensor; output: Tensor }> {
    const n = this.checkInput(input);
    const from = findLayer(this.model, seed.layer).index;
    const below = findLayer(this.model, at).index;
    if (below >= from) throw new Error(`layer ${at} is not below layer ${seed.layer}`);
    const outShape = [n, ...this.infos[from].outShape];
    if (seed.mask.shape.join(',') !== outShape.join(',')) {
      throw new Error(`seed mask has shape [${seed.mask.shape}], layer ${seed.layer} outputs [${outShape}]`);
    }
    const key = `layer-gradient:${from}:${below}:${settings.rule}:${settings.lrn}`;
    const out = await this.runGraph(key, () => buildLayerGradientGraph(this.model, this.infos, from, below, settings.rule, settings.lrn), {
      [INPUT]: new ort.Tensor('float32', input.data, input.shape),
      [SEED_MASK]: new ort.Tensor('float32', seed.mask.data, seed.mask.shape),
    });
    const plain = (t: ort.Tensor): Tensor => ({ shape: [...t.dims], data: t.data as Float32Array });
    return {
      gradient: plain(out[LAYER_GRADIENT]),
      activation: plain(out[activationName(this.model.layers[below].name)]),
      output: plain(out[activationName(this.model.layers[from].name)]),
    };
  }

  private weightFeeds(weights: Map<string, Tensor>): Record<string, ort.Tensor> {
    const feeds: Record<string, ort.Tensor> = {};
    for (const [key, t] of weights) feeds[key] = new ort.Tensor('float32', t.data, t.shape);
    return feeds;
  }

  /** Loss, logits and every weight gradient for a batch, with the given weights (not the model's: the trainer owns them). */
  async trainStep(input: Tensor, labels: Int32Array, weights: Map<string, Tensor>, options: TrainStepOptions = {}): Promise<TrainStepResult> {
    const dropoutMasks = options.dropoutMasks ?? new Map<string, Tensor>();
    const inputGradient = options.inputGradient ?? false;
    const n = this.checkInput(input);
    if (labels.length !== n) throw new Error(`${labels.length} labels for a batch of ${n}`);
    const top = logitsLayer(this.model);
    const classes = this.infos[top].outShape[0];
    const onehot = new Float32Array(n * classes);
    labels.forEach((l, i) => {
      if (l < 0 || l >= classes) throw new Error(`label ${l} is out of range for ${classes} classes`);
      onehot[i * classes + l] = 1;
    });
    const feeds = this.weightFeeds(weights);
    feeds[INPUT] = new ort.Tensor('float32', input.data, input.shape);
    feeds[LABELS] = new ort.Tensor('float32', onehot, [n, classes]);
    for (const [i, layer] of this.model.layers.entries()) {
      if (layer.type !== 'dropout' || i > top) continue;
      const shape = [n, ...this.infos[i].outShape];
      const mask = dropoutMasks.get(layer.name) ?? { shape, data: new Float32Array(sizeOf(shape)).fill(1) };
      feeds[dropoutMaskName(layer.name)] = new ort.Tensor('float32', mask.data, shape);
    }
    const out = await this.runGraph(`train-step:${inputGradient}`, () => buildTrainStepGraph(this.model, this.infos, inputGradient), feeds);
    const grads = new Map<string, Float32Array>();
    const statistics = new Map<string, Float32Array>();
    for (const key of weights.keys()) {
      const g = out[gradientName(key)] ?? undefined;
      if (g) grads.set(key, g.data as Float32Array);
      const s = out[statisticName(key)] ?? undefined;
      if (s) statistics.set(key, s.data as Float32Array);
    }
    const l = out[LOGITS];
    const result: TrainStepResult = { loss: (out[LOSS].data as Float32Array)[0], logits: { shape: [...l.dims], data: l.data as Float32Array }, grads, statistics };
    const g = out[INPUT_GRADIENT];
    if (inputGradient) result.inputGradient = { shape: [...g.dims], data: g.data as Float32Array };
    return result;
  }

  /** Class scores for a batch with the given weights (dropout off). */
  async evaluate(input: Tensor, weights: Map<string, Tensor>): Promise<Tensor> {
    this.checkInput(input);
    const out = await this.runGraph('eval', () => buildEvalGraph(this.model, this.infos), { ...this.weightFeeds(weights), [INPUT]: new ort.Tensor('float32', input.data, input.shape) });
    const l = out[LOGITS];
    return { shape: [...l.dims], data: l.data as Float32Array };
  }

  /** Number of values in one batch element's output of a layer. */
  unitsPerItem(layer: string): number {
    return sizeOf(this.info(layer).outShape);
  }

  async dispose(): Promise<void> {
    const all = [...this.graphs.values()];
    this.graphs.clear();
    for (const graph of all) await release(graph);
  }
}

/**
 * Runs a graph that another module of src/engine compiles (incremental occlusion) in `engine`'s session cache, under
 * `key`, which must name everything the graph bakes in. Above the engine, graphs run only through Engine's typed
 * methods, which take and return plain tensors.
 */
export async function runEngineGraph(engine: Engine, key: string, build: () => Uint8Array, feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>> {
  return runGraphOf(engine, `custom:${key}`, build, feeds);
}
