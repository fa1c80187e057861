import { layerParams, type Layer, type Model, type Pair } from './layers.js';
import { sizeOf } from '../tensor.js';
import { assertNever } from '../util/assert.js';

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
  /** Output shape without the batch dimension: [C, H, W] for maps, [F] for vectors. */
  inShape: number[];
  outShape: number[];
  rf: ReceptiveField;
  params: number;
  /** 2 x multiply-adds for conv and linear layers; one operation per window element or output value elsewhere. */
  flops: number;
}

export function poolOutputSize(inSize: number, k: number, s: number, p: number, ceilMode: boolean): number {
  const span = inSize + 2 * p - k;
  if (span < 0) return 0;
  let out = (ceilMode ? Math.ceil(span / s) : Math.floor(span / s)) + 1;
  // PyTorch and ONNX drop a last window that would start inside the right padding.
  if (ceilMode && (out - 1) * s >= inSize + p) out--;
  return out;
}

function windowRf(rf: ReceptiveField, k: Pair, s: Pair, p: Pair): ReceptiveField {
  if (rf.global) return rf;
  return {
    size: [rf.size[0] + (k[0] - 1) * rf.jump[0], rf.size[1] + (k[1] - 1) * rf.jump[1]],
    jump: [rf.jump[0] * s[0], rf.jump[1] * s[1]],
    start: [rf.start[0] - p[0] * rf.jump[0], rf.start[1] - p[1] * rf.jump[1]],
    global: false,
  };
}

function need(cond: boolean, layer: Layer, msg: string): void {
  if (!cond) throw new Error(`layer '${layer.name}' (${layer.type}): ${msg}`);
}

/** Shapes, receptive fields, parameter and FLOP counts of every layer, checking that the stack fits together. */
export function inferShapes(model: Pick<Model, 'input' | 'layers'>): LayerInfo[] {
  let shape: number[] = [...model.input];
  let rf: ReceptiveField = { size: [1, 1], jump: [1, 1], start: [0, 0], global: false };
  const fullImage: ReceptiveField = { size: [model.input[1], model.input[2]], jump: [0, 0], start: [0, 0], global: true };
  const infos: LayerInfo[] = [];
  model.layers.forEach((layer, index) => {
    const inShape = shape;
    const elems = sizeOf(inShape);
    let flops = elems;
    switch (layer.type) {
      case 'conv2d': {
        need(inShape.length === 3, layer, `needs a [C,H,W] input, got [${inShape}]`);
        need(inShape[0] === layer.inChannels, layer, `expects ${layer.inChannels} input channels, gets ${inShape[0]}`);
        const h = poolOutputSize(inShape[1], layer.kernel[0], layer.stride[0], layer.padding[0], false);
        const w = poolOutputSize(inShape[2], layer.kernel[1], layer.stride[1], layer.padding[1], false);
        need(h > 0 && w > 0, layer, `input ${inShape[1]}x${inShape[2]} is smaller than the kernel`);
        shape = [layer.outChannels, h, w];
        flops = 2 * layer.inChannels * layer.kernel[0] * layer.kernel[1] * sizeOf(shape);
        rf = windowRf(rf, layer.kernel, layer.stride, layer.padding);
        break;
      }
      case 'maxpool2d':
      case 'avgpool2d': {
        need(inShape.length === 3, layer, `needs a [C,H,W] input, got [${inShape}]`);
        const h = poolOutputSize(inShape[1], layer.kernel[0], layer.stride[0], layer.padding[0], layer.ceilMode);
        const w = poolOutputSize(inShape[2], layer.kernel[1], layer.stride[1], layer.padding[1], layer.ceilMode);
        need(h > 0 && w > 0, layer, `input ${inShape[1]}x${inShape[2]} is smaller than the window`);
        need(layer.padding[0] * 2 <= layer.kernel[0] && layer.padding[1] * 2 <= layer.kernel[1], layer, 'padding must be at most half the window');
        shape = [inShape[0], h, w];
        flops = layer.kernel[0] * layer.kernel[1] * sizeOf(shape);
        rf = windowRf(rf, layer.kernel, layer.stride, layer.padding);
        break;
      }
      case 'adaptiveavgpool2d': {
        need(inShape.length === 3, layer, `needs a [C,H,W] input, got [${inShape}]`);
        shape = [inShape[0], layer.output[0], layer.output[1]];
        // Bins differ in size when the input does not divide evenly; the field given is that of the largest bin.
        const k: Pair = [Math.ceil(inShape[1] / layer.output[0]), Math.ceil(inShape[2] / layer.output[1])];
        const s: Pair = [Math.floor(inShape[1] / layer.output[0]), Math.floor(inShape[2] / layer.output[1])];
        rf = windowRf(rf, k, s, [0, 0]);
        break;
      }
      case 'lrn':
        need(inShape.length === 3, layer, `needs a [C,H,W] input, got [${inShape}]`);
        flops = elems * (layer.size + 4);
        break;
      case 'batchnorm2d':
        need(inShape.length === 3 && inShape[0] === layer.channels, layer, `expects [${layer.channels},H,W], gets [${inShape}]`);
        flops = 2 * elems;
        break;
      case 'flatten':
        shape = [elems];
        rf = fullImage;
        flops = 0;
        break;
      case 'linear':
        need(inShape.length === 1, layer, `needs a flat input (add a flatten layer), got [${inShape}]`);
        need(inShape[0] === layer.inFeatures, layer, `expects ${layer.inFeatures} inputs, gets ${inShape[0]}`);
        shape = [layer.outFeatures];
        flops = 2 * layer.inFeatures * layer.outFeatures;
        rf = fullImage;
        break;
      case 'relu':
      case 'dropout':
        break;
      case 'softmax':
        flops = 3 * elems;
        break;
      default:
        assertNever(layer, 'layer type');
    }
    const params = layerParams(layer).reduce((a, p) => a + sizeOf(p.shape), 0);
    infos.push({ index, layer, inShape, outShape: shape, rf, params, flops });
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
