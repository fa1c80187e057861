import { DataType, encodeModel, type AttributeValue, type NodeProto, type TensorProto, type ValueInfo } from './proto.js';

export const OPSET = 18;

export type AttrInput = number | string | number[] | { floats: number[] } | { float: number };

function toAttribute(v: AttrInput): AttributeValue {
  if (typeof v === 'string') return { kind: 'string', value: v };
  if (typeof v === 'number') return { kind: 'int', value: v };
  if (Array.isArray(v)) return { kind: 'ints', value: v };
  if ('floats' in v) return { kind: 'floats', value: v.floats };
  return { kind: 'float', value: v.float };
}

/** Builds one ONNX graph node by node; tensor names are generated unique unless given. */
export class GraphBuilder {
  private nodes: NodeProto[] = [];
  private initializers: TensorProto[] = [];
  private inputs: ValueInfo[] = [];
  private outputs: ValueInfo[] = [];
  private counter = 0;
  private constants = new Map<string, string>();

  fresh(hint: string): string {
    return `${hint}__${this.counter++}`;
  }

  input(name: string, shape: (number | string)[], elemType = DataType.FLOAT): string {
    this.inputs.push({ name, elemType, shape });
    return name;
  }

  output(name: string, shape: (number | string)[], elemType = DataType.FLOAT): void {
    this.outputs.push({ name, elemType, shape });
  }

  /** Adds a node and returns its output names (count = `outputs`). */
  op(opType: string, inputs: string[], attrs: Record<string, AttrInput> = {}, outputs: number | string[] = 1): string[] {
    const outs = typeof outputs === 'number' ? Array.from({ length: outputs }, () => this.fresh(opType)) : outputs;
    const attributes = new Map<string, AttributeValue>();
    for (const [k, v] of Object.entries(attrs)) attributes.set(k, toAttribute(v));
    this.nodes.push({ name: this.fresh(`n_${opType}`), opType, domain: '', inputs, outputs: outs, attributes });
    return outs;
  }

  /** Single-output node. */
  op1(opType: string, inputs: string[], attrs: Record<string, AttrInput> = {}, output?: string): string {
    return this.op(opType, inputs, attrs, output ? [output] : 1)[0];
  }

  floatTensor(name: string, dims: number[], data: Float32Array): string {
    this.initializers.push({ name, dims, dataType: DataType.FLOAT, raw: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
    return name;
  }

  /** A float constant (shared between uses); a scalar when dims is []. */
  floats(values: number[], dims: number[] = [values.length]): string {
    const key = `f:${dims}:${values}`;
    const known = this.constants.get(key);
    if (known) return known;
    const name = this.floatTensor(this.fresh('const_f'), dims, Float32Array.from(values));
    this.constants.set(key, name);
    return name;
  }

  int64s(values: number[], dims: number[] = [values.length]): string {
    const key = `i:${dims}:${values}`;
    const known = this.constants.get(key);
    if (known) return known;
    const name = this.fresh('const_i');
    const data = BigInt64Array.from(values.map((v) => BigInt(v)));
    this.initializers.push({ name, dims, dataType: DataType.INT64, raw: new Uint8Array(data.buffer) });
    this.constants.set(key, name);
    return name;
  }

  encode(graphName: string): Uint8Array {
    return encodeModel({
      irVersion: 8,
      opsetVersion: OPSET,
      producer: 'convscope',
      graph: { name: graphName, nodes: this.nodes, initializers: this.initializers, inputs: this.inputs, outputs: this.outputs },
    });
  }
}
