import type { Layer } from '../layers.js';
import { intAttr, intsAttr } from '../onnx-import/attributes.js';
import { convAttrs, transposedWindowOp } from './emit/conv.js';
import { avgPoolDivisors } from './emit/pool.js';
import { noParams, pair, scalarOrPair, windowRf } from './geometry.js';
import { windowGeometry } from './import-helpers.js';
import { windowShape } from './maxpool2d.js';
import type { OpDef } from './types.js';

type AvgPool = Extract<Layer, { type: 'avgpool2d' }>;

export const avgpool2d: OpDef<AvgPool> = {
  params: noParams,
  fromJson: (o, name) => ({ type: 'avgpool2d', name, kernel: pair(o.kernel, 'kernel'), stride: pair(o.stride ?? o.kernel, 'stride'), padding: pair(o.padding ?? 0, 'padding'), ceilMode: o.ceil_mode === true, countIncludePad: o.count_include_pad !== false }),
  toJson: (l) => ({ type: l.type, name: l.name, kernel: scalarOrPair(l.kernel), stride: scalarOrPair(l.stride), padding: scalarOrPair(l.padding), ceil_mode: l.ceilMode, count_include_pad: l.countIncludePad }),
  shape: (l, [s]) => windowShape(l, s),
  flops: (l, _s, out) => l.kernel[0] * l.kernel[1] * out.reduce((a, d) => a * d, 1),
  rf: (l, [rf]) => windowRf(rf, l.kernel, l.stride, l.padding),
  forward: ({ b, out }, l, [x]) =>
    b.op1('AveragePool', [x], { ...convAttrs(l.kernel, l.stride, l.padding), ceil_mode: l.ceilMode ? 1 : 0, count_include_pad: l.countIncludePad ? 1 : 0 }, out),
  backward({ b, info }, l, g) {
    const [c] = info.inShape;
    const div = avgPoolDivisors(l, info.inShape, info.outShape);
    const inv = b.floatTensor(b.fresh(`${l.name}_inv_divisor`), [1, 1, info.outShape[1], info.outShape[2]], div.map((d) => 1 / d));
    const ones = b.floatTensor(b.fresh(`${l.name}_ones`), [c, 1, ...l.kernel], new Float32Array(c * l.kernel[0] * l.kernel[1]).fill(1));
    return [transposedWindowOp(b, b.op1('Mul', [g, inv]), ones, l.kernel, l.stride, l.padding, info.inShape, info.outShape, c)];
  },
  box: () => 'full',
  onnx: {
    AveragePool(_ctx, n) {
      const g = windowGeometry(n, intsAttr(n, 'kernel_shape', []));
      return { layer: { type: 'avgpool2d', name: '', ...g, ceilMode: intAttr(n, 'ceil_mode', 0) === 1, countIncludePad: intAttr(n, 'count_include_pad', 0) === 1 } };
    },
  },
};
