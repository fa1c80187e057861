import type { Layer } from '../layers.js';
import { activation } from './activation.js';

type Sigmoid = Extract<Layer, { type: 'sigmoid' }>;

/** y = 1 / (1 + e^-x); dx = g y (1 - y). SiLU is exported as x * Sigmoid(x): a sigmoid and a mul layer. */
export const sigmoid = activation<Sigmoid>({
  type: 'sigmoid',
  fromJson: () => ({}),
  toJson: () => ({}),
  forward: ({ b, out }, _l, x) => b.op1('Sigmoid', [x], {}, out),
  gradient: ({ b }, _l, g, _x, y) => b.op1('Mul', [g, b.op1('Mul', [y, b.op1('Sub', [b.floats([1], []), y])])]),
  onnx: { Sigmoid: () => ({ layer: { type: 'sigmoid', name: '' } }) },
});
