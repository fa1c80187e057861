import type { Layer } from '../layers.js';
import { activation } from './activation.js';

type Tanh = Extract<Layer, { type: 'tanh' }>;

/** dx = g (1 - y²). */
export const tanh = activation<Tanh>({
  type: 'tanh',
  fromJson: () => ({}),
  toJson: () => ({}),
  forward: ({ b, out }, _l, x) => b.op1('Tanh', [x], {}, out),
  gradient: ({ b }, _l, g, _x, y) => b.op1('Mul', [g, b.op1('Sub', [b.floats([1], []), b.op1('Mul', [y, y])])]),
  onnx: { Tanh: () => ({ layer: { type: 'tanh', name: '' } }) },
});
