import type { Layer } from '../layers.js';
import { need, noParams } from './geometry.js';
import { unionRf } from './merge.js';
import type { OpDef } from './types.js';

type Add = Extract<Layer, { type: 'add' }>;

/** Element-wise sum of inputs of one shape (a residual connection); the gradient reaches every input unchanged. */
export const add: OpDef<Add> = {
  params: noParams,
  fromJson: (_o, name) => ({ type: 'add', name }),
  toJson: (l) => ({ type: l.type, name: l.name }),
  shape(l, shapes) {
    need(shapes.length >= 2, l, `needs at least two inputs, has ${shapes.length}`);
    for (const s of shapes) need(s.join() === shapes[0].join(), l, `inputs of shapes ${shapes.map((x) => `[${x}]`).join(', ')} differ`);
    return shapes[0];
  },
  flops: (_l, shapes, out) => (shapes.length - 1) * out.reduce((a, d) => a * d, 1),
  rf: (_l, rfs, _s, image) => unionRf(rfs, image),
  forward: ({ b, out }, _l, inputs) => b.op1('Sum', inputs, {}, out),
  backward: ({ inputs }, _l, g) => inputs.map(() => g),
  // Output (y, x) reads each input at (y, x) only: the planner takes the union of the inputs' boxes.
  box: () => 'per-position',
  onnx: {},
};
