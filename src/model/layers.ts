import type { Tensor } from '../tensor.js';
import { assertNever } from '../util/assert.js';

export type Pair = [number, number];

export type Layer =
  | { type: 'conv2d'; name: string; inChannels: number; outChannels: number; kernel: Pair; stride: Pair; padding: Pair; bias: boolean }
  | { type: 'relu'; name: string }
  | { type: 'maxpool2d'; name: string; kernel: Pair; stride: Pair; padding: Pair; ceilMode: boolean }
  | { type: 'avgpool2d'; name: string; kernel: Pair; stride: Pair; padding: Pair; ceilMode: boolean; countIncludePad: boolean }
  | { type: 'adaptiveavgpool2d'; name: string; output: Pair }
  | { type: 'lrn'; name: string; size: number; alpha: number; beta: number; k: number }
  | { type: 'batchnorm2d'; name: string; channels: number; eps: number }
  | { type: 'flatten'; name: string }
  | { type: 'linear'; name: string; inFeatures: number; outFeatures: number; bias: boolean }
  | { type: 'dropout'; name: string; p: number }
  | { type: 'softmax'; name: string };

export type LayerType = Layer['type'];

/** How raw images become network input: (pixel in 0..255 - mean) / std, per channel. */
export interface Preprocess {
  /** Per-channel mean, in 0..255 units. */
  mean: number[];
  /** Per-channel divisor, in 0..255 units: 1 for the paper's raw-pixel convention, 255*0.229 ... for torchvision. */
  std: number[];
  /** Per-pixel mean image [C,H,W] (the paper's choice); when present it replaces the per-channel mean. */
  meanImage?: Tensor;
}

/** An ordered stack of named layers with PyTorch-named weights (`conv1.weight`), NCHW float32. */
export interface Model {
  name: string;
  /** Input [channels, height, width]. */
  input: [number, number, number];
  layers: Layer[];
  weights: Map<string, Tensor>;
  preprocess: Preprocess;
  classes?: string[];
}

/** The weight tensors a layer owns, with their expected shapes. */
export function layerParams(layer: Layer): { key: string; shape: number[] }[] {
  switch (layer.type) {
    case 'conv2d': {
      const w = { key: `${layer.name}.weight`, shape: [layer.outChannels, layer.inChannels, ...layer.kernel] };
      return layer.bias ? [w, { key: `${layer.name}.bias`, shape: [layer.outChannels] }] : [w];
    }
    case 'linear': {
      const w = { key: `${layer.name}.weight`, shape: [layer.outFeatures, layer.inFeatures] };
      return layer.bias ? [w, { key: `${layer.name}.bias`, shape: [layer.outFeatures] }] : [w];
    }
    case 'batchnorm2d':
      return ['weight', 'bias', 'running_mean', 'running_var'].map((p) => ({ key: `${layer.name}.${p}`, shape: [layer.channels] }));
    case 'relu':
    case 'maxpool2d':
    case 'avgpool2d':
    case 'adaptiveavgpool2d':
    case 'lrn':
    case 'flatten':
    case 'dropout':
    case 'softmax':
      return [];
    default:
      return assertNever(layer, 'layer type');
  }
}

export function findLayer(model: Model, name: string): { layer: Layer; index: number } {
  const index = model.layers.findIndex((l) => l.name === name);
  if (index < 0) {
    throw new Error(`unknown layer '${name}'; the model has ${model.layers.map((l) => l.name).join(', ')}`);
  }
  return { layer: model.layers[index], index };
}

/** Checks that every weight exists with the right shape and holds finite numbers. */
export function validateModel(model: Model): void {
  const names = new Set<string>();
  for (const layer of model.layers) {
    if (names.has(layer.name)) throw new Error(`two layers are named '${layer.name}'`);
    names.add(layer.name);
    for (const { key, shape } of layerParams(layer)) {
      const t = model.weights.get(key);
      if (!t) throw new Error(`weight '${key}' is missing`);
      if (t.shape.join(',') !== shape.join(',')) throw new Error(`weight '${key}' has shape [${t.shape}], layer ${layer.name} needs [${shape}]`);
      for (let i = 0; i < t.data.length; i++) {
        if (!Number.isFinite(t.data[i])) throw new Error(`weight '${key}' contains ${t.data[i]} at index ${i}`);
      }
    }
  }
}

// ---------------------------------------------------------------- JSON form (the safetensors `architecture`)

/** The JSON form of a layer: PyTorch-style snake_case keys, scalar or [h, w] sizes. */
export type LayerJson = Record<string, unknown> & { type: string; name: string };

function pair(v: unknown, what: string): Pair {
  if (typeof v === 'number') return [v, v];
  if (Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'number')) return [v[0], v[1]];
  throw new Error(`layer field ${what} must be a number or [h, w], got ${JSON.stringify(v)}`);
}

