import type { Layer } from '../layers.js';
import { intAttr, intsAttr, refuse } from '../onnx-import/attributes.js';
import { columns, convInputGradient, convolve, convWeightGradient, GEMM_CONV_MAX_POSITIONS, GEMM_WEIGHT_GRADIENT_MAX_POSITIONS, gemmInputGradient, gemmWeightGradient, layerGeometry, toChannelMajor, unitStride } from './emit/conv.js';
import { need, needMap, pair, num, poolOutputSize, scalarOrPair, windowRf } from './geometry.js';
import { flatBias, windowGeometry } from './import-helpers.js';
import type { OpDef, ParamSpec } from './types.js';

type Conv2d = Extract<Layer, { type: 'conv2d' }>;

export const conv2d: OpDef<Conv2d> = {
  params(l) {
    const w: ParamSpec = { key: `${l.name}.weight`, shape: [l.outChannels, l.inChannels, ...l.kernel], init: 'fan-in' };
    return l.bias ? [w, { key: `${l.name}.bias`, shape: [l.outChannels], init: 'zeros' }] : [w];
  },
  fromJson: (o, name) => ({ type: 'conv2d', name, inChannels: num(o, 'in_channels'), outChannels: num(o, 'out_channels'), kernel: pair(o.kernel, 'kernel'), stride: pair(o.stride ?? 1, 'stride'), padding: pair(o.padding ?? 0, 'padding'), bias: o.bias !== false }),
  toJson: (l) => ({ type: l.type, name: l.name, in_channels: l.inChannels, out_channels: l.outChannels, kernel: scalarOrPair(l.kernel), stride: scalarOrPair(l.stride), padding: scalarOrPair(l.padding), bias: l.bias }),
  shape(l, [s]) {
    needMap(l, s);
    need(s[0] === l.inChannels, l, `expects ${l.inChannels} input channels, gets ${s[0]}`);
    const h = poolOutputSize(s[1], l.kernel[0], l.stride[0], l.padding[0], false);
    const w = poolOutputSize(s[2], l.kernel[1], l.stride[1], l.padding[1], false);
    need(h > 0 && w > 0, l, `input ${s[1]}x${s[2]} is smaller than the kernel`);
    return [l.outChannels, h, w];
  },
  flops: (l, _s, out) => 2 * l.inChannels * l.kernel[0] * l.kernel[1] * out.reduce((a, d) => a * d, 1),
  rf: (l, [rf]) => windowRf(rf, l.kernel, l.stride, l.padding),
  forward({ b, weight, info, opts, out, saved }, l, [x]) {
    const bias = l.bias ? weight(`${l.name}.bias`) : undefined;
    const { out: y, cols } = convolve(b, x, weight(`${l.name}.weight`), bias, layerGeometry(l, info), opts.gemmSmallConvs === true, out);
    if (cols) saved.columns = cols;
    return y;
  },
  backward({ b, weight, info, opts, inputs: [x], saved, needs, weightGrad }, l, g) {
    if (opts.weightGradients) {
      const byGemm = opts.gemmSmallConvs === true && info.outShape[1] * info.outShape[2] <= GEMM_WEIGHT_GRADIENT_MAX_POSITIONS;
      const wcols = saved.columns ?? (byGemm ? columns(b, toChannelMajor(b, x), layerGeometry(l, info)) : undefined);
      weightGrad(`${l.name}.weight`, wcols ? gemmWeightGradient(b, l, wcols, g) : convWeightGradient(b, l, info, x, g));
      if (l.bias) weightGrad(`${l.name}.bias`, b.op1('ReduceSum', [g, b.int64s([0, 2, 3])], { keepdims: 0 }));
    }
    if (!needs[0]) return [undefined];
    const w = weight(`${l.name}.weight`);
    const small = info.inShape[1] * info.inShape[2] <= GEMM_CONV_MAX_POSITIONS;
    const byGemm = opts.gemmSmallConvs === true && small && unitStride(l) && l.padding[0] < l.kernel[0] && l.padding[1] < l.kernel[1];
    return [byGemm ? gemmInputGradient(b, g, w, l, info) : convInputGradient(b, g, w, l, info, opts.gemmSmallConvs === true)];
  },
  box: (l) => ({ window: { kernel: l.kernel, stride: l.stride, padding: l.padding, padValue: 0 }, unpadded: { ...l, padding: [0, 0] } }),
  onnx: {
    Conv(ctx, n) {
      if (intAttr(n, 'group', 1) !== 1) refuse(n, `group ${intAttr(n, 'group', 1)}: only ungrouped convolutions are supported`);
      const w = ctx.weight(n, 1, 'weight');
      const b = ctx.optionalWeight(n, 2, 'bias');
      if (w.dims.length !== 4) refuse(n, `weight of shape [${w.dims}]: only 2-D convolutions are supported`);
      const kernel = intsAttr(n, 'kernel_shape', w.dims.slice(2));
      if (kernel.join() !== w.dims.slice(2).join()) refuse(n, `kernel_shape [${kernel}] disagrees with the weight [${w.dims}]`);
      const g = windowGeometry(n, kernel);
      return { layer: { type: 'conv2d', name: '', inChannels: w.dims[1], outChannels: w.dims[0], ...g, bias: b !== undefined }, params: [['weight', w], ['bias', b && flatBias(n, b, w.dims[0])]] };
    },
  },
};
