import type { Layer } from '../layers.js';
import { floatAttr } from '../onnx-import/attributes.js';
import { activation } from './activation.js';
import { num } from './geometry.js';

type HardSigmoid = Extract<Layer, { type: 'hardsigmoid' }>;

/**
 * y = clip(alpha x + beta, 0, 1) (PyTorch's nn.Hardsigmoid: alpha 1/6, beta 1/2); dx = alpha g strictly inside the
 * linear part, 0 outside, as PyTorch's hardsigmoid_backward.
 */
export const hardsigmoid = activation<HardSigmoid>({
  type: 'hardsigmoid',
  fromJson: (o) => ({ alpha: num(o, 'alpha'), beta: num(o, 'beta') }),
  toJson: (l) => ({ alpha: l.alpha, beta: l.beta }),
  forward: ({ b, out }, l, x) => b.op1('HardSigmoid', [x], { alpha: { float: l.alpha }, beta: { float: l.beta } }, out),
  gradient({ b }, l, g, x) {
    const t = b.op1('Add', [b.op1('Mul', [x, b.floats([l.alpha], [])]), b.floats([l.beta], [])]);
    const inside = b.op1('And', [b.op1('Greater', [t, b.floats([0], [])]), b.op1('Less', [t, b.floats([1], [])])]);
    return b.op1('Mul', [g, b.op1('Mul', [b.op1('Cast', [inside], { to: 1 }), b.floats([l.alpha], [])])]);
  },
  onnx: { HardSigmoid: (_ctx, n) => ({ layer: { type: 'hardsigmoid', name: '', alpha: floatAttr(n, 'alpha', 0.2), beta: floatAttr(n, 'beta', 0.5) } }) },
});