function num(o: LayerJson, key: string, fallback?: number): number {
  const v = o[key];
  if (typeof v === 'number') return v;
  if (v === undefined && fallback !== undefined) return fallback;
  throw new Error(`layer '${o.name}' (${o.type}) needs a numeric '${key}'`);
}

function scalarOrPair(p: Pair): number | Pair {
  return p[0] === p[1] ? p[0] : p;
}

/** Every layer type, as the JSON form spells it; a Record so that a new member of Layer must be added here. */
const LAYER_TYPES: Record<LayerType, true> = {
  conv2d: true, relu: true, maxpool2d: true, avgpool2d: true, adaptiveavgpool2d: true, lrn: true, batchnorm2d: true, flatten: true, linear: true, dropout: true, softmax: true,
};

function isLayerType(t: string): t is LayerType {
  return Object.hasOwn(LAYER_TYPES, t);
}

export function layerFromJson(o: LayerJson): Layer {
  const name = String(o.name);
  const type = o.type;
  if (!isLayerType(type)) throw new Error(`unknown layer type '${type}' (layer '${name}')`);
  switch (type) {
    case 'conv2d':
      return { type: 'conv2d', name, inChannels: num(o, 'in_channels'), outChannels: num(o, 'out_channels'), kernel: pair(o.kernel, 'kernel'), stride: pair(o.stride ?? 1, 'stride'), padding: pair(o.padding ?? 0, 'padding'), bias: o.bias !== false };
    case 'relu':
    case 'flatten':
    case 'softmax':
      return { type, name };
    case 'maxpool2d':
      return { type: 'maxpool2d', name, kernel: pair(o.kernel, 'kernel'), stride: pair(o.stride ?? o.kernel, 'stride'), padding: pair(o.padding ?? 0, 'padding'), ceilMode: o.ceil_mode === true };
    case 'avgpool2d':
      return { type: 'avgpool2d', name, kernel: pair(o.kernel, 'kernel'), stride: pair(o.stride ?? o.kernel, 'stride'), padding: pair(o.padding ?? 0, 'padding'), ceilMode: o.ceil_mode === true, countIncludePad: o.count_include_pad !== false };
    case 'adaptiveavgpool2d':
      return { type: 'adaptiveavgpool2d', name, output: pair(o.output, 'output') };
    case 'lrn':
      return { type: 'lrn', name, size: num(o, 'size'), alpha: num(o, 'alpha', 1e-4), beta: num(o, 'beta', 0.75), k: num(o, 'k', 1) };
    case 'batchnorm2d':
      return { type: 'batchnorm2d', name, channels: num(o, 'channels'), eps: num(o, 'eps', 1e-5) };
    case 'linear':
      return { type: 'linear', name, inFeatures: num(o, 'in_features'), outFeatures: num(o, 'out_features'), bias: o.bias !== false };
    case 'dropout':
      return { type: 'dropout', name, p: num(o, 'p', 0.5) };
    default:
      return assertNever(type, 'layer type');
  }
}

export function layerToJson(l: Layer): LayerJson {
  switch (l.type) {
    case 'conv2d':
      return { type: l.type, name: l.name, in_channels: l.inChannels, out_channels: l.outChannels, kernel: scalarOrPair(l.kernel), stride: scalarOrPair(l.stride), padding: scalarOrPair(l.padding), bias: l.bias };
    case 'maxpool2d':
      return { type: l.type, name: l.name, kernel: scalarOrPair(l.kernel), stride: scalarOrPair(l.stride), padding: scalarOrPair(l.padding), ceil_mode: l.ceilMode };
    case 'avgpool2d':
      return { type: l.type, name: l.name, kernel: scalarOrPair(l.kernel), stride: scalarOrPair(l.stride), padding: scalarOrPair(l.padding), ceil_mode: l.ceilMode, count_include_pad: l.countIncludePad };
    case 'adaptiveavgpool2d':
      return { type: l.type, name: l.name, output: scalarOrPair(l.output) };
    case 'lrn':
      return { type: l.type, name: l.name, size: l.size, alpha: l.alpha, beta: l.beta, k: l.k };
    case 'batchnorm2d':
      return { type: l.type, name: l.name, channels: l.channels, eps: l.eps };
    case 'linear':
      return { type: l.type, name: l.name, in_features: l.inFeatures, out_features: l.outFeatures, bias: l.bias };
    case 'dropout':
      return { type: l.type, name: l.name, p: l.p };
    case 'relu':
    case 'flatten':
    case 'softmax':
      return { type: l.type, name: l.name };
    default:
      return assertNever(l, 'layer type');
  }
}
