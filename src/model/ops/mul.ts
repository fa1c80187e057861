import type { Layer } from '../layers.js';
import { need, noParams } from './geometry.js';
import { unionRf } from './merge.js';
import type { OpDef } from './types.js';

type Mul = Extract<Layer, { type: 'mul' }>;

/** The axes (of [N, ...out]) along which an input of shape `s` is broadcast to `out`. */
function broadcastAxes(s: number[], out: number[]): number[] {
  return out.flatMap((d, k) => (s[k] !== d ? [k + 1] : []));
}

/**
 * Element-wise product of two maps, one of them possibly broadcast ([C, 1, 1] in squeeze-excite; x * sigmoid(x) is
 * SiLU). The product rule: each input's gradient is g times the other input, summed over the axes it was broadcast on.
 */
export const mul: OpDef<Mul> = {
  params: noParams,
  fromJson: (_o, name) => ({ type: 'mul', name }),
  toJson: (l) => ({ type: l.type, name: l.name }),
  shape(l, shapes) {
    need(shapes.length === 2, l, `needs two inputs, has ${shapes.length}`);
    const [a, b] = shapes;
    need(a.length === b.length && a.every((d, k) => d === b[k] || d === 1 || b[k] === 1), l, `inputs of shapes [${a}] and [${b}] do not broadcast`);
    return a.map((d, k) => Math.max(d, b[k]));
  },
  flops: (_l, _s, out) => out.reduce((a, d) => a * d, 1),
  // A squeeze-excite gate sees the whole image through its global pool, but only scales the channels of the map it
  // gates: the field that says where a unit looks is the map's, as for the paper's patches.
  rf: (_l, rfs, _s, image) => (rfs.some((r) => !r.global) ? unionRf(rfs.filter((r) => !r.global), image) : image),
  forward: ({ b, out }, _l, [x, y]) => b.op1('Mul', [x, y], {}, out),
  backward({ b, info, inputs: [x, y], needs }, _l, g) {
    const grad = (other: string, shape: number[]) => {
      const full = b.op1('Mul', [g, other]);
      const axes = broadcastAxes(shape, info.outShape);
      return axes.length === 0 ? full : b.op1('ReduceSum', [full, b.int64s(axes)], { keepdims: 1 });
    };
    return [needs[0] ? grad(y, info.inShapes[0]) : undefined, needs[1] ? grad(x, info.inShapes[1]) : undefined];
  },
  // Per position only when neither input is broadcast; the planner checks the input shapes (incremental.ts).
  box: () => 'per-position',
  onnx: {},
};
