// The ONNX graph as convscope reads it: who produces and who reads each tensor, and the one image input.
import { DataType, type GraphProto, type NodeProto, type TensorProto, type ValueInfo } from '../../onnx/proto.js';

export interface GraphIndex {
  graph: GraphProto;
  producer: Map<string, NodeProto>;
  /** Readers of each tensor; a node whose subgraph (If branches) reads an outer tensor counts as its reader. */
  consumers: Map<string, NodeProto[]>;
  initializers: Map<string, TensorProto>;
}

export function subgraphs(n: NodeProto): GraphProto[] {
  return [...n.attributes.values()].flatMap((a) => (a.kind === 'graph' ? [a.value] : []));
}

/** Outer-scope tensors that a subgraph reads (the implicit inputs of an If branch). */
function outerReads(g: GraphProto): string[] {
  const local = new Set([...g.initializers.map((t) => t.name), ...g.inputs.map((v) => v.name), ...g.nodes.flatMap((n) => n.outputs)]);
  const reads = g.nodes.flatMap((n) => [...n.inputs, ...subgraphs(n).flatMap(outerReads)]);
  return reads.filter((name) => name !== '' && !local.has(name));
}

export function nodeReads(n: NodeProto): string[] {
  return [...new Set([...n.inputs.filter((i) => i !== ''), ...subgraphs(n).flatMap(outerReads)])];
}

export function indexGraph(graph: GraphProto): GraphIndex {
  const producer = new Map<string, NodeProto>();
  const consumers = new Map<string, NodeProto[]>();
  graph.nodes.forEach((n, i) => {
    if (!n.name) n.name = `<unnamed ${n.opType} node #${i}>`;
    // An op of another domain only shares its name with the standard one (com.evil's Relu need not be a ReLU).
    if (n.domain !== '' && n.domain !== 'ai.onnx') throw new Error(`unsupported ONNX op '${n.domain}.${n.opType}' at node '${n.name}': only the standard domain's ops are read`);
    for (const o of n.outputs) if (o) producer.set(o, n);
    for (const t of nodeReads(n)) {
      const list = consumers.get(t) ?? [];
      list.push(n);
      consumers.set(t, list);
    }
  });
  // ONNX lists nodes in topological order; a node reading a tensor that a later node writes is a cycle (or a file
  // out of order), which every walk below would misread.
  const position = new Map(graph.nodes.map((n, i) => [n, i]));
  graph.nodes.forEach((n, i) => {
    for (const t of nodeReads(n)) {
      const from = producer.get(t);
      if (from && position.get(from)! >= i) throw new Error(`node '${n.name}' (${n.opType}) reads '${t}', which node '${from.name}' (${from.opType}) writes after it: the graph has a cycle or lists its nodes out of order`);
    }
  });
  return { graph, producer, consumers, initializers: new Map(graph.initializers.map((t) => [t.name, t])) };
}

/** The one graph input that is not a weight (older torch exports list every initializer as an input too). */
export function findDataInput(graph: GraphProto, ix: GraphIndex): ValueInfo {
  const data = graph.inputs.filter((v) => !ix.initializers.has(v.name));
  if (data.length !== 1) {
    const names = data.map((v) => `'${v.name}'`).join(', ') || 'none';
    throw new Error(`the graph has ${data.length} data inputs (${names}); convscope imports models with exactly one image input`);
  }
  return data[0];
}

/** The image input: its tensor name and its shape without the batch axis. */
export interface InputShape {
  name: string;
  chw: [number, number, number];
  /** The batch dimension when the export fixed it, else undefined. */
  fixedBatch?: number;
}

export function inputShape(v: ValueInfo): InputShape {
  if (v.elemType !== DataType.FLOAT) throw new Error(`input '${v.name}' has element type ${v.elemType}; convscope needs float32 input`);
  if (v.shape.length !== 4) throw new Error(`input '${v.name}' has shape [${v.shape}]; convscope needs [N, C, H, W]`);
  const [n, c, h, w] = v.shape;
  if (typeof h !== 'number' || typeof w !== 'number') {
    throw new Error(`input '${v.name}' has a symbolic size [${v.shape}]; re-export with a fixed height and width (only the batch axis may be dynamic)`);
  }
  if (typeof c !== 'number') throw new Error(`input '${v.name}' has a symbolic channel count [${v.shape}]`);
  return { name: v.name, chw: [c, h, w], ...(typeof n === 'number' && n > 0 ? { fixedBatch: n } : {}) };
}
