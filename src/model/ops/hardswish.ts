import type { Layer } from '../layers.js';
import { activation } from './activation.js';

type HardSwish = Extract<Layer, { type: 'hardswish' }>;

/** y = x relu6(x + 3) / 6; dx = 0 below -3, g (x/3 + 1/2) up to 3, g above, as PyTorch's hardswish_backward. */
export const hardswish = activation<HardSwish>({
  type: 'hardswish',
  fromJson: () => ({}),
  toJson: () => ({}),
  forward: ({ b, out }, _l, x) => b.op1('HardSwish', [x], {}, out),
  gradient({ b }, _l, g, x) {
    const slope = b.op1('Add', [b.op1('Div', [x, b.floats([3], [])]), b.floats([0.5], [])]);
    const middle = b.op1('Where', [b.op1('LessOrEqual', [x, b.floats([3], [])]), slope, b.floats([1], [])]);
    const d = b.op1('Where', [b.op1('Less', [x, b.floats([-3], [])]), b.floats([0], []), middle]);
    return b.op1('Mul', [g, d]);
  },
  onnx: { HardSwish: () => ({ layer: { type: 'hardswish', name: '' } }) },
});
