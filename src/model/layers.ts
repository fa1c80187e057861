import type { Tensor } from '../tensor.js';
import { isLayerType, opOf, OPS } from './ops/index.js';
import type { ParamSpec } from './ops/types.js';

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
export function layerParams(layer: Layer): ParamSpec[] {
  return opOf(layer).params(layer);
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

export function layerFromJson(o: LayerJson): Layer {
  const name = String(o.name);
  const type = o.type;
  if (!isLayerType(type)) throw new Error(`unknown layer type '${type}' (layer '${name}')`);
  return OPS[type].fromJson(o, name);
}

export function layerToJson(l: Layer): LayerJson {
  return opOf(l).toJson(l);
}
