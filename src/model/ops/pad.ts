import type { Layer } from '../layers.js';
import { refuse, stringAttr } from '../onnx-import/attributes.js';
import { need, needMap } from './geometry.js';
import type { OpDef } from './types.js';

type Pad = Extract<Layer, { type: 'pad' }>;

/** Zero padding of a map, possibly asymmetric (nn.ZeroPad2d): [top, left, bottom, right]; the gradient is cropped back. */
export const pad: OpDef<Pad> = {
  params: () => [],
  fromJson(o, name) {
    const p = o.pads;
    if (!Array.isArray(p) || p.length !== 4 || !p.every((v) => Number.isInteger(v) && v >= 0)) throw new Error(`layer '${name}' (pad) needs pads [top, left, bottom, right] of non-negative integers, got ${JSON.stringify(p)}`);
    return { type: 'pad', name, pads: [p[0], p[1], p[2], p[3]] };
  },
  toJson: (l) => ({ type: l.type, name: l.name, pads: [...l.pads] }),
  shape(l, [s]) {
    needMap(l, s);
    need(l.pads.every((v) => Number.isInteger(v) && v >= 0), l, `pads [${l.pads}] must be non-negative integers`);
    const [top, left, bottom, right] = l.pads;
    return [s[0], s[1] + top + bottom, s[2] + left + right];
  },
  flops: (_l, _s, out) => out.reduce((a, d) => a * d, 1),
  // Output unit (0, 0) sits `top` rows and `left` columns before input unit (0, 0).
  rf: (l, [rf]) => (rf.global ? rf : { ...rf, start: [rf.start[0] - l.pads[0] * rf.jump[0], rf.start[1] - l.pads[1] * rf.jump[1]] }),
  forward: ({ b, out }, l, [x]) => {
    const [top, left, bottom, right] = l.pads;
    return b.op1('Pad', [x, b.int64s([0, 0, top, left, 0, 0, bottom, right])], { mode: 'constant' }, out);
  },
  backward({ b, info }, l, g) {
    const [, h, w] = info.inShape;
    const [top, left] = l.pads;
    return [b.op1('Slice', [g, b.int64s([top, left]), b.int64s([top + h, left + w]), b.int64s([2, 3])])];
  },
  // The planner's windows pad symmetrically; an asymmetric pad runs in full (and after it, the rest of the model).
  box: () => 'full',
  onnx: {
    Pad(ctx, n) {
      const mode = stringAttr(n, 'mode', 'constant');
      if (mode !== 'constant') refuse(n, `mode '${mode}': only zero padding (mode constant) is supported`);
      const pads = ctx.opset < 11 ? (n.attributes.get('pads')?.value as number[] | undefined) ?? [] : ctx.constInts(n, 1, 'pads');
      const value = ctx.opset < 11 ? 0 : ctx.optionalWeight(n, 2, 'constant value')?.data[0] ?? 0;
      if (value !== 0) refuse(n, `constant value ${value}: only zero padding is supported`);
      if ((n.inputs[3] ?? '') !== '') refuse(n, 'padding selected axes (the axes input) is not supported');
      if (pads.length !== 8) refuse(n, `pads [${pads}]: only 4-D [N, C, H, W] padding is supported`);
      const [n0, c0, top, left, n1, c1, bottom, right] = pads;
      if (n0 !== 0 || c0 !== 0 || n1 !== 0 || c1 !== 0) refuse(n, `pads [${pads}] pad the batch or channel axis`);
      if ([top, left, bottom, right].some((v) => v < 0)) refuse(n, `negative pads [${pads}] (cropping) are not supported`);
      // A zero pad (torch's avg_pool2d emits one) is no layer at all.
      if (top + left + bottom + right === 0) return {};
      return { layer: { type: 'pad', name: '', pads: [top, left, bottom, right] } };
    },
  },
};
