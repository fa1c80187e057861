// What convscope layer an ONNX node becomes: one op at a time, through the op table's import mappings, which check the
// attributes against what the layer means and take the weights from the graph's constants. Nothing here knows how the
// nodes are connected beyond the node itself.
import type { NodeProto } from '../../onnx/proto.js';
import type { Layer } from '../layers.js';
import { OPS } from '../ops/index.js';
import type { ImportContext, Imported } from '../ops/types.js';
import { refuse, unsupportedOp } from './attributes.js';
import { constTensor, type ConstTensor } from './constants.js';
import type { GraphIndex } from './graph.js';
import { NotConstant, type ShapeEvaluator, type Sym } from './shape-eval.js';

/** A layer found in the graph, before it gets its final (unique) name. */
export interface Draft {
  layer: Layer;
  /** Weights by parameter suffix: weight, bias, running_mean, running_var. */
  params: Map<string, ConstTensor>;
  /** The node that names the layer when its weights do not. */
  node: NodeProto;
  /** Weights that name a layer without its own: the node's main layer's (`stem.pad` before the conv `stem`). */
  namedBy?: ConstTensor[];
}

export interface Step {
  /** Layers the node implies before and after its own (named from the same node). */
  pre?: Draft;
  draft?: Draft;
  post?: Draft;
  /** The tensor the next layer reads. */
  out: string;
}

/** ONNX op type -> the op table's converter that turns such a node into a layer. */
const CONVERTERS = new Map<string, (ctx: ImportContext, n: NodeProto) => Imported<Layer>>(
  Object.values(OPS).flatMap((op) => Object.entries(op.onnx as Record<string, (ctx: ImportContext, n: NodeProto) => Imported<Layer>>)),
);

/** The ops that convert() turns into a layer (or into nothing, like Identity). */
export const LAYER_OPS: ReadonlySet<string> = new Set([...CONVERTERS.keys(), 'Identity']);

export class NodeConverter implements ImportContext {
  constructor(
    private readonly ix: GraphIndex,
    private readonly shapes: ShapeEvaluator,
    readonly opset: number,
    /** The batch dimension when the export fixed it: a Reshape may name it instead of -1 or 0. */
    readonly fixedBatch: number | undefined,
    /** The [C, H, W] or [F] shape of the tensor the node reads. */
    readonly currentShape: () => number[],
  ) {}

  /** The layer that node `n`, reading the chain as its first input, becomes; Identity becomes nothing. */
  convert(n: NodeProto): Step {
    if (n.opType === 'Identity') return { out: n.outputs[0] };
    const converter = CONVERTERS.get(n.opType);
    if (!converter) unsupportedOp(n);
    const { layer, params = [], out = n.outputs[0], pre, post } = converter(this, n);
    if (!layer) return { out };
    const weights = params.filter((p): p is [string, ConstTensor] => p[1] !== undefined);
    const implied = (l: Layer): Draft => ({ layer: l, node: n, params: new Map(), namedBy: weights.map(([, t]) => t) });
    return {
      ...(pre ? { pre: implied(pre) } : {}),
      draft: { layer, node: n, params: new Map(weights) },
      ...(post ? { post: implied(post) } : {}),
      out,
    };
  }

  weight(n: NodeProto, index: number, what: string): ConstTensor {
    const t = constTensor(this.ix, n.inputs[index] ?? '');
    if (!t) refuse(n, `its ${what} '${n.inputs[index] ?? ''}' is not a constant (initializer or Constant node)`);
    return t;
  }

  optionalWeight(n: NodeProto, index: number, what: string): ConstTensor | undefined {
    return (n.inputs[index] ?? '') === '' ? undefined : this.weight(n, index, what);
  }

  constInts(n: NodeProto, index: number, what: string): number[] {
    return this.evaluated(n, what, () => this.shapes.ints(n.inputs[index]));
  }

  symbolicInts(n: NodeProto, index: number, what: string): Sym[] {
    return this.evaluated(n, what, () => this.shapes.eval(n.inputs[index]).data);
  }

  private evaluated<T>(n: NodeProto, what: string, f: () => T): T {
    try {
      return f();
    } catch (e) {
      if (e instanceof NotConstant) refuse(n, `cannot evaluate its ${what} (${e.message})`);
      throw e;
    }
  }

  onlyFirstOutputUsed(n: NodeProto): void {
    for (const o of n.outputs.slice(1)) {
      if (o && (this.ix.consumers.get(o)?.length || this.ix.graph.outputs.some((v) => v.name === o))) refuse(n, `its output '${o}' is used; convscope supports the first output only`);
    }
  }

  consumers(tensor: string): NodeProto[] {
    return this.ix.consumers.get(tensor) ?? [];
  }

  constant(tensor: string): ConstTensor | undefined {
    return constTensor(this.ix, tensor);
  }
}
