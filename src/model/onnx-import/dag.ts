// The graph walk: every node that reads the image's data (directly or through other data nodes) becomes one layer or
// nothing, in the file's node order (ONNX lists nodes topologically); Add and Concat of data tensors become merge
// layers that name their producers. Chains keep the chain walk (chain.ts), which also knows the LRN subgraph.
import type { NodeProto } from '../../onnx/proto.js';
import type { Tensor } from '../../tensor.js';
import { MODEL_INPUT, withChainInputs } from '../graph.js';
import type { Layer } from '../layers.js';
import { opOf } from '../ops/index.js';
import { refuse, unsupportedOp } from './attributes.js';
import { draftName, onnxNames, renameLayers, type OnnxNames } from './chain.js';
import { finalLayerNames, type Named } from './names.js';
import type { GraphIndex, InputShape } from './graph.js';
import { LAYER_OPS, NodeConverter, type Draft } from './node-layers.js';
import { ShapeEvaluator } from './shape-eval.js';

/** ONNX ops that merge data tensors, and the layer each becomes. */
const MERGES: Record<string, 'add' | 'concat' | 'mul'> = { Add: 'add', Sum: 'add', Concat: 'concat', Mul: 'mul' };

/** Tensors computed from the image (Shape nodes only read its size, so they end the data path). */
function dataTensors(ix: GraphIndex, input: string): Set<string> {
  const data = new Set([input]);
  for (const n of ix.graph.nodes) {
    if (n.opType !== 'Shape' && n.inputs.some((i) => data.has(i))) for (const o of n.outputs) if (o) data.add(o);
  }
  return data;
}

/** Whether the data path merges anywhere: then the chain walk cannot import the graph. */
export function hasMerges(ix: GraphIndex, input: string): boolean {
  const data = dataTensors(ix, input);
  // Two distinct tensors: x * x (the square inside the LRN subgraph) is no merge of paths.
  return ix.graph.nodes.some((n) => n.opType in MERGES && new Set(n.inputs.filter((i) => data.has(i))).size >= 2);
}

export class GraphImporter {
  private readonly shapes: ShapeEvaluator;
  private readonly layers: Layer[] = [];
  private readonly weights = new Map<string, Tensor>();
  private readonly named: Named[] = [];
  /** Data tensor -> the layer whose output it is (MODEL_INPUT for the image). */
  private readonly layerOf = new Map<string, string>();
  private readonly outShape = new Map<string, number[]>([[MODEL_INPUT, []]]);
  /** Nodes a converter already took in (the bias Add after a MatMul). */
  private readonly consumed = new Set<NodeProto>();
  private reading: string = MODEL_INPUT;

  constructor(
    private readonly ix: GraphIndex,
    private readonly opset: number,
    private readonly inShape: InputShape,
  ) {
    this.shapes = new ShapeEvaluator(ix);
    this.shapes.chainShapes.set(inShape.name, ['N', ...inShape.chw]);
    this.layerOf.set(inShape.name, MODEL_INPUT);
    this.outShape.set(MODEL_INPUT, [...inShape.chw]);
  }

  run(): { layers: Layer[]; weights: Map<string, Tensor> } & OnnxNames {
    const outputs = this.ix.graph.outputs;
    if (outputs.length !== 1) throw new Error(`the graph has ${outputs.length} outputs; convscope imports single-output models`);
    const nodes = new NodeConverter(this.ix, this.shapes, this.opset, this.inShape.fixedBatch, () => this.outShape.get(this.reading)!);
    for (const n of this.ix.graph.nodes) {
      if (this.consumed.has(n) || n.opType === 'Shape') continue;
      const reads = n.inputs.filter((i) => this.layerOf.has(i));
      if (reads.length === 0) continue;
      if (n.opType in MERGES && reads.length >= 2) {
        if (reads.length !== n.inputs.filter((i) => i !== '').length) refuse(n, 'merges the data path with a constant');
        this.add({ layer: { type: MERGES[n.opType], name: '', inputs: reads.map((r) => this.layerOf.get(r)!) }, params: new Map(), node: n }, n.outputs[0]);
        continue;
      }
      // torch.cat of a one-tensor list (DenseNet's first dense layer) is that tensor.
      if (n.opType === 'Concat' && n.inputs.filter((i) => i !== '').length === 1) {
        this.alias(n.outputs[0], this.layerOf.get(reads[0])!);
        continue;
      }
      if (!LAYER_OPS.has(n.opType)) unsupportedOp(n);
      if (reads.length > 1 || n.inputs[0] !== reads[0]) refuse(n, `reads the data path as input ${n.inputs.indexOf(reads[0])}, not as its data input`);
      this.reading = this.layerOf.get(reads[0])!;
      const step = nodes.convert(n);
      if (step.out !== n.outputs[0]) for (const c of this.ix.consumers.get(n.outputs[0]) ?? []) this.consumed.add(c);
      if (!step.draft) {
        this.alias(step.out, this.reading);
        continue;
      }
      // The node's layers in order, the last one producing its output tensor.
      const drafts = [step.pre, step.draft, step.post].filter((d) => d !== undefined);
      for (const [k, d] of drafts.entries()) {
        this.reading = this.add({ ...d, layer: { ...d.layer, inputs: [this.reading] } }, k === drafts.length - 1 ? step.out : undefined);
      }
    }
    const out = outputs[0].name;
    const last = this.layers.at(-1);
    if (!last || this.layerOf.get(out) !== last.name) {
      const from = this.ix.producer.get(out);
      throw new Error(`graph output '${out}'${from ? ` (from node '${from.name}')` : ''} is not the last layer computed from input '${this.inShape.name}'`);
    }
    const final = finalLayerNames(this.named, new Set([MODEL_INPUT]));
    const names = new Map(this.layers.map((l, i) => [l.name, final[i]]));
    const { layers, weights } = renameLayers(this.layers, this.weights, names);
    return { layers: withChainInputs(layers), weights, ...onnxNames(this.layerOf, this.named, names) };
  }

  private alias(tensor: string, layer: string): void {
    this.layerOf.set(tensor, layer);
    this.shapes.chainShapes.set(tensor, ['N', ...this.outShape.get(layer)!]);
  }

  /** Adds the layer, as the producer of tensor `out` when given; returns its (draft) name. */
  private add(d: Draft, out?: string): string {
    const layer = { ...d.layer, name: draftName(this.layers.length) };
    this.layers.push(layer);
    this.named.push({ layer, origins: [...(d.namedBy ?? d.params.values())].map((t) => t.origin), node: d.node });
    for (const [suffix, t] of d.params) this.weights.set(`${layer.name}.${suffix}`, { shape: [...t.dims], data: t.data });
    // Shapes are checked layer by layer so that a mismatch names the layer where it starts.
    this.outShape.set(layer.name, opOf(layer).shape(layer, layer.inputs!.map((i) => this.outShape.get(i)!)));
    if (out !== undefined) this.alias(out, layer.name);
    return layer.name;
  }
}
