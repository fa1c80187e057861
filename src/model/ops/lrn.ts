import type { Layer } from '../layers.js';
import { floatAttr, intAttr, refuse } from '../onnx-import/attributes.js';
import { channelWindowMean, inversePower, lrnDenominator } from './emit/lrn.js';
import { need, needMap, noParams, num, sameRf } from './geometry.js';
import type { OpDef } from './types.js';

type Lrn = Extract<Layer, { type: 'lrn' }>;

export const lrn: OpDef<Lrn> = {
  params: noParams,
  fromJson: (o, name) => ({ type: 'lrn', name, size: num(o, 'size'), alpha: num(o, 'alpha', 1e-4), beta: num(o, 'beta', 0.75), k: num(o, 'k', 1) }),
  toJson: (l) => ({ type: l.type, name: l.name, size: l.size, alpha: l.alpha, beta: l.beta, k: l.k }),
  shape(l, [s]) {
    needMap(l, s);
    need(Number.isInteger(l.size) && l.size >= 1, l, `size ${l.size}: the window must hold at least one channel`);
    need(Number.isFinite(l.alpha) && Number.isFinite(l.beta) && l.k > 0, l, `alpha ${l.alpha}, beta ${l.beta}, k ${l.k}: alpha and beta must be finite and k > 0`);
    return s;
  },
  flops: (l, [s]) => s.reduce((a, d) => a * d, 1) * (l.size + 4),
  rf: sameRf,
  forward({ b, info, opts, out }, l, [x]) {
    if (opts.portable && l.size % 2 === 1) {
      return b.op1('LRN', [x], { size: l.size, alpha: { float: l.alpha }, beta: { float: l.beta }, bias: { float: l.k } }, out);
    }
    if (opts.portable) {
      // ONNX's LRN centres even windows differently from PyTorch: PyTorch's window, written out.
      const d = lrnDenominator(b, l, x, info.inShape, true);
      return b.op1('Div', [x, b.op1('Pow', [d, b.floats([l.beta], [])])], {}, out);
    }
    // From its formula rather than ONNX's LRN op, which is slower here (see channelWindowMean).
    const d = lrnDenominator(b, l, x, info.inShape);
    return b.op1('Mul', [x, inversePower(b, d, l.beta)], {}, out);
  },
  backward({ b, info, opts, inputs: [x] }, l, g) {
    if (opts.lrn === 'identity') return [g];
    // dL/da_j = g_j d_j^-b - (2 alpha b / size) a_j sum_{c: j in W(c)} g_c a_c d_c^(-b-1), d = k + alpha/size sum_W a^2.
    const d = lrnDenominator(b, l, x, info.inShape);
    const dPow = inversePower(b, d, l.beta);
    const direct = b.op1('Mul', [g, dPow]);
    const u = b.op1('Div', [b.op1('Mul', [direct, x]), d]);
    const back = channelWindowMean(b, u, info.inShape, l.size, Math.floor((l.size - 1) / 2), Math.floor(l.size / 2));
    // channelWindowMean divides by size; the formula's 2*alpha*beta/size times the sum is 2*alpha*beta times the mean.
    const cross = b.op1('Mul', [b.op1('Mul', [back, x]), b.floats([2 * l.alpha * l.beta], [])]);
    return [b.op1('Sub', [direct, cross])];
  },
  box: () => 'per-position',
  onnx: {
    LRN(_ctx, n) {
      const size = intAttr(n, 'size', 0);
      // ONNX centres an even window one channel later than PyTorch does; convscope's lrn layer is PyTorch's.
      if (size < 1 || size % 2 === 0) refuse(n, `size ${size}: only odd window sizes mean the same in ONNX and PyTorch`);
      return { layer: { type: 'lrn', name: '', size, alpha: floatAttr(n, 'alpha', 1e-4), beta: floatAttr(n, 'beta', 0.75), k: floatAttr(n, 'bias', 1) } };
    },
  },
};
