// What every element-wise activation shares: no weights, the input's shape and field, one op per value, run position
// by position. Each kind (sigmoid.ts, clip.ts, ...) adds its forward, its true gradient and its ONNX mapping: only
// Relu takes the deconvnet and guided rules (as Captum rules nn.ReLU modules only), the others always pass their
// true gradient, whatever the rule.
import type { Layer, LayerJson } from '../layers.js';
import { inputSize, noParams, sameRf, sameShape } from './geometry.js';
import type { BackwardContext, ForwardContext, OpDef } from './types.js';

type Fields<L extends Layer> = Omit<L, 'type' | 'name' | 'inputs'>;

export function activation<L extends Layer>(spec: {
  type: L['type'];
  /** The kind's fields from its JSON form (snake_case keys), and back. */
  fromJson: (o: LayerJson) => Fields<L>;
  toJson: (l: L) => Record<string, unknown>;
  forward: (ctx: ForwardContext, l: L, x: string) => string;
  /** dLoss/dx from g, with the forward input x and output y at hand. */
  gradient: (ctx: BackwardContext, l: L, g: string, x: string, y: string) => string;
  onnx: OpDef<L>['onnx'];
}): OpDef<L> {
  return {
    params: noParams,
    fromJson: (o, name) => ({ type: spec.type, name, ...spec.fromJson(o) }) as unknown as L,
    toJson: (l) => ({ type: l.type, name: l.name, ...spec.toJson(l) }),
    shape: sameShape,
    flops: inputSize,
    rf: sameRf,
    forward: (ctx, l, [x]) => spec.forward(ctx, l, x),
    backward: (ctx, l, g) => [spec.gradient(ctx, l, g, ctx.inputs[0], ctx.output)],
    box: () => 'per-position',
    onnx: spec.onnx,
  };
}
