import type { Layer } from '../layers.js';
import { floatAttr, intAttr, refuse } from '../onnx-import/attributes.js';
import type { ConstTensor } from '../onnx-import/constants.js';
import { need, num, sameRf } from './geometry.js';
import type { OpDef } from './types.js';

type BatchNorm = Extract<Layer, { type: 'batchnorm2d' }>;

/** PyTorch's default: running = (1 - 0.1) running + 0.1 batch statistic. */
const DEFAULT_MOMENTUM = 0.1;

/** The parameters in ONNX's input order, with how a fresh model starts them. */
const INIT = { weight: 'ones', bias: 'zeros', running_mean: 'zeros', running_var: 'ones' } as const;
const PARTS = Object.keys(INIT) as (keyof typeof INIT)[];

export const batchnorm2d: OpDef<BatchNorm> = {
  params: (l) => PARTS.map((p) => ({ key: `${l.name}.${p}`, shape: [l.channels], init: INIT[p], ...(p.startsWith('running_') ? { buffer: true as const } : {}) })),
  fromJson(o, name) {
    const momentum = num(o, 'momentum', DEFAULT_MOMENTUM);
    return { type: 'batchnorm2d', name, channels: num(o, 'channels'), eps: num(o, 'eps', 1e-5), ...(momentum !== DEFAULT_MOMENTUM ? { momentum } : {}) };
  },
  toJson: (l) => ({ type: l.type, name: l.name, channels: l.channels, eps: l.eps, ...(l.momentum !== undefined ? { momentum: l.momentum } : {}) }),
  shape(l, [s]) {
    need(s.length === 3 && s[0] === l.channels, l, `expects [${l.channels},H,W], gets [${s}]`);
    return s;
  },
  flops: (_l, [s]) => 2 * s.reduce((a, d) => a * d, 1),
  rf: sameRf,
  forward({ b, weight, opts, out, saved }, l, [x]) {
    const p = (s: string) => weight(`${l.name}.${s}`);
    if (opts.batchNorm !== 'training') return b.op1('BatchNormalization', [x, p('weight'), p('bias'), p('running_mean'), p('running_var')], { epsilon: { float: l.eps } }, out);
    // PyTorch's training mode: normalise with the batch's mean and biased variance; update the running statistics
    // with momentum m as (1 - m) r + m s, the variance unbiased (x M / (M - 1) over M = N H W values a channel).
    const axes = b.int64s([0, 2, 3]);
    const perChannel = b.int64s([l.channels, 1, 1]);
    const mean = b.op1('ReduceMean', [x, axes], { keepdims: 1 });
    const xc = b.op1('Sub', [x, mean]);
    const variance = b.op1('ReduceMean', [b.op1('Mul', [xc, xc]), axes], { keepdims: 1 });
    const inv = b.op1('Reciprocal', [b.op1('Sqrt', [b.op1('Add', [variance, b.floats([l.eps], [])])])]);
    const scale = b.op1('Mul', [inv, b.op1('Reshape', [p('weight'), perChannel])]);
    const m = l.momentum ?? DEFAULT_MOMENTUM;
    const flat = b.int64s([l.channels]);
    const count = b.op1('Div', [b.op1('Cast', [b.op1('Size', [x])], { to: 1 }), b.floats([l.channels], [])]);
    saved.batchNorm = { centred: xc, inv, scale, count };
    const unbiased = b.op1('Mul', [b.op1('Reshape', [variance, flat]), b.op1('Div', [count, b.op1('Sub', [count, b.floats([1], [])])])]);
    const update = (running: string, stat: string) => b.op1('Add', [b.op1('Mul', [running, b.floats([1 - m], [])]), b.op1('Mul', [stat, b.floats([m], [])])]);
    saved.statistics = [
      [`${l.name}.running_mean`, update(p('running_mean'), b.op1('Reshape', [mean, flat]))],
      [`${l.name}.running_var`, update(p('running_var'), unbiased)],
    ];
    // y = xc (inv gamma) + beta: the normalised map xhat itself is never stored (the backward works from xc).
    return b.op1('Add', [b.op1('Mul', [xc, scale]), b.op1('Reshape', [p('bias'), perChannel])], {}, out);
  },
  backward({ b, opts, saved, weights, weightGrad }, l, g) {
    if (saved.batchNorm) {
      // Through the batch statistics: dx = inv gamma (g - mean(g) - xhat mean(g xhat)) with xhat = xc inv, and sum(g),
      // sum(g xhat) are the bias and weight gradients: dx = k1 g + k2 xc + k3 with per-channel k1 = inv gamma,
      // k2 = -k1 inv dgamma / M, k3 = -k1 dbias / M over M = N H W. Four passes over the map where the textbook chain
      // through dxhat took eight.
      const { centred, inv, scale: k1, count } = saved.batchNorm;
      const axes = b.int64s([0, 2, 3]);
      const dgamma = b.op1('Mul', [b.op1('ReduceSum', [b.op1('Mul', [g, centred]), axes], { keepdims: 1 }), inv]);
      const dbias = b.op1('ReduceSum', [g, axes], { keepdims: 1 });
      if (opts.weightGradients) {
        const flat = b.int64s([l.channels]);
        weightGrad(`${l.name}.weight`, b.op1('Reshape', [dgamma, flat]));
        weightGrad(`${l.name}.bias`, b.op1('Reshape', [dbias, flat]));
      }
      const perValue = b.op1('Div', [k1, count]);
      const k2 = b.op1('Neg', [b.op1('Mul', [b.op1('Mul', [perValue, dgamma]), inv])]);
      const k3 = b.op1('Neg', [b.op1('Mul', [perValue, dbias])]);
      return [b.op1('Add', [b.op1('Add', [b.op1('Mul', [g, k1]), b.op1('Mul', [centred, k2])]), k3])];
    }
    // Inference: a per-channel scale, baked from the weights (projection graphs hold the weights as constants).
    const gamma = weights.get(`${l.name}.weight`)!.data;
    const variance = weights.get(`${l.name}.running_var`)!.data;
    const scale = Array.from(gamma, (s, c) => s / Math.sqrt(variance[c] + l.eps));
    return [b.op1('Mul', [g, b.floats(scale, [l.channels, 1, 1])])];
  },
  box: () => 'per-position',
  onnx: {
    BatchNormalization(ctx, n) {
      if (intAttr(n, 'training_mode', 0) !== 0) refuse(n, 'training_mode is on');
      ctx.onlyFirstOutputUsed(n);
      const parts = PARTS.map((p, i): [string, ConstTensor] => [p, ctx.weight(n, i + 1, p)]);
      const channels = parts[0][1].dims.reduce((a, b) => a * b, 1);
      for (const [p, t] of parts) if (t.data.length !== channels || t.dims.length !== 1) refuse(n, `${p} has shape [${t.dims}], expected [${channels}]`);
      // ONNX's momentum weighs the running value (0.9 for PyTorch's 0.1).
      const momentum = Number((1 - floatAttr(n, 'momentum', 0.9)).toPrecision(7));
      const layer: BatchNorm = { type: 'batchnorm2d', name: '', channels, eps: floatAttr(n, 'epsilon', 1e-5) };
      if (momentum !== DEFAULT_MOMENTUM) layer.momentum = momentum;
      return { layer, params: parts };
    },
  },
};
