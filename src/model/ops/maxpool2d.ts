import type { Layer } from '../layers.js';
import { intAttr, intsAttr, refuse } from '../onnx-import/attributes.js';
import { convAttrs } from './emit/conv.js';
import { positiveMask } from './emit/gate.js';
import { need, needMap, noParams, pair, poolOutputSize, scalarOrPair, windowRf } from './geometry.js';
import { windowGeometry } from './import-helpers.js';
import { switchesName } from './names.js';
import type { OpDef } from './types.js';

type MaxPool = Extract<Layer, { type: 'maxpool2d' }>;

export function windowShape(l: MaxPool | Extract<Layer, { type: 'avgpool2d' }>, s: number[]): number[] {
  needMap(l, s);
  const h = poolOutputSize(s[1], l.kernel[0], l.stride[0], l.padding[0], l.ceilMode);
  const w = poolOutputSize(s[2], l.kernel[1], l.stride[1], l.padding[1], l.ceilMode);
  need(h > 0 && w > 0, l, `input ${s[1]}x${s[2]} is smaller than the window`);
  need(l.padding[0] * 2 <= l.kernel[0] && l.padding[1] * 2 <= l.kernel[1], l, 'padding must be at most half the window');
  return [s[0], h, w];
}

export const maxpool2d: OpDef<MaxPool> = {
  params: noParams,
  fromJson: (o, name) => ({ type: 'maxpool2d', name, kernel: pair(o.kernel, 'kernel'), stride: pair(o.stride ?? o.kernel, 'stride'), padding: pair(o.padding ?? 0, 'padding'), ceilMode: o.ceil_mode === true }),
  toJson: (l) => ({ type: l.type, name: l.name, kernel: scalarOrPair(l.kernel), stride: scalarOrPair(l.stride), padding: scalarOrPair(l.padding), ceil_mode: l.ceilMode }),
  shape: (l, [s]) => windowShape(l, s),
  flops: (l, _s, out) => l.kernel[0] * l.kernel[1] * out.reduce((a, d) => a * d, 1),
  rf: (l, [rf]) => windowRf(rf, l.kernel, l.stride, l.padding),
  forward({ b, opts, out, saved }, l, [x]) {
    const attrs = { ...convAttrs(l.kernel, l.stride, l.padding), ceil_mode: l.ceilMode ? 1 : 0 };
    if (!opts.switches) return b.op('MaxPool', [x], attrs, [out])[0];
    saved.switches = switchesName(l.name);
    return b.op('MaxPool', [x], attrs, [out, saved.switches])[0];
  },
  backward({ b, opts, inputs: [x], output, saved, producers: [below], gatedByPool }, l, g) {
    // Each value goes back to the position its switch recorded; values that meet at one position add up.
    // (A switch-free form, comparing each strided tap with the pooled value, ran slower: its Slices and Pads.)
    const sw = saved.switches;
    if (!sw) throw new Error(`internal: no switches recorded for ${l.name}`);
    if (opts.rule !== 'deconvnet' && below?.layer.type === 'relu' && below.consumers === 1) {
      // A pooled value is the ReLU output at its switch, so the ReLU's gate (output > 0) read at the pooled size
      // is the gate at every position a value goes back to: 4x fewer elements than gating after the scatter.
      // Only when the pool is the ReLU's one reader: another reader's gradient would reach the ReLU ungated.
      g = b.op1('Mul', [g, positiveMask(b, output)]);
      gatedByPool.add(below.layer.name);
    }
    const size = b.op1('Reshape', [b.op1('Size', [x]), b.int64s([1])]);
    const zeros = b.op1('ConstantOfShape', [size], {});
    const flat = b.op1('ScatterElements', [zeros, b.op1('Reshape', [sw, b.int64s([-1])]), b.op1('Reshape', [g, b.int64s([-1])])], { axis: 0, reduction: 'add' });
    return [b.op1('Reshape', [flat, b.op1('Shape', [x])])];
  },
  box: (l) => ({ window: { kernel: l.kernel, stride: l.stride, padding: l.padding, padValue: -Infinity }, unpadded: { ...l, padding: [0, 0], ceilMode: false } }),
  onnx: {
    MaxPool(ctx, n) {
      if (intAttr(n, 'storage_order', 0) !== 0) refuse(n, 'storage_order 1 is not supported');
      ctx.onlyFirstOutputUsed(n);
      const g = windowGeometry(n, intsAttr(n, 'kernel_shape', []));
      return { layer: { type: 'maxpool2d', name: '', ...g, ceilMode: intAttr(n, 'ceil_mode', 0) === 1 } };
    },
  },
};
