import { assertFinite, type Tensor } from '../tensor.js';
import { resolveInputs, withChainInputs } from './graph.js';
import { isLayerType, opOf, OPS } from './ops/index.js';
import type { ParamSpec } from './ops/types.js';

export type Pair = [number, number];

export type Layer =
  | { type: 'conv2d'; name: string; inputs?: string[]; inChannels: number; outChannels: number; kernel: Pair; stride: Pair; padding: Pair; bias: boolean; groups?: number; dilation?: Pair }
  | { type: 'relu'; name: string; inputs?: string[] }
  | { type: 'maxpool2d'; name: string; inputs?: string[]; kernel: Pair; stride: Pair; padding: Pair; ceilMode: boolean }
  | { type: 'avgpool2d'; name: string; inputs?: string[]; kernel: Pair; stride: Pair; padding: Pair; ceilMode: boolean; countIncludePad: boolean }
  | { type: 'adaptiveavgpool2d'; name: string; inputs?: string[]; output: Pair }
  | { type: 'lrn'; name: string; inputs?: string[]; size: number; alpha: number; beta: number; k: number }
  | { type: 'batchnorm2d'; name: string; inputs?: string[]; channels: number; eps: number; momentum?: number }
  | { type: 'flatten'; name: string; inputs?: string[] }
  | { type: 'linear'; name: string; inputs?: string[]; inFeatures: number; outFeatures: number; bias: boolean }
  | { type: 'dropout'; name: string; inputs?: string[]; p: number }
  | { type: 'softmax'; name: string; inputs?: string[] }
  | { type: 'add'; name: string; inputs?: string[] }
  | { type: 'concat'; name: string; inputs?: string[] }
  | { type: 'mul'; name: string; inputs?: string[] }
  | { type: 'sigmoid'; name: string; inputs?: string[] }
  | { type: 'tanh'; name: string; inputs?: string[] }
  | { type: 'hardsigmoid'; name: string; inputs?: string[]; alpha: number; beta: number }
  | { type: 'hardswish'; name: string; inputs?: string[] }
  | { type: 'leakyrelu'; name: string; inputs?: string[]; alpha: number }
  | { type: 'clip'; name: string; inputs?: string[]; min: number; max: number }
  | { type: 'pad'; name: string; inputs?: string[]; pads: [top: number, left: number, bottom: number, right: number] };

export type LayerType = Layer['type'];

/** How raw images become network input: (pixel in 0..255 - mean) / std, per channel. */
export interface Preprocess {
  /** Per-channel mean, in 0..255 units. */
  mean: number[];
  /** Per-channel divisor, in 0..255 units: 1 for the paper's raw-pixel convention, 255*0.229 ... for torchvision. */
  std: number[];
  /** Per-pixel mean image [C,H,W] (the paper's choice); when present it replaces the per-channel mean. */
  meanImage?: Tensor;
  /** Set when the model file carried no preprocessing (a stock ONNX export) and this is convscope's guess. */
  assumed?: true;
}

/**
 * A graph of named layers in topological order, with PyTorch-named weights (`conv1.weight`), NCHW float32. A layer
 * reads the layers its `inputs` name (MODEL_INPUT for the image); without `inputs`, the layer before it (a chain).
 */
export interface Model {
  name: string; inputs?: string[];
  /** Input [channels, height, width]. */
  input: [number, number, number];
  layers: Layer[];
  weights: Map<string, Tensor>;
  preprocess: Preprocess;
  classes?: string[];
  /** For a model read from ONNX: its node and data-tensor names, each to the layer it became (users may type them). */
  onnxNames?: ReadonlyMap<string, string>;
  /** For a model read from ONNX: each layer's node and the tensor that carries its output. */
  onnxSources?: ReadonlyMap<string, { node: string; output: string }>;
}

/** The weight tensors a layer owns, with their expected shapes. */
export function layerParams(layer: Layer): ParamSpec[] {
  return opOf(layer).params(layer);
}

