import type { Layer } from '../layers.js';
import { positiveMask } from './emit/gate.js';
import { inputSize, noParams, sameRf, sameShape } from './geometry.js';
import type { OpDef } from './types.js';

type Relu = Extract<Layer, { type: 'relu' }>;

/** Where the backward rule applies: the three rules differ only here. */
export const relu: OpDef<Relu> = {
  params: noParams,
  fromJson: (_o, name) => ({ type: 'relu', name }),
  toJson: (l) => ({ type: l.type, name: l.name }),
  shape: sameShape,
  flops: inputSize,
  rf: sameRf,
  forward: ({ b, out }, _l, [x]) => b.op1('Relu', [x], {}, out),
  backward({ b, opts, output, gatedByPool }, l, g) {
    if (opts.rule === 'deconvnet') return [b.op1('Relu', [g])];
    if (gatedByPool.has(l.name)) return [opts.rule === 'guided' ? b.op1('Relu', [g]) : g];
    // The gate reads the ReLU's output (y > 0 exactly where x > 0) so that onnxruntime can fuse Conv+Relu,
    // and multiplies by it as 0/1 floats: Where ran on one core (zfnet-small relu1 gate: 2.2 -> 1.4 ms).
    return [b.op1('Mul', [opts.rule === 'guided' ? b.op1('Relu', [g]) : g, positiveMask(b, output)])];
  },
  box: () => 'per-position',
  onnx: { Relu: () => ({ layer: { type: 'relu', name: '' } }) },
};
