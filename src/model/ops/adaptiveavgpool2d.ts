import type { Layer, Pair } from '../layers.js';
import { intAttr, intsAttr, refuse } from '../onnx-import/attributes.js';
import { adaptivePoolMatrix, transposeMatrix } from './emit/pool.js';
import { inputSize, needMap, noParams, pair, scalarOrPair, windowRf } from './geometry.js';
import type { OpDef } from './types.js';

type AdaptiveAvgPool = Extract<Layer, { type: 'adaptiveavgpool2d' }>;

export const adaptiveavgpool2d: OpDef<AdaptiveAvgPool> = {
  params: noParams,
  fromJson: (o, name) => ({ type: 'adaptiveavgpool2d', name, output: pair(o.output, 'output') }),
  toJson: (l) => ({ type: l.type, name: l.name, output: scalarOrPair(l.output) }),
  shape(l, [s]) {
    needMap(l, s);
    return [s[0], l.output[0], l.output[1]];
  },
  flops: inputSize,
  rf(l, [rf], [s]) {
    // Bins differ in size when the input does not divide evenly; the field given is that of the largest bin.
    const k: Pair = [Math.ceil(s[1] / l.output[0]), Math.ceil(s[2] / l.output[1])];
    const st: Pair = [Math.floor(s[1] / l.output[0]), Math.floor(s[2] / l.output[1])];
    return windowRf(rf, k, st, [0, 0]);
  },
  forward({ b, info, opts, out }, l, [x]) {
    const [c, h, w] = info.inShape;
    const [oh, ow] = l.output;
    // A file for other runtimes gets ONNX's own op for global pooling, which any runtime knows.
    if (opts.portable && oh === 1 && ow === 1) return b.op1('GlobalAveragePool', [x], {}, out);
    const m = b.floatTensor(b.fresh(`${l.name}_pool_matrix`), [h * w, oh * ow], adaptivePoolMatrix(h, w, oh, ow));
    const flat = b.op1('Reshape', [x, b.int64s([-1, c, h * w])]);
    return b.op1('Reshape', [b.op1('MatMul', [flat, m]), b.int64s([-1, c, oh, ow])], {}, out);
  },
  backward({ b, info }, l, g) {
    const [c, h, w] = info.inShape;
    const [oh, ow] = l.output;
    const mt = b.floatTensor(b.fresh(`${l.name}_pool_matrix_t`), [oh * ow, h * w], transposeMatrix(adaptivePoolMatrix(h, w, oh, ow), h * w, oh * ow));
    const flat = b.op1('Reshape', [g, b.int64s([-1, c, oh * ow])]);
    return [b.op1('Reshape', [b.op1('MatMul', [flat, mt]), b.int64s([-1, c, h, w])])];
  },
  box: () => 'full',
  onnx: {
    GlobalAveragePool: () => ({ layer: { type: 'adaptiveavgpool2d', name: '', output: [1, 1] } }),
    /** The mean over H and W (TensorFlow's global pooling, `x.mean((2, 3))`); without keepdims it is also a flatten. */
    ReduceMean(ctx, n) {
      const given = ctx.opset >= 18 && (n.inputs[1] ?? '') !== '' ? ctx.constInts(n, 1, 'axes') : intsAttr(n, 'axes', []);
      const rank = ctx.currentShape().length + 1;
      const axes = given.map((a) => (a < 0 ? a + rank : a)).sort();
      if (rank !== 4 || axes.join() !== '2,3') refuse(n, `axes [${given}] of a rank-${rank} tensor: only the mean over H and W (axes 2, 3 of N, C, H, W) is supported`);
      const layer: AdaptiveAvgPool = { type: 'adaptiveavgpool2d', name: '', output: [1, 1] };
      return intAttr(n, 'keepdims', 1) === 1 ? { layer } : { layer, post: { type: 'flatten', name: '' } };
    },
  },
};
