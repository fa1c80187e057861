import type { Layer } from '../layers.js';
import { floatAttr } from '../onnx-import/attributes.js';
import { activation } from './activation.js';
import { num } from './geometry.js';

type LeakyRelu = Extract<Layer, { type: 'leakyrelu' }>;

/** y = x for x > 0, alpha x else; dx = g or alpha g. Not a ReLU to Captum: no deconvnet or guided rule here. */
export const leakyrelu = activation<LeakyRelu>({
  type: 'leakyrelu',
  fromJson: (o) => ({ alpha: num(o, 'negative_slope') }),
  toJson: (l) => ({ negative_slope: l.alpha }),
  forward: ({ b, out }, l, x) => b.op1('LeakyRelu', [x], { alpha: { float: l.alpha } }, out),
  gradient: ({ b }, l, g, x) => b.op1('Mul', [g, b.op1('Where', [b.op1('Greater', [x, b.floats([0], [])]), b.floats([1], []), b.floats([l.alpha], [])])]),
  onnx: { LeakyRelu: (_ctx, n) => ({ layer: { type: 'leakyrelu', name: '', alpha: floatAttr(n, 'alpha', 0.01) } }) },
});
