// The op table: every Layer type has one entry, so a new kind fails to compile until it says how it runs everywhere.
import type { Layer, LayerType } from '../layers.js';
import { adaptiveavgpool2d } from './adaptiveavgpool2d.js';
import { add } from './add.js';
import { clip } from './clip.js';
import { hardsigmoid } from './hardsigmoid.js';
import { hardswish } from './hardswish.js';
import { leakyrelu } from './leakyrelu.js';
import { mul } from './mul.js';
import { pad } from './pad.js';
import { sigmoid } from './sigmoid.js';
import { tanh } from './tanh.js';
import { avgpool2d } from './avgpool2d.js';
import { batchnorm2d } from './batchnorm2d.js';
import { concat } from './concat.js';
import { conv2d } from './conv2d.js';
import { dropout } from './dropout.js';
import { flatten } from './flatten.js';
import { linear } from './linear.js';
import { lrn } from './lrn.js';
import { maxpool2d } from './maxpool2d.js';
import { relu } from './relu.js';
import { softmax } from './softmax.js';
import type { OpDef } from './types.js';

export const OPS: { [K in LayerType]: OpDef<Extract<Layer, { type: K }>> } = {
  conv2d, relu, maxpool2d, avgpool2d, adaptiveavgpool2d, lrn, batchnorm2d, flatten, linear, dropout, softmax, add, concat, mul,
  sigmoid, tanh, hardsigmoid, hardswish, leakyrelu, clip, pad,
};

/** The table entry of a layer, typed for that layer (the mapped type cannot narrow through an index by itself). */
export function opOf<L extends Layer>(layer: L): OpDef<L> {
  return OPS[layer.type as LayerType] as unknown as OpDef<L>;
}

export function isLayerType(t: string): t is LayerType {
  return Object.hasOwn(OPS, t);
}
