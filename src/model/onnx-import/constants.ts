// Values fixed at export time: initializers and Constant nodes, decoded from any element type ONNX stores them in.
import { DataType, type AttributeValue, type NodeProto, type TensorProto } from '../../onnx/proto.js';
import { sizeOf } from '../../tensor.js';
import { halfToFloat } from '../../util/half.js';
import type { GraphIndex } from './graph.js';

/** onnx.proto's TensorProto.FLOAT16. */
const FLOAT16 = 10;

/** A float32 value that was written as a decimal in PyTorch (1e-4) comes back as that decimal, not 9.99999974e-5. */
export function float32Decimal(v: number): number {
  if (!Number.isFinite(v) || Math.fround(v) !== v) return v;
  for (let p = 1; p <= 9; p++) {
    const d = Number(v.toPrecision(p));
    if (Math.fround(d) === v) return d;
  }
  return v;
}

const ELEMENT_READERS: Record<number, [number, (dv: DataView, o: number) => number]> = {
  [DataType.FLOAT]: [4, (dv, o) => dv.getFloat32(o, true)],
  [DataType.DOUBLE]: [8, (dv, o) => dv.getFloat64(o, true)],
  [FLOAT16]: [2, (dv, o) => halfToFloat(dv.getUint16(o, true))],
  [DataType.INT64]: [8, (dv, o) => Number(dv.getBigInt64(o, true))],
  [DataType.INT32]: [4, (dv, o) => dv.getInt32(o, true)],
  [DataType.INT8]: [1, (dv, o) => dv.getInt8(o)],
  [DataType.UINT8]: [1, (dv, o) => dv.getUint8(o)],
  [DataType.BOOL]: [1, (dv, o) => dv.getUint8(o)],
};

export function isFloatType(t: number): boolean {
  return t === DataType.FLOAT || t === DataType.DOUBLE || t === FLOAT16;
}

/** The values of a tensor as numbers, whatever its element type. */
export function tensorValues(t: TensorProto): number[] | Float32Array {
  const n = sizeOf(t.dims);
  if (t.dataType === DataType.FLOAT && t.raw.length === n * 4) {
    // Copy into a fresh, aligned buffer: raw is a view into the file and may start at any byte offset.
    const out = new Float32Array(n);
    new Uint8Array(out.buffer).set(t.raw);
    return out;
  }
  const reader = ELEMENT_READERS[t.dataType];
  if (!reader) throw new Error(`tensor '${t.name}' has ONNX element type ${t.dataType}, which convscope does not read`);
  const [width, read] = reader;
  if (t.raw.length !== n * width) throw new Error(`tensor '${t.name}' holds ${t.raw.length} bytes for ${n} values of type ${t.dataType}`);
  const dv = new DataView(t.raw.buffer, t.raw.byteOffset, t.raw.byteLength);
  return Array.from({ length: n }, (_, i) => read(dv, i * width));
}

/** A float tensor fixed at export time, with the name it has in the file (the weight's PyTorch name, usually). */
export interface ConstTensor {
  dims: number[];
  data: Float32Array;
  origin: string;
}

/** A constant's values before conversion to float32; isFloat tells integer arithmetic (shapes) from float. */
export interface ConstValue {
  dims: number[];
  values: number[] | Float32Array;
  isFloat: boolean;
}

export function tensorFromAttribute(a: AttributeValue | undefined): ConstValue | undefined {
  if (!a) return undefined;
  switch (a.kind) {
    case 'tensor': return { dims: a.value.dims, values: tensorValues(a.value), isFloat: isFloatType(a.value.dataType) };
    case 'float': return { dims: [], values: [a.value], isFloat: true };
    case 'floats': return { dims: [a.value.length], values: a.value, isFloat: true };
    case 'int': return { dims: [], values: [a.value], isFloat: false };
    case 'ints': return { dims: [a.value.length], values: a.value, isFloat: false };
    default: return undefined;
  }
}

export function constantNodeValue(n: NodeProto): ConstValue | undefined {
  for (const key of ['value', 'value_float', 'value_floats', 'value_int', 'value_ints']) {
    const v = tensorFromAttribute(n.attributes.get(key));
    if (v) return v;
  }
  return undefined;
}

/** An initializer or a Constant node's value, looking through Identity (torch's way to share one weight). */
export function constTensor(ix: GraphIndex, name: string): ConstTensor | undefined {
  if (!name) return undefined;
  const init = ix.initializers.get(name);
  if (init) return { dims: init.dims, data: asFloat32(tensorValues(init)), origin: name };
  const n = ix.producer.get(name);
  if (n?.opType === 'Identity') return constTensor(ix, n.inputs[0]);
  if (n?.opType === 'Constant') {
    const v = constantNodeValue(n);
    return v && { dims: v.dims, data: asFloat32(v.values), origin: name };
  }
  return undefined;
}

function asFloat32(values: number[] | Float32Array): Float32Array {
  // tensorValues already returns a private copy for float32 data; a 250 MB model should not be copied twice.
  return values instanceof Float32Array ? values : Float32Array.from(values);
}
