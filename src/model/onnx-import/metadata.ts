// The metadata convscope writes on export (layer list, preprocessing, classes), so that an import restores the model
// exactly; without it, names come from the graph and preprocessing from defaults.
import { sizeOf, type Tensor } from '../../tensor.js';
import { layerFromJson, layerParams, type Layer, type LayerJson, type Preprocess } from '../layers.js';
import { CAFFE_RGB_MEAN } from '../preprocess.js';
import { constTensor } from './constants.js';
import type { GraphIndex } from './graph.js';

/** metadata_props keys that convscope writes on export, so that an import restores the model exactly. */
export const ONNX_META = {
  architecture: 'convscope.architecture',
  input: 'convscope.input',
  classes: 'convscope.classes',
  meanImage: 'convscope.mean_image',
} as const;


export function layersFromMetadata(archJson: string, ix: GraphIndex): { layers: Layer[]; weights: Map<string, Tensor> } {
  let layers: Layer[];
  try {
    layers = (JSON.parse(archJson) as LayerJson[]).map(layerFromJson);
  } catch (e) {
    throw new Error(`unreadable ${ONNX_META.architecture} metadata: ${(e as Error).message}`);
  }
  const weights = new Map<string, Tensor>();
  for (const layer of layers) {
    for (const { key } of layerParams(layer)) {
      const t = constTensor(ix, key);
      if (!t) throw new Error(`the ${ONNX_META.architecture} metadata needs weight '${key}', which the graph does not hold`);
      weights.set(key, { shape: [...t.dims], data: t.data });
    }
  }
  return { layers, weights };
}

function parseJson<T>(meta: Map<string, string>, key: string): T | undefined {
  const s = meta.get(key);
  if (s === undefined) return undefined;
  try {
    return JSON.parse(s) as T;
  } catch (e) {
    throw new Error(`unreadable ${key} metadata: ${(e as Error).message}`);
  }
}

export function preprocessFromMetadata(meta: Map<string, string>, chw: [number, number, number]): Preprocess {
  const c = chw[0];
  const stored = parseJson<{ shape?: number[]; mean?: number[]; std?: number[] }>(meta, ONNX_META.input);
  if (stored?.shape && stored.shape.join() !== chw.join()) throw new Error(`${ONNX_META.input} metadata says input [${stored.shape}], the graph takes [${chw}]`);
  const mean = stored?.mean ?? (c === 3 ? [...CAFFE_RGB_MEAN] : new Array<number>(c).fill(0));
  const std = stored?.std ?? new Array<number>(c).fill(1);
  if (mean.length !== c || std.length !== c) throw new Error(`preprocess metadata has ${mean.length} means and ${std.length} stds for ${c} channels`);
  const image = parseJson<{ shape: number[]; f32: string }>(meta, ONNX_META.meanImage);
  return { mean, std, ...(image ? { meanImage: meanImageFromJson(image) } : {}), ...(stored?.mean || image ? {} : { assumed: true as const }) };
}

function meanImageFromJson(o: { shape: number[]; f32: string }): Tensor {
  const bytes = Buffer.from(o.f32, 'base64');
  const data = new Float32Array(bytes.length / 4);
  new Uint8Array(data.buffer).set(bytes);
  if (data.length !== sizeOf(o.shape)) throw new Error(`${ONNX_META.meanImage} metadata has ${data.length} values for shape [${o.shape}]`);
  return { shape: o.shape, data };
}

export function classesFromMetadata(meta: Map<string, string>): { classes?: string[] } {
  const classes = parseJson<string[]>(meta, ONNX_META.classes);
  return classes ? { classes } : {};
}
