import type { Layer } from '../layers.js';
import { floatAttr, intAttr, refuse } from '../onnx-import/attributes.js';
import type { ConstTensor } from '../onnx-import/constants.js';
import { imageRf, need, num } from './geometry.js';
import { flatBias, transposed } from './import-helpers.js';
import type { OpDef, ParamSpec } from './types.js';

type Linear = Extract<Layer, { type: 'linear' }>;

export const linear: OpDef<Linear> = {
  params(l) {
    const w: ParamSpec = { key: `${l.name}.weight`, shape: [l.outFeatures, l.inFeatures], init: 'fan-in' };
    return l.bias ? [w, { key: `${l.name}.bias`, shape: [l.outFeatures], init: 'zeros' }] : [w];
  },
  fromJson: (o, name) => ({ type: 'linear', name, inFeatures: num(o, 'in_features'), outFeatures: num(o, 'out_features'), bias: o.bias !== false }),
  toJson: (l) => ({ type: l.type, name: l.name, in_features: l.inFeatures, out_features: l.outFeatures, bias: l.bias }),
  shape(l, [s]) {
    need(s.length === 1, l, `needs a flat input (add a flatten layer), got [${s}]`);
    need(s[0] === l.inFeatures, l, `expects ${l.inFeatures} inputs, gets ${s[0]}`);
    return [l.outFeatures];
  },
  flops: (l) => 2 * l.inFeatures * l.outFeatures,
  rf: imageRf,
  forward({ b, weight, out }, l, [x]) {
    const inputs = [x, weight(`${l.name}.weight`)];
    if (l.bias) inputs.push(weight(`${l.name}.bias`));
    return b.op1('Gemm', inputs, { transB: 1 }, out);
  },
  backward({ b, weight, opts, inputs: [x], needs, weightGrad }, l, g) {
    if (opts.weightGradients) {
      weightGrad(`${l.name}.weight`, b.op1('Gemm', [g, x], { transA: 1 }));
      if (l.bias) weightGrad(`${l.name}.bias`, b.op1('ReduceSum', [g, b.int64s([0])], { keepdims: 0 }));
    }
    return [needs[0] ? b.op1('MatMul', [g, weight(`${l.name}.weight`)]) : undefined];
  },
  box: () => 'full',
  onnx: {
    Gemm(ctx, n) {
      if (floatAttr(n, 'alpha', 1) !== 1 || floatAttr(n, 'beta', 1) !== 1) refuse(n, 'alpha and beta must be 1');
      if (intAttr(n, 'transA', 0) !== 0) refuse(n, 'transA is not supported');
      const b = ctx.weight(n, 1, 'weight');
      if (b.dims.length !== 2) refuse(n, `weight of shape [${b.dims}] is not a matrix`);
      // convscope stores Linear weights as PyTorch does, [out, in]: Gemm's transB=1 layout.
      const w = intAttr(n, 'transB', 0) === 1 ? b : transposed(b);
      const c = ctx.optionalWeight(n, 2, 'bias');
      return { layer: { type: 'linear', name: '', inFeatures: w.dims[1], outFeatures: w.dims[0], bias: c !== undefined }, params: [['weight', w], ['bias', c && flatBias(n, c, w.dims[0])]] };
    },
    /** torch's Linear on a non-2-D input: MatMul with the transposed weight, then Add of the bias. */
    MatMul(ctx, n) {
      const b = ctx.weight(n, 1, 'weight');
      if (b.dims.length !== 2) refuse(n, `weight of shape [${b.dims}] is not a matrix`);
      const w = transposed(b);
      const users = ctx.consumers(n.outputs[0]);
      const add = users.length === 1 && users[0].opType === 'Add' ? users[0] : undefined;
      const biasIndex = add ? add.inputs.findIndex((i) => i !== n.outputs[0]) : -1;
      const bias = add && biasIndex >= 0 ? ctx.constant(add.inputs[biasIndex]) : undefined;
      const params: [string, ConstTensor | undefined][] = [['weight', w], ['bias', bias && flatBias(add!, bias, w.dims[0])]];
      return { layer: { type: 'linear', name: '', inFeatures: w.dims[1], outFeatures: w.dims[0], bias: bias !== undefined }, params, out: bias ? add!.outputs[0] : n.outputs[0] };
    },
  },
};
