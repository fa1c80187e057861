import type { Layer } from '../layers.js';
import { intAttr, refuse } from '../onnx-import/attributes.js';
import { noParams, sameRf, sameShape } from './geometry.js';
import type { OpDef } from './types.js';

type Softmax = Extract<Layer, { type: 'softmax' }>;

export const softmax: OpDef<Softmax> = {
  params: noParams,
  fromJson: (_o, name) => ({ type: 'softmax', name }),
  toJson: (l) => ({ type: l.type, name: l.name }),
  shape: sameShape,
  flops: (_l, [s]) => 3 * s.reduce((a, d) => a * d, 1),
  rf: sameRf,
  forward: ({ b, out }, _l, [x]) => b.op1('Softmax', [x], { axis: 1 }, out),
  backward({ b, output: y }, _l, g) {
    const dot = b.op1('ReduceSum', [b.op1('Mul', [g, y]), b.int64s([1])], { keepdims: 1 });
    return [b.op1('Mul', [y, b.op1('Sub', [g, dot])])];
  },
  box: () => 'full',
  onnx: {
    Softmax(ctx, n) {
      const axis = intAttr(n, 'axis', ctx.opset >= 13 ? -1 : 1);
      const shape = ctx.currentShape();
      if (shape.length !== 1 || (axis !== 1 && axis !== -1)) refuse(n, `softmax over axis ${axis} of [N,${shape}]: only the class axis of a [N, classes] input is supported`);
      return { layer: { type: 'softmax', name: '' } };
    },
  },
};
