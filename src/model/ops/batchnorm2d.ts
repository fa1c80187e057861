import type { Layer } from '../layers.js';
import { floatAttr, intAttr, refuse } from '../onnx-import/attributes.js';
import type { ConstTensor } from '../onnx-import/constants.js';
import { need, num, sameRf } from './geometry.js';
import type { OpDef } from './types.js';

type BatchNorm = Extract<Layer, { type: 'batchnorm2d' }>;

/** The parameters in ONNX's input order, with how a fresh model starts them. */
const INIT = { weight: 'ones', bias: 'zeros', running_mean: 'zeros', running_var: 'ones' } as const;
const PARTS = Object.keys(INIT) as (keyof typeof INIT)[];

export const batchnorm2d: OpDef<BatchNorm> = {
  params: (l) => PARTS.map((p) => ({ key: `${l.name}.${p}`, shape: [l.channels], init: INIT[p] })),
  fromJson: (o, name) => ({ type: 'batchnorm2d', name, channels: num(o, 'channels'), eps: num(o, 'eps', 1e-5) }),
  toJson: (l) => ({ type: l.type, name: l.name, channels: l.channels, eps: l.eps }),
  shape(l, [s]) {
    need(s.length === 3 && s[0] === l.channels, l, `expects [${l.channels},H,W], gets [${s}]`);
    return s;
  },
  flops: (_l, [s]) => 2 * s.reduce((a, d) => a * d, 1),
  rf: sameRf,
  forward({ b, weight, out }, l, [x]) {
    const p = (s: string) => weight(`${l.name}.${s}`);
    return b.op1('BatchNormalization', [x, p('weight'), p('bias'), p('running_mean'), p('running_var')], { epsilon: { float: l.eps } }, out);
  },
  backward({ b, weights }, l, g) {
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
      return { layer: { type: 'batchnorm2d', name: '', channels, eps: floatAttr(n, 'epsilon', 1e-5) }, params: parts };
    },
  },
};
