// The model compiled to ONNX: one forward walk and one backward walk over the layers in topological order, each op
// emitting its own nodes from the op table. Every graph kind (forward, projection, train step) is assembled from these.
import type { GraphBuilder } from '../onnx/builder.js';
import { IMAGE } from '../model/graph.js';
import type { Model } from '../model/layers.js';
import { opOf } from '../model/ops/index.js';
import { activationName } from '../model/ops/names.js';
import type { BackwardOptions, BackwardRule, ForwardOptions, LrnBackward, Saved, WeightSource } from '../model/ops/types.js';
import type { LayerInfo } from '../model/shapes.js';

export type { BackwardOptions, BackwardRule, ForwardOptions, LrnBackward, WeightSource };
export { activationName, dropoutMaskName, layerOfSwitches } from '../model/ops/names.js';

export const BACKWARD_RULES: readonly BackwardRule[] = ['gradient', 'deconvnet', 'guided'];
export const LRN_MODES: readonly LrnBackward[] = ['gradient', 'identity'];

export interface ForwardTrace {
  /** Tensor name of layer i's output at index i (layers not computed stay empty). */
  outputs: string[];
  /** What layer i's forward left for its backward: max-pool switches, dropout masks, GEMM columns. */
  saved: Saved[];
  /** The tensor each producer index stands for: the model input at -1, `external` tensors before `from`. */
  tensorOf(producer: number): string;
}

export interface ForwardRange {
  /** First layer to compute (default 0). */
  from?: number;
  /** Last layer to compute (inclusive). */
  upTo: number;
  /**
   * Tensors standing for layers before `from` that the computed layers read (incremental occlusion runs parts of the
   * model on crops); producer -1, the image, is `input` unless given here.
   */
  external?: ReadonlyMap<number, string>;
}

export function emitForward(b: GraphBuilder, model: Model, infos: LayerInfo[], input: string, weight: WeightSource, opts: ForwardOptions & ForwardRange): ForwardTrace {
  const from = opts.from ?? 0;
  const outputs: string[] = [];
  const saved: Saved[] = [];
  const tensorOf = (p: number): string => {
    const t = opts.external?.get(p) ?? (p === IMAGE ? input : outputs[p]);
    if (t === undefined) throw new Error(`internal: layer ${p} is read before it is computed (forward from ${from})`);
    return t;
  };
  for (let i = from; i <= opts.upTo; i++) {
    const layer = model.layers[i];
    const info = infos[i];
    saved[i] = {};
    const ctx = { b, weight, info, opts, out: activationName(layer.name), saved: saved[i] };
    outputs[i] = opOf(layer).forward(ctx, layer, info.inputs.map(tensorOf));
  }
  return { outputs, saved, tensorOf };
}

/** How many layers read each layer's output (a layer reading one producer twice counts twice). */
function consumerCounts(infos: LayerInfo[]): number[] {
  const counts = infos.map(() => 0);
  for (const info of infos) for (const p of info.inputs) if (p !== IMAGE) counts[p]++;
  return counts;
}

/** Sum of the gradients that reach one tensor from its readers. */
function sum(b: GraphBuilder, grads: string[]): string {
  return grads.length === 1 ? grads[0] : b.op1('Sum', grads);
}

/**
 * Emits the backward pass from the gradient `seed` at the output of layer `from` down to the graph input: layers in
 * reverse topological order, gradients summed where an output fans out. Returns the signal at the input (undefined
 * when a train step needs none) and the weight gradients when asked for. With `stopAt`, it stops once every reader
 * of that layer has passed its gradient down and returns the sum (the gradient at that layer's output) as `atStop`.
 */
export function emitBackward(
  b: GraphBuilder,
  model: Model,
  infos: LayerInfo[],
  trace: ForwardTrace,
  from: number,
  seed: string,
  weight: WeightSource,
  opts: BackwardOptions,
  stopAt?: number,
): { input: string | undefined; weightGrads: Map<string, string>; atStop?: string } {
  const weightGrads = new Map<string, string>();
  const consumers = consumerCounts(infos);
  // The gradient at stopAt's output is read out itself: counted as one more reader, no reader folds stopAt's own
  // backward (a ReLU's gate) into the gradient it passes down.
  if (stopAt !== undefined) consumers[stopAt]++;
  const pending = new Map<number, string[]>([[from, [seed]]]);
  const gatedByPool = new Set<string>();
  if (stopAt !== undefined && !(stopAt >= 0 && stopAt < from)) throw new Error(`internal: backward from layer ${from} cannot stop at ${stopAt}`);
  for (let i = from; i >= 0; i--) {
    const grads = pending.get(i);
    if (i === stopAt) return { input: undefined, weightGrads, atStop: grads && sum(b, grads) };
    if (!grads) continue;
    const layer = model.layers[i];
    const info = infos[i];
    const ctx = {
      b,
      weight,
      weights: model.weights,
      info,
      opts,
      inputs: info.inputs.map(trace.tensorOf),
      output: trace.outputs[i],
      saved: trace.saved[i],
      needs: info.inputs.map((p) => p !== IMAGE || !opts.weightGradients || opts.inputGradient === true),
      producers: info.inputs.map((p) => (p === IMAGE ? undefined : { layer: model.layers[p], consumers: consumers[p] })),
      gatedByPool,
      weightGrad: (key: string, g: string) => weightGrads.set(key, g),
    };
    const down = opOf(layer).backward(ctx, layer, sum(b, grads));
    info.inputs.forEach((p, k) => {
      const g = down[k];
      if (g === undefined) return;
      const list = pending.get(p);
      if (list) list.push(g);
      else pending.set(p, [g]);
    });
  }
  const atInput = pending.get(IMAGE);
  return { input: atInput && sum(b, atInput), weightGrads };
}
