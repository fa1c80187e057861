import type { Layer, Model, Pair } from './layers.js';
import { IMAGE, resolveInputs } from './graph.js';
import { poolOutputSize } from './ops/geometry.js';
import { opOf } from './ops/index.js';
import { sizeOf } from '../tensor.js';

/** Where one output unit looks in the input image, per axis (rows, cols), in input pixels. */
export interface ReceptiveField {
  /** Side of the square of input pixels that can influence one unit. */
  size: Pair;
  /** Distance in input pixels between neighbouring units. */
  jump: Pair;
  /** Input coordinate of the first pixel of unit (0, 0)'s field; negative where it starts in the padding. */
  start: Pair;
  /** True after a layer that mixes all positions (flatten, linear): every unit sees the whole image. */
  global: boolean;
}

export interface LayerInfo {
  index: number;
  layer: Layer;
  /** Producer layer indices of the layer's inputs, -1 for the model input. */
  inputs: number[];
  /** Shapes of the inputs; inShape is the first. */
  inShapes: number[][];
  /** Output shape without the batch dimension: [C, H, W] for maps, [F] for vectors. */
  inShape: number[];
  outShape: number[];
  rf: ReceptiveField;
  params: number;
  /** 2 x multiply-adds for conv and linear layers; one operation per window element or output value elsewhere. */
  flops: number;
}

export { poolOutputSize };

/**
 * Shapes, receptive fields, parameter and FLOP counts of every layer, walking the graph in topological order and
 * checking that it is a DAG with one output and that every layer fits its inputs.
 */
export function inferShapes(model: Pick<Model, 'input' | 'layers'>): LayerInfo[] {
  const producers = resolveInputs(model.layers);
  const image: ReceptiveField = { size: [model.input[1], model.input[2]], jump: [0, 0], start: [0, 0], global: true };
  const pixel: ReceptiveField = { size: [1, 1], jump: [1, 1], start: [0, 0], global: false };
  const infos: LayerInfo[] = [];
  model.layers.forEach((layer, index) => {
    const op = opOf(layer);
    const inputs = producers[index];
    const inShapes = inputs.map((p) => (p === IMAGE ? [...model.input] : infos[p].outShape));
    const outShape = op.shape(layer, inShapes);
    const rf = op.rf(layer, inputs.map((p) => (p === IMAGE ? pixel : infos[p].rf)), inShapes, image);
    const flops = op.flops(layer, inShapes, outShape);
    const params = op.params(layer).reduce((a, p) => a + sizeOf(p.shape), 0);
    infos.push({ index, layer, inputs, inShapes, inShape: inShapes[0], outShape, rf, params, flops });
  });
  return infos;
}

/**
 * The input rectangle [y0, y1) x [x0, x1) under unit (y, x) of a layer, clipped to the image, and the unclipped one
 * (so a caller can tell how much of the field fell outside the image).
 */
export function unitField(info: LayerInfo, y: number, x: number, input: [number, number, number]): {
  clipped: [number, number, number, number];
  full: [number, number, number, number];
} {
  const { rf } = info;
  const y0 = rf.start[0] + y * rf.jump[0];
  const x0 = rf.start[1] + x * rf.jump[1];
  const full: [number, number, number, number] = [y0, y0 + rf.size[0], x0, x0 + rf.size[1]];
  const clipped: [number, number, number, number] = [
    Math.max(0, full[0]), Math.min(input[1], full[1]), Math.max(0, full[2]), Math.min(input[2], full[3]),
  ];
  return { clipped, full };
}
