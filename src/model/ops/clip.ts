import type { Layer } from '../layers.js';
import { floatAttr, refuse } from '../onnx-import/attributes.js';
import { float32Decimal } from '../onnx-import/constants.js';
import { activation } from './activation.js';
import { num } from './geometry.js';

type Clip = Extract<Layer, { type: 'clip' }>;

/**
 * y = min(max(x, min), max) (ReLU6 is Clip 0..6); dx = g strictly between the bounds, 0 elsewhere, as PyTorch's
 * hardtanh_backward. A clipped ReLU is not an nn.ReLU: the deconvnet and guided rules leave it alone, as Captum does.
 */
export const clip = activation<Clip>({
  type: 'clip',
  fromJson: (o) => ({ min: num(o, 'min'), max: num(o, 'max') }),
  toJson: (l) => ({ min: l.min, max: l.max }),
  forward: ({ b, out }, l, x) => b.op1('Clip', [x, b.floats([l.min], []), b.floats([l.max], [])], {}, out),
  gradient({ b }, l, g, x) {
    const inside = b.op1('And', [b.op1('Greater', [x, b.floats([l.min], [])]), b.op1('Less', [x, b.floats([l.max], [])])]);
    return b.op1('Mul', [g, b.op1('Cast', [inside], { to: 1 })]);
  },
  onnx: {
    Clip(ctx, n) {
      // Opset 11 moved the bounds from attributes to optional inputs.
      const bound = (index: number, attr: string, fallback: number) => {
        if (ctx.opset < 11) return floatAttr(n, attr, fallback);
        const t = ctx.optionalWeight(n, index, attr);
        if (t && t.data.length !== 1) refuse(n, `its ${attr} bound has ${t.data.length} values; only a scalar is supported`);
        return t ? float32Decimal(t.data[0]) : fallback;
      };
      const min = bound(1, 'min', -Infinity);
      const max = bound(2, 'max', Infinity);
      if (!Number.isFinite(min) || !Number.isFinite(max)) refuse(n, `bounds [${min}, ${max}]: only Clip with both bounds (ReLU6) is supported`);
      return { layer: { type: 'clip', name: '', min, max } };
    },
  },
});
