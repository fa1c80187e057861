import type { Layer } from '../layers.js';
import { floatAttr, refuse } from '../onnx-import/attributes.js';
import { float32Decimal } from '../onnx-import/constants.js';
import { inputSize, noParams, num, sameRf, sameShape } from './geometry.js';
import { dropoutMaskName } from './names.js';
import type { OpDef } from './types.js';

type Dropout = Extract<Layer, { type: 'dropout' }>;

export const dropout: OpDef<Dropout> = {
  params: noParams,
  fromJson: (o, name) => ({ type: 'dropout', name, p: num(o, 'p', 0.5) }),
  toJson: (l) => ({ type: l.type, name: l.name, p: l.p }),
  shape: sameShape,
  flops: inputSize,
  rf: sameRf,
  forward({ b, info, opts, out, saved }, l, [x]) {
    if (opts.dropout !== 'mask') return b.op1('Identity', [x], {}, out);
    saved.dropoutMask = b.input(dropoutMaskName(l.name), ['N', ...info.outShape]);
    return b.op1('Mul', [x, saved.dropoutMask], {}, out);
  },
  backward: ({ b, saved }, _l, g) => [saved.dropoutMask ? b.op1('Mul', [g, saved.dropoutMask]) : g],
  box: () => 'per-position',
  onnx: {
    Dropout(ctx, n) {
      ctx.onlyFirstOutputUsed(n);
      if ((n.inputs[2] ?? '') !== '' && ctx.constInts(n, 2, 'training_mode').some((v) => v !== 0)) refuse(n, 'training_mode is on');
      const ratio = (n.inputs[1] ?? '') !== '' ? ctx.weight(n, 1, 'ratio').data[0] : floatAttr(n, 'ratio', 0.5);
      return { layer: { type: 'dropout', name: '', p: float32Decimal(ratio) } };
    },
  },
};
