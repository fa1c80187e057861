import type { Layer } from '../layers.js';
import { intAttr, intsAttr, refuse } from '../onnx-import/attributes.js';
import { columns, convInputGradient, dilatedKernel, groupedConvWeightGradient, symmetricPads, transposedWindowOp, convolve, convWeightGradient, GEMM_CONV_MAX_POSITIONS, GEMM_WEIGHT_GRADIENT_MAX_POSITIONS, gemmInputGradient, gemmWeightGradient, layerGeometry, toChannelMajor, unitStride } from './emit/conv.js';
import { need, needMap, pair, num, poolOutputSize, scalarOrPair, windowRf } from './geometry.js';
import { flatBias, windowGeometry } from './import-helpers.js';
import type { OpDef, ParamSpec } from './types.js';

type Conv2d = Extract<Layer, { type: 'conv2d' }>;

/**
 * Grouped (depthwise) and dilated convolutions run as onnxruntime's Conv and ConvTranspose with their attributes; the
 * lowerings tuned for plain convolutions (GEMM, flipped-kernel input gradient) assume neither.
 */
const plain = (l: Conv2d) => (l.groups ?? 1) === 1 && (l.dilation ?? [1, 1]).every((d) => d === 1);
const extent = (l: Conv2d) => dilatedKernel(l.kernel, l.dilation ?? [1, 1]);

export const conv2d: OpDef<Conv2d> = {
  params(l) {
    const w: ParamSpec = { key: `${l.name}.weight`, shape: [l.outChannels, l.inChannels / (l.groups ?? 1), ...l.kernel], init: 'fan-in' };
    return l.bias ? [w, { key: `${l.name}.bias`, shape: [l.outChannels], init: 'zeros' }] : [w];
  },
  fromJson(o, name) {
    const l: Conv2d = { type: 'conv2d', name, inChannels: num(o, 'in_channels'), outChannels: num(o, 'out_channels'), kernel: pair(o.kernel, 'kernel'), stride: pair(o.stride ?? 1, 'stride'), padding: pair(o.padding ?? 0, 'padding'), bias: o.bias !== false };
    const groups = num(o, 'groups', 1);
    const dilation = pair(o.dilation ?? 1, 'dilation');
    return { ...l, ...(groups !== 1 ? { groups } : {}), ...(dilation.some((d) => d !== 1) ? { dilation } : {}) };
  },
  toJson: (l) => ({
    type: l.type, name: l.name, in_channels: l.inChannels, out_channels: l.outChannels, kernel: scalarOrPair(l.kernel), stride: scalarOrPair(l.stride), padding: scalarOrPair(l.padding), bias: l.bias,
    ...(l.groups !== undefined ? { groups: l.groups } : {}), ...(l.dilation !== undefined ? { dilation: scalarOrPair(l.dilation) } : {}),
  }),
  shape(l, [s]) {
    needMap(l, s);
    need(s[0] === l.inChannels, l, `expects ${l.inChannels} input channels, gets ${s[0]}`);
    const groups = l.groups ?? 1;
    need(Number.isInteger(groups) && groups >= 1 && l.inChannels % groups === 0 && l.outChannels % groups === 0, l, `${groups} groups do not divide ${l.inChannels} input and ${l.outChannels} output channels`);
    const [kh, kw] = extent(l);
    const h = poolOutputSize(s[1], kh, l.stride[0], l.padding[0], false);
    const w = poolOutputSize(s[2], kw, l.stride[1], l.padding[1], false);
    need(h > 0 && w > 0, l, `input ${s[1]}x${s[2]} is smaller than the kernel`);
    return [l.outChannels, h, w];
  },
  flops: (l, _s, out) => (2 * l.inChannels * l.kernel[0] * l.kernel[1] * out.reduce((a, d) => a * d, 1)) / (l.groups ?? 1),
  rf: (l, [rf]) => windowRf(rf, extent(l), l.stride, l.padding),
  forward({ b, weight, info, opts, out, saved }, l, [x]) {
    const bias = l.bias ? weight(`${l.name}.bias`) : undefined;
    if (!plain(l)) {
      const attrs = { kernel_shape: l.kernel, strides: l.stride, pads: symmetricPads(l.padding), group: l.groups ?? 1, dilations: l.dilation ?? [1, 1] };
      return b.op1('Conv', bias ? [x, weight(`${l.name}.weight`), bias] : [x, weight(`${l.name}.weight`)], attrs, out);
    }
    const { out: y, cols } = convolve(b, x, weight(`${l.name}.weight`), bias, layerGeometry(l, info), opts.gemmSmallConvs === true, out);
    if (cols) saved.columns = cols;
    return y;
  },
  backward({ b, weight, info, opts, inputs: [x], saved, needs, weightGrad }, l, g) {
    if (!plain(l)) {
      if (opts.weightGradients) {
        weightGrad(`${l.name}.weight`, groupedConvWeightGradient(b, l, info, x, g));
        if (l.bias) weightGrad(`${l.name}.bias`, b.op1('ReduceSum', [g, b.int64s([0, 2, 3])], { keepdims: 0 }));
      }
      if (!needs[0]) return [undefined];
      return [transposedWindowOp(b, g, weight(`${l.name}.weight`), l.kernel, l.stride, l.padding, info.inShape, info.outShape, l.groups ?? 1, l.dilation ?? [1, 1])];
    }
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
  box: (l) => ({ window: { kernel: extent(l), stride: l.stride, padding: l.padding, padValue: 0 }, unpadded: { ...l, padding: [0, 0] } }),
  onnx: {
    Conv(ctx, n) {
      const groups = intAttr(n, 'group', 1);
      const w = ctx.weight(n, 1, 'weight');
      const b = ctx.optionalWeight(n, 2, 'bias');
      if (w.dims.length !== 4) refuse(n, `weight of shape [${w.dims}]: only 2-D convolutions are supported`);
      const kernel = intsAttr(n, 'kernel_shape', w.dims.slice(2));
      if (kernel.join() !== w.dims.slice(2).join()) refuse(n, `kernel_shape [${kernel}] disagrees with the weight [${w.dims}]`);
      const { extra, ...g } = windowGeometry(n, kernel, { dilated: true, asymmetric: true });
      const [dy, dx] = intsAttr(n, 'dilations', [1, 1]);
      const layer: Conv2d = { type: 'conv2d', name: '', inChannels: w.dims[1] * groups, outChannels: w.dims[0], ...g, bias: b !== undefined };
      if (groups !== 1) layer.groups = groups;
      if (dy !== 1 || dx !== 1) layer.dilation = [dy, dx];
      return { layer, params: [['weight', w], ['bias', b && flatBias(n, b, w.dims[0])]], ...(extra ? { pre: { type: 'pad', name: '', pads: extra } } : {}) };
    },
  },
};
