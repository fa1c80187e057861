import type { Layer } from '../layers.js';
import { intAttr, refuse } from '../onnx-import/attributes.js';
import { imageRf, noParams } from './geometry.js';
import type { OpDef } from './types.js';

type Flatten = Extract<Layer, { type: 'flatten' }>;

export const flatten: OpDef<Flatten> = {
  params: noParams,
  fromJson: (_o, name) => ({ type: 'flatten', name }),
  toJson: (l) => ({ type: l.type, name: l.name }),
  shape: (_l, [s]) => [s.reduce((a, d) => a * d, 1)],
  flops: () => 0,
  rf: imageRf,
  forward: ({ b, out }, _l, [x]) => b.op1('Flatten', [x], { axis: 1 }, out),
  backward: ({ b, inputs: [x] }, _l, g) => [b.op1('Reshape', [g, b.op1('Shape', [x])])],
  box: () => 'full',
  onnx: {
    Flatten(_ctx, n) {
      if (intAttr(n, 'axis', 1) !== 1) refuse(n, `axis ${intAttr(n, 'axis', 1)}: only axis 1 (keep the batch) is supported`);
      return { layer: { type: 'flatten', name: '' } };
    },
    /** Reshape to [batch, features] is a flatten; anything else would reorder or split the batch. */
    Reshape(ctx, n) {
      const target = ctx.symbolicInts(n, 1, 'target shape');
      const shape = ctx.currentShape();
      const features = shape.reduce((a, d) => a * d, 1);
      const allowZero = intAttr(n, 'allowzero', 0) === 1;
      const dims = target.map((v, i) => (v === 0 && !allowZero ? (i === 0 ? 'N' : shape[i - 1]) : v));
      const isBatch = (v: number | 'N' | undefined) => v === 'N' || (ctx.fixedBatch !== undefined && v === ctx.fixedBatch);
      const flat = dims.length === 2 && ((isBatch(dims[0]) && (dims[1] === -1 || dims[1] === features)) || (dims[0] === -1 && dims[1] === features));
      if (!flat) refuse(n, `reshapes [N,${shape}] to [${dims}]; only a flatten to [N, ${features}] is supported`);
      return shape.length === 1 ? {} : { layer: { type: 'flatten', name: '' } };
    },
  },
};
