import type { Layer } from '../layers.js';
import { need, noParams } from './geometry.js';
import { unionRf } from './merge.js';
import type { OpDef } from './types.js';

type Concat = Extract<Layer, { type: 'concat' }>;

/** Inputs stacked along the channel axis (features for [F] inputs); the gradient is split back along it. */
export const concat: OpDef<Concat> = {
  params: noParams,
  fromJson: (_o, name) => ({ type: 'concat', name }),
  toJson: (l) => ({ type: l.type, name: l.name }),
  shape(l, shapes) {
    need(shapes.length >= 2, l, `needs at least two inputs, has ${shapes.length}`);
    const rest = (s: number[]) => s.slice(1).join();
    for (const s of shapes) need(s.length === shapes[0].length && rest(s) === rest(shapes[0]), l, `inputs of shapes ${shapes.map((x) => `[${x}]`).join(', ')} differ beyond the channel axis`);
    return [shapes.reduce((a, s) => a + s[0], 0), ...shapes[0].slice(1)];
  },
  flops: () => 0,
  rf: (_l, rfs, _s, image) => unionRf(rfs, image),
  forward: ({ b, out }, _l, inputs) => b.op1('Concat', inputs, { axis: 1 }, out),
  backward({ b, info, needs }, _l, g) {
    const parts = b.op('Split', [g, b.int64s(info.inShapes.map((s) => s[0]))], { axis: 1 }, info.inShapes.length);
    return parts.map((p, k) => (needs[k] ? p : undefined));
  },
  box: () => 'per-position',
  onnx: {},
};
