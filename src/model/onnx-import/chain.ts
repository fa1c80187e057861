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
import { finalLayerNames, type Named } from './names.js';
import { ShapeEvaluator } from './shape-eval.js';

export class ChainImporter {
  private readonly shapes: ShapeEvaluator;
  private readonly lrn: LrnMatcher;
  private readonly nodes: NodeConverter;
  private readonly layers: Layer[] = [];
  private readonly weights = new Map<string, Tensor>();
  private readonly named: Named[] = [];
  /** Chain tensor -> the draft name of the layer whose output it is. */
  private readonly layerOf = new Map<string, string>();

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

  run(): { layers: Layer[]; weights: Map<string, Tensor> } & OnnxNames {
    const outputs = this.ix.graph.outputs;
    if (outputs.length !== 1) throw new Error(`the graph has ${outputs.length} outputs; convscope imports single-output chains`);
    let x = this.inShape.name;
    for (;;) {
      const users = this.dataUsers(x);
      if (users.length === 0) break;
      const step = this.lrn.match(x, users) ?? this.nodes.convert(this.single(x, users));
      for (const d of [step.pre, step.draft, step.post]) if (d) this.add(d);
      const last = this.layers.at(-1);
      if (last) this.layerOf.set(step.out, last.name);
      this.shapes.chainShapes.set(step.out, ['N', ...this.currentShape()]);
      x = step.out;
    }
    if (x !== outputs[0].name) {
      const from = this.ix.producer.get(outputs[0].name);
      throw new Error(`graph output '${outputs[0].name}'${from ? ` (from node '${from.name}')` : ''} is not reached by the layer chain from input '${this.inShape.name}', which ends at '${x}'`);
    }
    if (this.layers.length === 0) throw new Error('the graph has no layers');
    const final = finalLayerNames(this.named, new Set());
    const names = new Map(this.layers.map((l, i) => [l.name, final[i]]));
    return { ...renameLayers(this.layers, this.weights, names), ...onnxNames(this.layerOf, this.named, names) };
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
    const name = draftName(this.layers.length);
    d.layer.name = name;
    this.layers.push(d.layer);
    this.named.push({ layer: d.layer, origins: [...(d.namedBy ?? d.params.values())].map((t) => t.origin), node: d.node });
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

/** A placeholder name, unique by position, until finalLayerNames names the layers. */
export function draftName(position: number): string {
  return `#${position}`;
}

/**
 * Where each layer came from in the file: `tensors` maps ONNX data tensors and the nodes that made layers to the
 * layer's final name; `sources` maps each layer to its node and the tensor that carries its output.
 */
export function onnxNames(layerOf: ReadonlyMap<string, string>, named: readonly Named[], names: ReadonlyMap<string, string>): OnnxNames {
  const tensors = new Map([...layerOf].map(([t, l]) => [t, names.get(l) ?? l]));
  const sources = new Map<string, { node: string; output: string }>();
  for (const [t, l] of tensors) if (!sources.has(l)) sources.set(l, { node: '', output: t });
  for (const n of named) {
    const layer = names.get(n.layer.name);
    if (!layer) continue;
    if (n.node.name) tensors.set(n.node.name, layer);
    sources.set(layer, { node: n.node.name, output: sources.get(layer)?.output ?? n.node.outputs[0] });
  }
  return { tensors, sources };
}

export interface OnnxNames {
  tensors: Map<string, string>;
  sources: Map<string, { node: string; output: string }>;
}

/** Renames draft-named layers (their inputs and weights too) to their final names. */
export function renameLayers(layers: Layer[], weights: Map<string, Tensor>, names: Map<string, string>): { layers: Layer[]; weights: Map<string, Tensor> } {
  const rename = (n: string) => names.get(n) ?? n;
  const renamed = layers.map((l) => ({ ...l, name: rename(l.name), ...(l.inputs ? { inputs: l.inputs.map(rename) } : {}) }));
  const out = new Map<string, Tensor>();
  for (const [key, t] of weights) {
    const dot = key.indexOf('.');
    out.set(`${rename(key.slice(0, dot))}${key.slice(dot)}`, t);
  }
  return { layers: renamed, weights: out };
}