/** The weights that gradients train: every one but the statistics a training forward pass updates (running stats). */
export function trainedWeights(layers: readonly Layer[]): Set<string> {
  return new Set(layers.flatMap((l) => layerParams(l).filter((p) => !p.buffer).map((p) => p.key)));
}

/** The layer of that exact name; a name users type goes through resolveLayer (model/names.ts) first. */
export function findLayer(model: Model, name: string): { layer: Layer; index: number } {
  const index = model.layers.findIndex((l) => l.name === name);
  if (index < 0) throw new Error(unknownLayer(model, name));
  return { layer: model.layers[index], index };
}

/** Levenshtein distance, for suggesting names close to a mistyped one. */
function distance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    row = next;
  }
  return row[b.length];
}

/** One line for a name that resolves to nothing: the closest names, not a dump of every layer. */
export function unknownLayer(model: Pick<Model, 'layers'>, name: string): string {
  const names = model.layers.map((l) => l.name);
  const close = names
    .map((n) => ({ n, d: distance(n, name) }))
    .filter(({ d }) => d <= Math.max(2, Math.floor(name.length / 3)))
    .sort((a, b) => a.d - b.d)
    .slice(0, 5)
    .map(({ n }) => n);
  const hint = close.length > 0 ? `did you mean ${close.join(', ')}? ` : '';
  return `unknown layer '${name}'; ${hint}(${names.length} layers; convscope inspect lists them)`;
}

/** Checks that every weight exists with the right shape and holds finite numbers. */
export function validateModel(model: Model): void {
  resolveInputs(model.layers);
  for (const layer of model.layers) {
    for (const { key, shape } of layerParams(layer)) {
      const t = model.weights.get(key);
      if (!t) throw new Error(`weight '${key}' is missing`);
      if (t.shape.join(',') !== shape.join(',')) throw new Error(`weight '${key}' has shape [${t.shape}], layer ${layer.name} needs [${shape}]`);
      assertFinite(t.data, `weight '${key}'`);
    }
  }
  validatePreprocess(model.preprocess, model.input[0]);
}

/** Finite means (one per channel, or a [C, H, W] mean image) and positive, finite divisors. */
export function validatePreprocess(p: Preprocess, channels: number): void {
  for (const [what, v] of [['mean', p.mean], ['std', p.std]] as const) {
    if (v.length !== channels && v.length !== 1) throw new Error(`preprocessing ${what} has ${v.length} values for ${channels} channels`);
    assertFinite(v, `preprocessing ${what}`);
  }
  const bad = p.std.find((s) => !(s > 0));
  if (bad !== undefined) throw new Error(`preprocessing std ${bad} must be > 0 (it divides the pixels)`);
  if (p.meanImage) assertFinite(p.meanImage.data, 'preprocessing mean image');
}

// ---------------------------------------------------------------- JSON form (the safetensors `architecture`)

/** The JSON form of a layer: PyTorch-style snake_case keys, scalar or [h, w] sizes. */
export type LayerJson = Record<string, unknown> & { type: string; name: string };

export function layerFromJson(o: LayerJson): Layer {
  const name = String(o.name);
  const type = o.type;
  if (!isLayerType(type)) throw new Error(`unknown layer type '${type}' (layer '${name}')`);
  const layer = OPS[type].fromJson(o, name);
  if (o.inputs === undefined) return layer;
  if (!Array.isArray(o.inputs) || !o.inputs.every((i) => typeof i === 'string')) throw new Error(`layer '${name}': inputs must be a list of layer names, got ${JSON.stringify(o.inputs)}`);
  return { ...layer, inputs: [...o.inputs] };
}

/** A layer's JSON form; `inputs` follows the name when the layer has them. */
export function layerToJson(l: Layer): LayerJson {
  const { type, name, ...rest } = opOf(l).toJson(l);
  return l.inputs ? { type, name, inputs: [...l.inputs], ...rest } : { type, name, ...rest };
}

/** The layers' JSON forms, with `inputs` only where they differ from the chain default: chains read as they always did. */
export function layersToJson(layers: readonly Layer[]): LayerJson[] {
  return withChainInputs(layers).map(layerToJson);
}
