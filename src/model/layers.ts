import type { Tensor } from '../tensor.js';
import { resolveInputs, withChainInputs } from './graph.js';
import { isLayerType, opOf, OPS } from './ops/index.js';
import type { ParamSpec } from './ops/types.js';

export type Pair = [number, number];

export type Layer =
  | { type: 'conv2d'; name: string; inputs?: string[]; inChannels: number; outChannels: number; kernel: Pair; stride: Pair; padding: Pair; bias: boolean }
  | { type: 'relu'; name: string; inputs?: string[] }
  | { type: 'maxpool2d'; name: string; inputs?: string[]; kernel: Pair; stride: Pair; padding: Pair; ceilMode: boolean }
  | { type: 'avgpool2d'; name: string; inputs?: string[]; kernel: Pair; stride: Pair; padding: Pair; ceilMode: boolean; countIncludePad: boolean }
  | { type: 'adaptiveavgpool2d'; name: string; inputs?: string[]; output: Pair }
  | { type: 'lrn'; name: string; inputs?: string[]; size: number; alpha: number; beta: number; k: number }
  | { type: 'batchnorm2d'; name: string; inputs?: string[]; channels: number; eps: number }
  | { type: 'flatten'; name: string; inputs?: string[] }
  | { type: 'linear'; name: string; inputs?: string[]; inFeatures: number; outFeatures: number; bias: boolean }
  | { type: 'dropout'; name: string; inputs?: string[]; p: number }
  | { type: 'softmax'; name: string; inputs?: string[] }
  | { type: 'add'; name: string; inputs?: string[] }
  | { type: 'concat'; name: string; inputs?: string[] };

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
  resolveInputs(model.layers);
  for (const layer of model.layers) {
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
