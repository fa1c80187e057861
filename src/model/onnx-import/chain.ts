// The chain walk: from the image input along its single data path, every node that reads the path becomes one layer
// (or nothing), until the graph output; a branch, or an op convscope cannot run faithfully, is refused with the node named.
import type { NodeProto } from '../../onnx/proto.js';
import type { Tensor } from '../../tensor.js';
import type { Layer } from '../layers.js';
import { inferShapes } from '../shapes.js';
import { refuse, unsupportedOp } from './attributes.js';
import type { GraphIndex, InputShape } from './graph.js';
import { LrnMatcher } from './lrn-pattern.js';
import { LAYER_OPS, NodeConverter, type Draft } from './node-layers.js';
import { ShapeEvaluator } from './shape-eval.js';

export class ChainImporter {
  private readonly shapes: ShapeEvaluator;
  private readonly lrn: LrnMatcher;
  private readonly nodes: NodeConverter;
  private readonly layers: Layer[] = [];
  private readonly weights = new Map<string, Tensor>();
  private readonly taken = new Set<string>();

  constructor(
    private readonly ix: GraphIndex,
    opset: number,
    private readonly inShape: InputShape,
  ) {
    this.shapes = new ShapeEvaluator(ix);
    this.shapes.chainShapes.set(inShape.name, ['N', ...inShape.chw]);
    this.lrn = new LrnMatcher(ix, this.shapes);
    this.nodes = new NodeConverter(ix, this.shapes, opset, inShape.fixedBatch, () => this.currentShape());
  }

  run(): { layers: Layer[]; weights: Map<string, Tensor> } {
    const outputs = this.ix.graph.outputs;
    if (outputs.length !== 1) throw new Error(`the graph has ${outputs.length} outputs; convscope imports single-output chains`);
    let x = this.inShape.name;
    for (;;) {
      const users = this.dataUsers(x);
      if (users.length === 0) break;
      const step = this.lrn.match(x, users) ?? this.nodes.convert(this.single(x, users));
      if (step.draft) this.add(step.draft);
      this.shapes.chainShapes.set(step.out, ['N', ...this.currentShape()]);
      x = step.out;
    }
    if (x !== outputs[0].name) {
      const from = this.ix.producer.get(outputs[0].name);
      throw new Error(`graph output '${outputs[0].name}'${from ? ` (from node '${from.name}')` : ''} is not reached by the layer chain from input '${this.inShape.name}', which ends at '${x}'`);
    }
    if (this.layers.length === 0) throw new Error('the graph has no layers');
    return { layers: this.layers, weights: this.weights };
  }

  /** Readers of a chain tensor other than Shape, which only looks at its size. */
  private dataUsers(x: string): NodeProto[] {
    return (this.ix.consumers.get(x) ?? []).filter((n) => n.opType !== 'Shape');
  }

  private currentShape(): number[] {
    if (this.layers.length === 0) return [...this.inShape.chw];
    return inferShapes({ input: this.inShape.chw, layers: this.layers }).at(-1)!.outShape;
  }

  private add(d: Draft): void {
    const name = uniqueLayerName(d, this.taken, this.layers.length);
    d.layer.name = name;
    this.layers.push(d.layer);
    for (const [suffix, t] of d.params) this.weights.set(`${name}.${suffix}`, { shape: [...t.dims], data: t.data });
    // Shapes are checked layer by layer so that a mismatch names the layer where it starts.
    this.currentShape();
  }

  /** The one reader of chain tensor x, which must read it as its data input. */
  private single(x: string, users: NodeProto[]): NodeProto {
    if (users.length > 1) {
      const from = this.ix.producer.get(x);
      const list = users.map((u) => `'${u.name}' (${u.opType})`).join(', ');
      throw new Error(`branching graph: tensor '${x}'${from ? ` from node '${from.name}' (${from.opType})` : ''} feeds ${users.length} nodes: ${list}; convscope imports chains of layers only`);
    }
    const n = users[0];
    if (!LAYER_OPS.has(n.opType)) unsupportedOp(n);
    if (n.inputs[0] !== x) refuse(n, `reads the layer chain as input ${n.inputs.indexOf(x)}, not as its data input`);
    return n;
  }
}

/** `conv1.weight` -> `conv1`, `features.0.bias` -> `features.0`: PyTorch's module path. */
/**
 * A layer name from the draft's weights (`features.0`), else its node's scope, else op and position; made unique
 * against `taken` with a suffix and added to it.
 */
export function uniqueLayerName(d: Draft, taken: Set<string>, position: number): string {
  const base = layerNameFromWeights([...d.params.values()].map((t) => t.origin)) ?? layerNameFromNode(d.node) ?? `${d.node.opType.toLowerCase()}${position}`;
  let name = base;
  for (let k = 2; taken.has(name); k++) name = `${base}_${k}`;
  taken.add(name);
  return name;
}

export function layerNameFromWeights(origins: string[]): string | undefined {
  for (const o of origins) {
    const m = /^(.+)\.(weight|bias|running_mean|running_var)$/.exec(o);
    if (m) return m[1];
  }
  return undefined;
}

/** `/relu1/Relu` -> `relu1`, `/features/features.1/Relu` -> `features.1`: torch names nodes by module scope. */
export function layerNameFromNode(n: NodeProto): string | undefined {
  const parts = n.name.split('/').filter((p) => p !== '');
  return n.name.startsWith('/') && parts.length >= 2 ? parts[parts.length - 2] : undefined;
}
