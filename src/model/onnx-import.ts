// ONNX -> convscope layer stack, for `torch.onnx.export` of nn.Sequential-like CNNs.
// The graph is walked along its single data path from the input; every node that touches that path must map to one
// layer (or to nothing, like Identity), so anything convscope could not run faithfully is refused with the node named.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { DataType, decodeModel, type AttributeValue, type GraphProto, type ModelProto, type NodeProto, type TensorProto } from '../onnx/proto.js';
import { sizeOf, type Tensor } from '../tensor.js';
import { layerFromJson, layerParams, validateModel, type Layer, type LayerJson, type Model, type Pair, type Preprocess } from './layers.js';
import { inferShapes } from './shapes.js';
import { halfToFloat } from '../util/half.js';

/** metadata_props keys that convscope writes on export, so that an import restores the model exactly. */
export const ONNX_META = {
  architecture: 'convscope.architecture',
  input: 'convscope.input',
  classes: 'convscope.classes',
  meanImage: 'convscope.mean_image',
} as const;

const DEFAULT_RGB_MEAN = [123.68, 116.78, 103.94];
const FLOAT16 = 10;

// ---------------------------------------------------------------- public API

/** A model from the bytes of an ONNX file; `path` names the file in errors and gives the model its name. */
export function modelFromOnnx(buf: Uint8Array, path: string): Model {
  try {
    return importModel(decodeOnnx(buf), path);
  } catch (e) {
    const msg = (e as Error).message.replace(/\s*\n\s*/g, ' ');
    throw new Error(msg.startsWith(`${path}: `) ? msg : `${path}: ${msg}`);
  }
}

export function readOnnxModel(path: string): Model {
  return modelFromOnnx(readFileSync(path), path);
}

function decodeOnnx(buf: Uint8Array): ModelProto {
  let proto: ModelProto;
  try {
    proto = decodeModel(buf);
  } catch (e) {
    throw new Error(`not a readable ONNX file (${(e as Error).message})`);
  }
  if (proto.graph.nodes.length === 0) throw new Error('not an ONNX model: its graph has no nodes');
  return proto;
}

function importModel(proto: ModelProto, path: string): Model {
  const meta = new Map((proto.metadataProps ?? []).map((e) => [e.key, e.value]));
  const ix = indexGraph(proto.graph);
  const dataInput = findDataInput(proto.graph, ix);
  const input = inputShape(dataInput);
  const archJson = meta.get(ONNX_META.architecture);
  const { layers, weights } = archJson ? layersFromMetadata(archJson, ix) : new ChainImporter(ix, proto.opsetVersion, dataInput, input).run();
  const model: Model = {
    name: basename(path).replace(/\.onnx$/i, ''),
    input: [input.chw[0], input.chw[1], input.chw[2]],
    layers,
    weights,
    preprocess: preprocessFromMetadata(meta, input.chw),
    ...classesFromMetadata(meta),
  };
  validateModel(model);
  inferShapes(model);
  return model;
}

// ---------------------------------------------------------------- graph index

interface GraphIndex {
  graph: GraphProto;
  producer: Map<string, NodeProto>;
  /** Readers of each tensor; a node whose subgraph (If branches) reads an outer tensor counts as its reader. */
  consumers: Map<string, NodeProto[]>;
  initializers: Map<string, TensorProto>;
}

function subgraphs(n: NodeProto): GraphProto[] {
  return [...n.attributes.values()].flatMap((a) => (a.kind === 'graph' ? [a.value] : []));
}

/** Outer-scope tensors that a subgraph reads (the implicit inputs of an If branch). */
function outerReads(g: GraphProto): string[] {
  const local = new Set([...g.initializers.map((t) => t.name), ...g.inputs.map((v) => v.name), ...g.nodes.flatMap((n) => n.outputs)]);
  const reads = g.nodes.flatMap((n) => [...n.inputs, ...subgraphs(n).flatMap(outerReads)]);
  return reads.filter((name) => name !== '' && !local.has(name));
}

function nodeReads(n: NodeProto): string[] {
  return [...new Set([...n.inputs.filter((i) => i !== ''), ...subgraphs(n).flatMap(outerReads)])];
}

function indexGraph(graph: GraphProto): GraphIndex {
  const producer = new Map<string, NodeProto>();
  const consumers = new Map<string, NodeProto[]>();
  graph.nodes.forEach((n, i) => {
    if (!n.name) n.name = `<unnamed ${n.opType} node #${i}>`;
    for (const o of n.outputs) if (o) producer.set(o, n);
    for (const t of nodeReads(n)) {
      const list = consumers.get(t) ?? [];
      list.push(n);
      consumers.set(t, list);
    }
  });
  return { graph, producer, consumers, initializers: new Map(graph.initializers.map((t) => [t.name, t])) };
}

/** The one graph input that is not a weight (older torch exports list every initializer as an input too). */
function findDataInput(graph: GraphProto, ix: GraphIndex): GraphProto['inputs'][number] {
  const data = graph.inputs.filter((v) => !ix.initializers.has(v.name));
  if (data.length !== 1) {
    const names = data.map((v) => `'${v.name}'`).join(', ') || 'none';
    throw new Error(`the graph has ${data.length} data inputs (${names}); convscope imports models with exactly one image input`);
  }
  return data[0];
}

interface InputShape {
  name: string;
  chw: [number, number, number];
  /** The batch dimension when the export fixed it, else undefined. */
  fixedBatch?: number;
}

function inputShape(v: GraphProto['inputs'][number]): InputShape {
  if (v.elemType !== DataType.FLOAT) throw new Error(`input '${v.name}' has element type ${v.elemType}; convscope needs float32 input`);
  if (v.shape.length !== 4) throw new Error(`input '${v.name}' has shape [${v.shape}]; convscope needs [N, C, H, W]`);
  const [n, c, h, w] = v.shape;
  if (typeof h !== 'number' || typeof w !== 'number') {
    throw new Error(`input '${v.name}' has a symbolic size [${v.shape}]; re-export with a fixed height and width (only the batch axis may be dynamic)`);
  }
  if (typeof c !== 'number') throw new Error(`input '${v.name}' has a symbolic channel count [${v.shape}]`);
  return { name: v.name, chw: [c, h, w], ...(typeof n === 'number' && n > 0 ? { fixedBatch: n } : {}) };
}

// ---------------------------------------------------------------- constants

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

function isFloatType(t: number): boolean {
  return t === DataType.FLOAT || t === DataType.DOUBLE || t === FLOAT16;
}

/** The values of a tensor as numbers, whatever its element type. */
function tensorValues(t: TensorProto): number[] | Float32Array {
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
interface ConstTensor {
  dims: number[];
  data: Float32Array;
  origin: string;
}

function tensorFromAttribute(a: AttributeValue | undefined): { dims: number[]; values: number[] | Float32Array; isFloat: boolean } | undefined {
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

function constantNodeValue(n: NodeProto): { dims: number[]; values: number[] | Float32Array; isFloat: boolean } | undefined {
  for (const key of ['value', 'value_float', 'value_floats', 'value_int', 'value_ints']) {
    const v = tensorFromAttribute(n.attributes.get(key));
    if (v) return v;
  }
  return undefined;
}

/** An initializer or a Constant node's value, looking through Identity (torch's way to share one weight). */
function constTensor(ix: GraphIndex, name: string): ConstTensor | undefined {
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

// ---------------------------------------------------------------- shape arithmetic (torch's Shape/Gather/Concat chains)

/** An element of a small integer tensor; 'N' is the batch size, known only at run time. */
type Sym = number | 'N';

interface SymTensor {
  dims: number[];
  data: Sym[];
  isFloat: boolean;
}

class NotConstant extends Error {}

function stridesOf(dims: number[]): number[] {
  const s = new Array<number>(dims.length).fill(1);
  for (let i = dims.length - 2; i >= 0; i--) s[i] = s[i + 1] * dims[i + 1];
  return s;
}

function unravel(i: number, dims: number[]): number[] {
  const s = stridesOf(dims);
  return dims.map((_, k) => Math.floor(i / s[k]) % dims[k]);
}

function ravel(idx: number[], dims: number[]): number {
  const s = stridesOf(dims);
  return idx.reduce((a, v, k) => a + v * s[k], 0);
}

function mapIndices(dims: number[], source: (idx: number[]) => Sym): Sym[] {
  return Array.from({ length: sizeOf(dims) }, (_, i) => source(unravel(i, dims)));
}

function normAxis(axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= Math.max(rank, 1)) throw new NotConstant(`axis ${axis} out of range for rank ${rank}`);
  return a;
}

function num(v: Sym): number {
  if (v === 'N') throw new NotConstant('depends on the batch size');
  return v;
}

function gather(data: SymTensor, idx: SymTensor, axis: number): SymTensor {
  const a = normAxis(axis, data.dims.length);
  const dims = [...data.dims.slice(0, a), ...idx.dims, ...data.dims.slice(a + 1)];
  const q = idx.dims.length;
  const out = mapIndices(dims, (o) => {
    let j = num(idx.data[ravel(o.slice(a, a + q), idx.dims)]);
    if (j < 0) j += data.dims[a];
    return data.data[ravel([...o.slice(0, a), j, ...o.slice(a + q)], data.dims)];
  });
  return { dims, data: out, isFloat: data.isFloat };
}

function clamp(v: number, lo: number, hi: number): number {
  return Math.min(Math.max(v, lo), hi);
}

function sliceTensor(t: SymTensor, starts: number[], ends: number[], axes: number[], steps: number[]): SymTensor {
  const r = t.dims.length;
  const begin = new Array<number>(r).fill(0);
  const step = new Array<number>(r).fill(1);
  const dims = [...t.dims];
  axes.forEach((axis, j) => {
    const a = normAxis(axis, r);
    const d = t.dims[a];
    const s = steps[j] ?? 1;
    if (s === 0) throw new NotConstant('Slice step 0');
    let st = starts[j] < 0 ? starts[j] + d : starts[j];
    let en = ends[j] < 0 ? ends[j] + d : ends[j];
    st = s > 0 ? clamp(st, 0, d) : clamp(st, 0, d - 1);
    en = s > 0 ? clamp(en, 0, d) : clamp(en, -1, d - 1);
    begin[a] = st;
    step[a] = s;
    dims[a] = Math.max(0, Math.ceil((en - st) / s));
  });
  return { dims, data: mapIndices(dims, (o) => t.data[ravel(o.map((v, k) => begin[k] + v * step[k]), t.dims)]), isFloat: t.isFloat };
}

function concat(parts: SymTensor[], axis: number): SymTensor {
  const r = parts[0].dims.length;
  const a = normAxis(axis, r);
  const dims = [...parts[0].dims];
  dims[a] = parts.reduce((s, p) => s + p.dims[a], 0);
  const data = mapIndices(dims, (o) => {
    let k = o[a];
    for (const p of parts) {
      if (k < p.dims[a]) return p.data[ravel([...o.slice(0, a), k, ...o.slice(a + 1)], p.dims)];
      k -= p.dims[a];
    }
    throw new NotConstant('Concat index');
  });
  return { dims, data, isFloat: parts[0].isFloat };
}

function transpose(t: SymTensor, perm: number[]): SymTensor {
  const dims = perm.map((p) => t.dims[p]);
  return {
    dims,
    data: mapIndices(dims, (o) => {
      const src = new Array<number>(t.dims.length);
      perm.forEach((p, k) => (src[p] = o[k]));
      return t.data[ravel(src, t.dims)];
    }),
    isFloat: t.isFloat,
  };
}

/** ONNX Reshape's target resolution: 0 copies the input's dimension (unless allowzero), one -1 takes the rest. */
function resolveReshape(inDims: number[], target: number[], allowZero: boolean): number[] {
  const dims = target.map((v, i) => (v === 0 && !allowZero ? inDims[i] : v));
  const known = dims.filter((v) => v !== -1).reduce((a, b) => a * b, 1);
  return dims.map((v) => (v === -1 ? sizeOf(inDims) / known : v));
}

function broadcast(a: SymTensor, b: SymTensor, f: (x: number, y: number) => number): SymTensor {
  const r = Math.max(a.dims.length, b.dims.length);
  const pad = (d: number[]) => [...new Array<number>(r - d.length).fill(1), ...d];
  const ad = pad(a.dims);
  const bd = pad(b.dims);
  const dims = ad.map((v, i) => Math.max(v, bd[i]));
  const at = (t: SymTensor, td: number[], o: number[]) => t.data[ravel(o.map((v, i) => (td[i] === 1 ? 0 : v)), td)];
  return { dims, data: mapIndices(dims, (o) => f(num(at(a, ad, o)), num(at(b, bd, o)))), isFloat: a.isFloat || b.isFloat };
}

/** Evaluates the small integer computations torch emits around Reshape and Pad, given the shapes of chain tensors. */
class ShapeEvaluator {
  private memo = new Map<string, SymTensor>();
  /** Chain tensors' shapes with the batch axis symbolic, filled in as the importer walks the chain. */
  readonly chainShapes = new Map<string, Sym[]>();

  constructor(private readonly ix: GraphIndex) {}

  ints(name: string): number[] {
    return this.eval(name).data.map(num);
  }

  eval(name: string): SymTensor {
    const known = this.memo.get(name);
    if (known) return known;
    const v = this.compute(name);
    this.memo.set(name, v);
    return v;
  }

  private compute(name: string): SymTensor {
    const init = this.ix.initializers.get(name);
    if (init) return this.fromTensor(init.dims, tensorValues(init), isFloatType(init.dataType), name);
    const n = this.ix.producer.get(name);
    if (!n) throw new NotConstant(`'${name}' is not computed from constants`);
    const arg = (i: number) => this.eval(n.inputs[i]);
    const has = (i: number) => (n.inputs[i] ?? '') !== '';
    switch (n.opType) {
      case 'Constant': {
        const v = constantNodeValue(n);
        if (!v) throw new NotConstant(`Constant node '${n.name}' has no value`);
        return this.fromTensor(v.dims, v.values, v.isFloat, name);
      }
      case 'Shape': {
        const shape = this.chainShapes.get(n.inputs[0]);
        if (!shape) throw new NotConstant(`Shape of '${n.inputs[0]}', which is not a layer output`);
        const s = sliceTensor({ dims: [shape.length], data: shape, isFloat: false }, [intAttr(n, 'start', 0)], [intAttr(n, 'end', shape.length)], [0], [1]);
        return s;
      }
      case 'Identity':
        return arg(0);
      case 'Cast': {
        const to = intAttr(n, 'to', DataType.FLOAT);
        const x = arg(0);
        if (isFloatType(to)) return { ...x, isFloat: true };
        return { dims: x.dims, data: x.data.map((v) => (v === 'N' ? v : to === DataType.BOOL ? Number(v !== 0) : Math.trunc(v))), isFloat: false };
      }
      case 'Gather':
        return gather(arg(0), arg(1), intAttr(n, 'axis', 0));
      case 'Unsqueeze': {
        const x = arg(0);
        const axes = has(1) ? this.ints(n.inputs[1]) : intsAttr(n, 'axes', []);
        const r = x.dims.length + axes.length;
        const at = new Set(axes.map((a) => normAxis(a, r)));
        const dims: number[] = [];
        let k = 0;
        for (let i = 0; i < r; i++) dims.push(at.has(i) ? 1 : x.dims[k++]);
        return { ...x, dims };
      }
      case 'Squeeze': {
        const x = arg(0);
        const axes = has(1) ? this.ints(n.inputs[1]) : intsAttr(n, 'axes', x.dims.flatMap((d, i) => (d === 1 ? [i] : [])));
        const drop = new Set(axes.map((a) => normAxis(a, x.dims.length)));
        return { ...x, dims: x.dims.filter((_, i) => !drop.has(i)) };
      }
      case 'Concat':
        return concat(n.inputs.filter((i) => i !== '').map((i) => this.eval(i)), intAttr(n, 'axis', 0));
      case 'Slice': {
        const x = arg(0);
        if (!has(1)) return sliceTensor(x, intsAttr(n, 'starts', []), intsAttr(n, 'ends', []), intsAttr(n, 'axes', x.dims.map((_, i) => i)), []);
        const starts = this.ints(n.inputs[1]);
        const axes = has(3) ? this.ints(n.inputs[3]) : starts.map((_, i) => i);
        return sliceTensor(x, starts, this.ints(n.inputs[2]), axes, has(4) ? this.ints(n.inputs[4]) : []);
      }
      case 'Reshape': {
        const x = arg(0);
        return { ...x, dims: resolveReshape(x.dims, this.ints(n.inputs[1]), intAttr(n, 'allowzero', 0) === 1) };
      }
      case 'Transpose': {
        const x = arg(0);
        return transpose(x, intsAttr(n, 'perm', x.dims.map((_, i) => x.dims.length - 1 - i)));
      }
      case 'ConstantOfShape': {
        const dims = this.ints(n.inputs[0]);
        const v = tensorFromAttribute(n.attributes.get('value'));
        return { dims, data: new Array<Sym>(sizeOf(dims)).fill(v ? v.values[0] : 0), isFloat: v ? v.isFloat : true };
      }
      case 'Add': return broadcast(arg(0), arg(1), (a, b) => a + b);
      case 'Sub': return broadcast(arg(0), arg(1), (a, b) => a - b);
      case 'Mul': return broadcast(arg(0), arg(1), (a, b) => a * b);
      case 'Div': {
        const a = arg(0);
        const b = arg(1);
        return broadcast(a, b, a.isFloat || b.isFloat ? (x, y) => x / y : (x, y) => Math.trunc(x / y));
      }
      default:
        throw new NotConstant(`'${name}' comes from ${n.opType} node '${n.name}'`);
    }
  }

  private fromTensor(dims: number[], values: ArrayLike<number>, isFloat: boolean, name: string): SymTensor {
    if (values.length > 4096) throw new NotConstant(`'${name}' is a large tensor, not a shape`);
    return { dims, data: Array.from(values), isFloat };
  }
}

// ---------------------------------------------------------------- attributes

function intAttr(n: NodeProto, key: string, fallback: number): number {
  const a = n.attributes.get(key);
  if (!a) return fallback;
  if (a.kind !== 'int') throw new Error(`node '${n.name}' (${n.opType}): attribute ${key} must be an int`);
  return a.value;
}

function intsAttr(n: NodeProto, key: string, fallback: number[]): number[] {
  const a = n.attributes.get(key);
  if (!a) return fallback;
  if (a.kind !== 'ints') throw new Error(`node '${n.name}' (${n.opType}): attribute ${key} must be a list of ints`);
  return a.value;
}

function floatAttr(n: NodeProto, key: string, fallback: number): number {
  const a = n.attributes.get(key);
  if (!a) return fallback;
  if (a.kind === 'float' || a.kind === 'int') return float32Decimal(a.value);
  throw new Error(`node '${n.name}' (${n.opType}): attribute ${key} must be a float`);
}

function stringAttr(n: NodeProto, key: string, fallback: string): string {
  const a = n.attributes.get(key);
  if (!a) return fallback;
  if (a.kind !== 'string') throw new Error(`node '${n.name}' (${n.opType}): attribute ${key} must be a string`);
  return a.value;
}

function refuse(n: NodeProto, why: string): never {
  throw new Error(`${n.opType} node '${n.name}': ${why}`);
}

function unsupportedOp(n: NodeProto): never {
  throw new Error(`unsupported ONNX op '${n.opType}' at node '${n.name}'`);
}

/** 2-D window geometry (Conv, MaxPool, AveragePool): kernel, strides, and pads that PyTorch can express. */
function windowGeometry(n: NodeProto, kernel: number[]): { kernel: Pair; stride: Pair; padding: Pair } {
  if (kernel.length !== 2) refuse(n, `only 2-D windows are supported, this one is ${kernel.length}-D`);
  const autoPad = stringAttr(n, 'auto_pad', 'NOTSET');
  if (autoPad !== 'NOTSET') refuse(n, `auto_pad ${autoPad} is not supported; export with explicit padding`);
  if (intsAttr(n, 'dilations', [1, 1]).some((d) => d !== 1)) refuse(n, 'dilated windows are not supported');
  const strides = intsAttr(n, 'strides', [1, 1]);
  const pads = intsAttr(n, 'pads', [0, 0, 0, 0]);
  if (pads[0] !== pads[2] || pads[1] !== pads[3]) refuse(n, `asymmetric pads [${pads}] are not supported`);
  return { kernel: [kernel[0], kernel[1]], stride: [strides[0], strides[1]], padding: [pads[0], pads[1]] };
}

// ---------------------------------------------------------------- the chain walk

/** A layer found in the graph, before it gets its final (unique) name. */
interface Draft {
  layer: Layer;
  /** Weights by parameter suffix: weight, bias, running_mean, running_var. */
  params: Map<string, ConstTensor>;
  /** The node that names the layer when its weights do not. */
  node: NodeProto;
}

interface Step {
  draft?: Draft;
  /** The tensor the next layer reads. */
  out: string;
}

/** Ops that can continue the chain on their own (LRN's subgraph is matched separately). */
const CHAIN_OPS = new Set(['Conv', 'Relu', 'MaxPool', 'AveragePool', 'GlobalAveragePool', 'LRN', 'BatchNormalization', 'Gemm', 'MatMul', 'Flatten', 'Reshape', 'Dropout', 'Identity', 'Softmax']);

/** Nodes torch emits for nn.LocalResponseNorm between Mul(x, x) and Div(x, D), data path and shape arithmetic. */
const LRN_SUBGRAPH_OPS = new Set(['Mul', 'Unsqueeze', 'Squeeze', 'Shape', 'Gather', 'Constant', 'Concat', 'Reshape', 'ConstantOfShape', 'Slice', 'Transpose', 'Cast', 'Pad', 'AveragePool', 'Equal', 'If', 'Identity', 'Add', 'Pow']);

class ChainImporter {
  private readonly shapes: ShapeEvaluator;
  private readonly layers: Layer[] = [];
  private readonly weights = new Map<string, Tensor>();
  private readonly taken = new Set<string>();

  constructor(
    private readonly ix: GraphIndex,
    private readonly opset: number,
    private readonly input: GraphProto['inputs'][number],
    private readonly inShape: InputShape,
  ) {
    this.shapes = new ShapeEvaluator(ix);
    this.shapes.chainShapes.set(input.name, ['N', ...inShape.chw]);
  }

  run(): { layers: Layer[]; weights: Map<string, Tensor> } {
    const outputs = this.ix.graph.outputs;
    if (outputs.length !== 1) throw new Error(`the graph has ${outputs.length} outputs; convscope imports single-output chains`);
    let x = this.input.name;
    for (;;) {
      const users = this.dataUsers(x);
      if (users.length === 0) break;
      const step = this.matchLrnSubgraph(x, users) ?? this.matchLayer(x, users);
      if (step.draft) this.add(step.draft);
      this.shapes.chainShapes.set(step.out, ['N', ...this.currentShape()]);
      x = step.out;
    }
    if (x !== outputs[0].name) {
      const from = this.ix.producer.get(outputs[0].name);
      throw new Error(`graph output '${outputs[0].name}'${from ? ` (from node '${from.name}')` : ''} is not reached by the layer chain from input '${this.input.name}', which ends at '${x}'`);
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
    const name = this.uniqueName(d);
    d.layer.name = name;
    this.layers.push(d.layer);
    for (const [suffix, t] of d.params) this.weights.set(`${name}.${suffix}`, { shape: [...t.dims], data: t.data });
    // Shapes are checked layer by layer so that a mismatch names the layer where it starts.
    this.currentShape();
  }

  private uniqueName(d: Draft): string {
    const base = layerNameFromWeights([...d.params.values()].map((t) => t.origin)) ?? layerNameFromNode(d.node) ?? `${d.node.opType.toLowerCase()}${this.layers.length}`;
    let name = base;
    for (let k = 2; this.taken.has(name); k++) name = `${base}_${k}`;
    this.taken.add(name);
    return name;
  }

  private single(x: string, users: NodeProto[]): NodeProto {
    if (users.length > 1) {
      const from = this.ix.producer.get(x);
      const list = users.map((u) => `'${u.name}' (${u.opType})`).join(', ');
      throw new Error(`branching graph: tensor '${x}'${from ? ` from node '${from.name}' (${from.opType})` : ''} feeds ${users.length} nodes: ${list}; convscope imports chains of layers only`);
    }
    const n = users[0];
    if (!CHAIN_OPS.has(n.opType)) unsupportedOp(n);
    if (n.inputs[0] !== x) refuse(n, `reads the layer chain as input ${n.inputs.indexOf(x)}, not as its data input`);
    return n;
  }

  private weight(n: NodeProto, index: number, what: string): ConstTensor {
    const t = constTensor(this.ix, n.inputs[index] ?? '');
    if (!t) refuse(n, `its ${what} '${n.inputs[index] ?? ''}' is not a constant (initializer or Constant node)`);
    return t;
  }

  private optionalWeight(n: NodeProto, index: number, what: string): ConstTensor | undefined {
    return (n.inputs[index] ?? '') === '' ? undefined : this.weight(n, index, what);
  }

  private constInts(n: NodeProto, index: number, what: string): number[] {
    try {
      return this.shapes.ints(n.inputs[index]);
    } catch (e) {
      if (e instanceof NotConstant) refuse(n, `cannot evaluate its ${what} (${e.message})`);
      throw e;
    }
  }

  private onlyFirstOutputUsed(n: NodeProto): void {
    for (const o of n.outputs.slice(1)) {
      if (o && (this.ix.consumers.get(o)?.length || this.ix.graph.outputs.some((v) => v.name === o))) refuse(n, `its output '${o}' is used; convscope supports the first output only`);
    }
  }

  private matchLayer(x: string, users: NodeProto[]): Step {
    const n = this.single(x, users);
    const out = n.outputs[0];
    const draft = (layer: Layer, params: [string, ConstTensor | undefined][] = []): Step => ({
      draft: { layer, node: n, params: new Map(params.filter((p): p is [string, ConstTensor] => p[1] !== undefined)) },
      out,
    });
    switch (n.opType) {
      case 'Conv': return this.conv(n, draft);
      case 'Relu': return draft({ type: 'relu', name: '' });
      case 'MaxPool': {
        if (intAttr(n, 'storage_order', 0) !== 0) refuse(n, 'storage_order 1 is not supported');
        this.onlyFirstOutputUsed(n);
        const g = windowGeometry(n, intsAttr(n, 'kernel_shape', []));
        return draft({ type: 'maxpool2d', name: '', ...g, ceilMode: intAttr(n, 'ceil_mode', 0) === 1 });
      }
      case 'AveragePool': {
        const g = windowGeometry(n, intsAttr(n, 'kernel_shape', []));
        return draft({ type: 'avgpool2d', name: '', ...g, ceilMode: intAttr(n, 'ceil_mode', 0) === 1, countIncludePad: intAttr(n, 'count_include_pad', 0) === 1 });
      }
      case 'GlobalAveragePool': return draft({ type: 'adaptiveavgpool2d', name: '', output: [1, 1] });
      case 'LRN': {
        const size = intAttr(n, 'size', 0);
        // ONNX centres an even window one channel later than PyTorch does; convscope's lrn layer is PyTorch's.
        if (size < 1 || size % 2 === 0) refuse(n, `size ${size}: only odd window sizes mean the same in ONNX and PyTorch`);
        return draft({ type: 'lrn', name: '', size, alpha: floatAttr(n, 'alpha', 1e-4), beta: floatAttr(n, 'beta', 0.75), k: floatAttr(n, 'bias', 1) });
      }
      case 'BatchNormalization': return this.batchNorm(n, draft);
      case 'Gemm': return this.gemm(n, draft);
      case 'MatMul': return this.matMul(n);
      case 'Flatten':
        if (intAttr(n, 'axis', 1) !== 1) refuse(n, `axis ${intAttr(n, 'axis', 1)}: only axis 1 (keep the batch) is supported`);
        return draft({ type: 'flatten', name: '' });
      case 'Reshape': return this.reshape(n, draft);
      case 'Dropout': {
        this.onlyFirstOutputUsed(n);
        if ((n.inputs[2] ?? '') !== '' && this.constInts(n, 2, 'training_mode').some((v) => v !== 0)) refuse(n, 'training_mode is on');
        const ratio = (n.inputs[1] ?? '') !== '' ? this.weight(n, 1, 'ratio').data[0] : floatAttr(n, 'ratio', 0.5);
        return draft({ type: 'dropout', name: '', p: float32Decimal(ratio) });
      }
      case 'Identity': return { out };
      case 'Softmax': {
        const axis = intAttr(n, 'axis', this.opset >= 13 ? -1 : 1);
        const shape = this.currentShape();
        if (shape.length !== 1 || (axis !== 1 && axis !== -1)) refuse(n, `softmax over axis ${axis} of [N,${shape}]: only the class axis of a [N, classes] input is supported`);
        return draft({ type: 'softmax', name: '' });
      }
      default: unsupportedOp(n);
    }
  }

  private conv(n: NodeProto, draft: (l: Layer, p: [string, ConstTensor | undefined][]) => Step): Step {
    if (intAttr(n, 'group', 1) !== 1) refuse(n, `group ${intAttr(n, 'group', 1)}: only ungrouped convolutions are supported`);
    const w = this.weight(n, 1, 'weight');
    const b = this.optionalWeight(n, 2, 'bias');
    if (w.dims.length !== 4) refuse(n, `weight of shape [${w.dims}]: only 2-D convolutions are supported`);
    const kernel = intsAttr(n, 'kernel_shape', w.dims.slice(2));
    if (kernel.join() !== w.dims.slice(2).join()) refuse(n, `kernel_shape [${kernel}] disagrees with the weight [${w.dims}]`);
    const g = windowGeometry(n, kernel);
    return draft({ type: 'conv2d', name: '', inChannels: w.dims[1], outChannels: w.dims[0], ...g, bias: b !== undefined }, [['weight', w], ['bias', b && flatBias(n, b, w.dims[0])]]);
  }

  private batchNorm(n: NodeProto, draft: (l: Layer, p: [string, ConstTensor | undefined][]) => Step): Step {
    if (intAttr(n, 'training_mode', 0) !== 0) refuse(n, 'training_mode is on');
    this.onlyFirstOutputUsed(n);
    const parts = ['weight', 'bias', 'running_mean', 'running_var'].map((p, i): [string, ConstTensor] => [p, this.weight(n, i + 1, p)]);
    const channels = parts[0][1].dims.reduce((a, b) => a * b, 1);
    for (const [p, t] of parts) if (sizeOf(t.dims) !== channels || t.dims.length !== 1) refuse(n, `${p} has shape [${t.dims}], expected [${channels}]`);
    return draft({ type: 'batchnorm2d', name: '', channels, eps: floatAttr(n, 'epsilon', 1e-5) }, parts);
  }

  private gemm(n: NodeProto, draft: (l: Layer, p: [string, ConstTensor | undefined][]) => Step): Step {
    if (floatAttr(n, 'alpha', 1) !== 1 || floatAttr(n, 'beta', 1) !== 1) refuse(n, 'alpha and beta must be 1');
    if (intAttr(n, 'transA', 0) !== 0) refuse(n, 'transA is not supported');
    const b = this.weight(n, 1, 'weight');
    if (b.dims.length !== 2) refuse(n, `weight of shape [${b.dims}] is not a matrix`);
    // convscope stores Linear weights as PyTorch does, [out, in]: Gemm's transB=1 layout.
    const w = intAttr(n, 'transB', 0) === 1 ? b : transposed(b);
    const c = this.optionalWeight(n, 2, 'bias');
    return draft({ type: 'linear', name: '', inFeatures: w.dims[1], outFeatures: w.dims[0], bias: c !== undefined }, [['weight', w], ['bias', c && flatBias(n, c, w.dims[0])]]);
  }

  /** torch's Linear on a non-2-D input: MatMul with the transposed weight, then Add of the bias. */
  private matMul(n: NodeProto): Step {
    const b = this.weight(n, 1, 'weight');
    if (b.dims.length !== 2) refuse(n, `weight of shape [${b.dims}] is not a matrix`);
    const w = transposed(b);
    const users = this.ix.consumers.get(n.outputs[0]) ?? [];
    const add = users.length === 1 && users[0].opType === 'Add' ? users[0] : undefined;
    const biasIndex = add ? add.inputs.findIndex((i) => i !== n.outputs[0]) : -1;
    const bias = add && biasIndex >= 0 ? constTensor(this.ix, add.inputs[biasIndex]) : undefined;
    const params = new Map<string, ConstTensor>([['weight', w]]);
    if (bias) params.set('bias', flatBias(add!, bias, w.dims[0]));
    return {
      draft: { layer: { type: 'linear', name: '', inFeatures: w.dims[1], outFeatures: w.dims[0], bias: bias !== undefined }, params, node: n },
      out: bias ? add!.outputs[0] : n.outputs[0],
    };
  }

  /** Reshape to [batch, features] is a flatten; anything else would reorder or split the batch. */
  private reshape(n: NodeProto, draft: (l: Layer) => Step): Step {
    let target: Sym[];
    try {
      target = this.shapes.eval(n.inputs[1]).data;
    } catch (e) {
      if (e instanceof NotConstant) refuse(n, `cannot evaluate its target shape (${e.message})`);
      throw e;
    }
    const shape = this.currentShape();
    const features = sizeOf(shape);
    const allowZero = intAttr(n, 'allowzero', 0) === 1;
    const dims = target.map((v, i) => (v === 0 && !allowZero ? (i === 0 ? 'N' : shape[i - 1]) : v));
    const isBatch = (v: Sym | undefined) => v === 'N' || (this.inShape.fixedBatch !== undefined && v === this.inShape.fixedBatch);
    const flat = dims.length === 2 && ((isBatch(dims[0]) && (dims[1] === -1 || dims[1] === features)) || (dims[0] === -1 && dims[1] === features));
    if (!flat) refuse(n, `reshapes [N,${shape}] to [${dims}]; only a flatten to [N, ${features}] is supported`);
    return shape.length === 1 ? { out: n.outputs[0] } : draft({ type: 'flatten', name: '' });
  }

  /**
   * nn.LocalResponseNorm as torch (opset 17) exports it: Div(x, Pow(Add(Mul(avg, alpha), k), beta)) where avg is
   * an AveragePool of size (size,1,1) over Mul(x, x) padded by size//2 channels before and (size-1)//2 after.
   */
  private matchLrnSubgraph(x: string, users: NodeProto[]): Step | undefined {
    if (users.length !== 2) return undefined;
    const square = users.find((u) => u.opType === 'Mul' && u.inputs[0] === x && u.inputs[1] === x);
    const div = users.find((u) => u.opType === 'Div' && u.inputs[0] === x && u.inputs[1] !== x);
    if (!square || !div) return undefined;
    this.checkLrnClosure(x, div, square);
    const pow = this.ix.producer.get(div.inputs[1]);
    if (pow?.opType !== 'Pow') refuse(div, 'divides the layer input by something other than a power (not an LRN)');
    const beta = this.scalar(pow, pow.inputs[1], 'exponent');
    const add = this.ix.producer.get(pow.inputs[0]);
    if (add?.opType !== 'Add') refuse(pow, 'its base is not k + alpha * mean (not an LRN)');
    const [kIndex, k] = this.scalarOperand(add, 'k');
    const scale = this.ix.producer.get(add.inputs[1 - kIndex]);
    if (scale?.opType !== 'Mul') refuse(add, 'its input is not alpha * mean (not an LRN)');
    const [alphaIndex, alpha] = this.scalarOperand(scale, 'alpha');
    const path = this.lrnDataPath(scale.inputs[1 - alphaIndex], square);
    const size = this.lrnWindow(path, square);
    this.checkFinalReshape(path, x, square);
    return { draft: { layer: { type: 'lrn', name: '', size, alpha, beta, k }, params: new Map(), node: square }, out: div.outputs[0] };
  }

  /** Every node that computes the divisor; checks their kinds and that nothing outside the pattern reads them. */
  private checkLrnClosure(x: string, div: NodeProto, square: NodeProto): void {
    const closure = new Set<NodeProto>();
    const visit = (t: string) => {
      const n = this.ix.producer.get(t);
      if (!n || closure.has(n) || t === x) return;
      closure.add(n);
      nodeReads(n).forEach(visit);
    };
    visit(div.inputs[1]);
    if (!closure.has(square)) refuse(div, `its divisor does not depend on Mul(x, x) at node '${square.name}' (not an LRN)`);
    for (const n of closure) {
      const inner = [n, ...subgraphs(n).flatMap((g) => g.nodes)];
      for (const m of inner) if (!LRN_SUBGRAPH_OPS.has(m.opType)) throw new Error(`unsupported ONNX op '${m.opType}' at node '${m.name}' (inside the LocalResponseNorm pattern at '${square.name}')`);
      if (n !== square && n.opType !== 'Shape' && nodeReads(n).includes(x)) refuse(n, `reads the LRN input '${x}' directly (not an LRN)`);
      for (const o of n.outputs) {
        const readers = this.ix.consumers.get(o) ?? [];
        const outside = readers.find((r) => r !== div && !closure.has(r));
        if (outside) throw new Error(`branching graph: tensor '${o}' of node '${n.name}' inside the LRN at '${square.name}' is also read by node '${outside.name}' (${outside.opType})`);
      }
    }
  }

  private scalar(n: NodeProto, name: string, what: string): number {
    const t = constTensor(this.ix, name);
    if (!t || t.data.length !== 1) refuse(n, `its ${what} is not a constant scalar`);
    return float32Decimal(t.data[0]);
  }

  private scalarOperand(n: NodeProto, what: string): [number, number] {
    for (const i of [1, 0]) {
      const t = constTensor(this.ix, n.inputs[i]);
      if (t && t.data.length === 1) return [i, float32Decimal(t.data[0])];
    }
    refuse(n, `has no constant scalar operand (the LRN's ${what})`);
  }

  /** The value-carrying nodes from the alpha Mul back to Mul(x, x): views, pads, one average pool. */
  private lrnDataPath(from: string, square: NodeProto): NodeProto[] {
    const path: NodeProto[] = [];
    let t = from;
    while (t !== square.outputs[0]) {
      const n = this.ix.producer.get(t);
      if (!n) throw new Error(`LRN pattern at '${square.name}': tensor '${t}' has no producer`);
      path.push(n);
      switch (n.opType) {
        case 'Reshape':
        case 'Unsqueeze':
        case 'Squeeze':
        case 'Identity':
        case 'Pad':
        case 'AveragePool':
          t = n.inputs[0];
          break;
        case 'If':
          t = this.ifPassThrough(n);
          break;
        default:
          refuse(n, `is on the data path of the LRN pattern at '${square.name}', where torch emits only views, Pad and AveragePool`);
      }
    }
    return path;
  }

  /** torch's `squeeze(1)` becomes an If whose branches both return one outer tensor, squeezed or as is. */
  private ifPassThrough(n: NodeProto): string {
    const sources = subgraphs(n).map((g) => {
      const out = g.outputs[0]?.name;
      const m = g.nodes.find((k) => k.outputs.includes(out));
      if (g.outputs.length !== 1 || !m || (m.opType !== 'Squeeze' && m.opType !== 'Identity')) refuse(n, 'a branch does more than squeeze its input');
      return m.inputs[0];
    });
    if (sources.length !== 2 || sources[0] !== sources[1]) refuse(n, 'its branches read different tensors');
    return sources[0];
  }

  /** The window size from the AveragePool, after checking that the pads make it PyTorch's channel window. */
  private lrnWindow(path: NodeProto[], square: NodeProto): number {
    const pools = path.filter((n) => n.opType === 'AveragePool');
    if (pools.length !== 1) refuse(square, `LRN pattern needs one AveragePool on its data path, found ${pools.length}`);
    const pool = pools[0];
    const kernel = intsAttr(pool, 'kernel_shape', []);
    if (kernel.length < 2 || kernel.slice(1).some((v) => v !== 1)) refuse(pool, `kernel [${kernel}] is not a window over channels only`);
    if (intsAttr(pool, 'strides', []).some((v) => v !== 1)) refuse(pool, 'an LRN window has stride 1');
    const size = kernel[0];
    // The pooled tensor is the [N, 1, C, ...] view of x^2: axis 2 holds the channels.
    const rank = kernel.length + 2;
    const before = new Array<number>(rank).fill(0);
    const after = new Array<number>(rank).fill(0);
    // convscope's own export pads inside the pool; the zeros must count, as explicit Pad zeros do.
    const poolPads = intsAttr(pool, 'pads', []);
    if (poolPads.some((v) => v !== 0) && intAttr(pool, 'count_include_pad', 0) !== 1) refuse(pool, 'an LRN window pads with zeros that count (count_include_pad 1)');
    poolPads.forEach((v, i) => (i < kernel.length ? (before[i + 2] += v) : (after[i - kernel.length + 2] += v)));
    for (const pad of path.filter((n) => n.opType === 'Pad')) {
      if (stringAttr(pad, 'mode', 'constant') !== 'constant') refuse(pad, 'only constant padding fits an LRN');
      const pads = this.padAmounts(pad);
      if (pads.length !== 2 * rank) refuse(pad, `pads [${pads}] do not fit a rank-${rank} tensor`);
      pads.forEach((v, i) => (i < rank ? (before[i] += v) : (after[i - rank] += v)));
    }
    const want = (axis: number, side: 'b' | 'a') => (axis !== 2 ? 0 : side === 'b' ? Math.floor(size / 2) : Math.floor((size - 1) / 2));
    if (before.some((v, i) => v !== want(i, 'b')) || after.some((v, i) => v !== want(i, 'a'))) {
      refuse(pool, `the padding before it ([${before}] before, [${after}] after) is not PyTorch's LRN window for size ${size}`);
    }
    return size;
  }

  private padAmounts(pad: NodeProto): number[] {
    try {
      if ((pad.inputs[2] ?? '') !== '' && this.shapes.eval(pad.inputs[2]).data.some((v) => v !== 0)) refuse(pad, 'pads with a non-zero value');
      if ((pad.inputs[3] ?? '') !== '') refuse(pad, 'pads selected axes only');
      return (pad.inputs[1] ?? '') !== '' ? this.shapes.ints(pad.inputs[1]) : intsAttr(pad, 'pads', []);
    } catch (e) {
      if (e instanceof NotConstant) refuse(pad, `cannot evaluate its pads (${e.message})`);
      throw e;
    }
  }

  /** The divisor must come back in x's own shape, or the Div would broadcast something else. */
  private checkFinalReshape(path: NodeProto[], x: string, square: NodeProto): void {
    const last = path[0];
    if (last.opType !== 'Reshape') refuse(last, `the LRN pattern at '${square.name}' should end in a Reshape back to the input's shape`);
    let target: Sym[];
    try {
      target = this.shapes.eval(last.inputs[1]).data;
    } catch (e) {
      if (e instanceof NotConstant) refuse(last, `cannot evaluate its target shape (${e.message})`);
      throw e;
    }
    const want = this.shapes.chainShapes.get(x)!;
    if (target.length !== want.length || target.some((v, i) => v !== want[i] && !(v === -1 && i === 0))) {
      refuse(last, `reshapes the LRN divisor to [${target}], not the input's [${want}]`);
    }
  }
}

function flatBias(n: NodeProto, t: ConstTensor, out: number): ConstTensor {
  if (t.data.length !== out || t.dims.filter((d) => d !== 1).length > 1) refuse(n, `bias of shape [${t.dims}] does not fit ${out} outputs`);
  return { ...t, dims: [out] };
}

function transposed(t: ConstTensor): ConstTensor {
  const [rows, cols] = t.dims;
  const data = new Float32Array(t.data.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) data[c * rows + r] = t.data[r * cols + c];
  return { dims: [cols, rows], data, origin: t.origin };
}

/** `conv1.weight` -> `conv1`, `features.0.bias` -> `features.0`: PyTorch's module path. */
function layerNameFromWeights(origins: string[]): string | undefined {
  for (const o of origins) {
    const m = /^(.+)\.(weight|bias|running_mean|running_var)$/.exec(o);
    if (m) return m[1];
  }
  return undefined;
}

/** `/relu1/Relu` -> `relu1`, `/features/features.1/Relu` -> `features.1`: torch names nodes by module scope. */
function layerNameFromNode(n: NodeProto): string | undefined {
  const parts = n.name.split('/').filter((p) => p !== '');
  return n.name.startsWith('/') && parts.length >= 2 ? parts[parts.length - 2] : undefined;
}

// ---------------------------------------------------------------- convscope metadata

function layersFromMetadata(archJson: string, ix: GraphIndex): { layers: Layer[]; weights: Map<string, Tensor> } {
  let layers: Layer[];
  try {
    layers = (JSON.parse(archJson) as LayerJson[]).map(layerFromJson);
  } catch (e) {
    throw new Error(`unreadable ${ONNX_META.architecture} metadata: ${(e as Error).message}`);
  }
  const weights = new Map<string, Tensor>();
  for (const layer of layers) {
    for (const { key } of layerParams(layer)) {
      const t = constTensor(ix, key);
      if (!t) throw new Error(`the ${ONNX_META.architecture} metadata needs weight '${key}', which the graph does not hold`);
      weights.set(key, { shape: [...t.dims], data: t.data });
    }
  }
  return { layers, weights };
}

function parseJson<T>(meta: Map<string, string>, key: string): T | undefined {
  const s = meta.get(key);
  if (s === undefined) return undefined;
  try {
    return JSON.parse(s) as T;
  } catch (e) {
    throw new Error(`unreadable ${key} metadata: ${(e as Error).message}`);
  }
}

function preprocessFromMetadata(meta: Map<string, string>, chw: [number, number, number]): Preprocess {
  const c = chw[0];
  const stored = parseJson<{ shape?: number[]; mean?: number[]; std?: number[] }>(meta, ONNX_META.input);
  if (stored?.shape && stored.shape.join() !== chw.join()) throw new Error(`${ONNX_META.input} metadata says input [${stored.shape}], the graph takes [${chw}]`);
  const mean = stored?.mean ?? (c === 3 ? [...DEFAULT_RGB_MEAN] : new Array<number>(c).fill(0));
  const std = stored?.std ?? new Array<number>(c).fill(1);
  if (mean.length !== c || std.length !== c) throw new Error(`preprocess metadata has ${mean.length} means and ${std.length} stds for ${c} channels`);
  const image = parseJson<{ shape: number[]; f32: string }>(meta, ONNX_META.meanImage);
  return { mean, std, ...(image ? { meanImage: meanImageFromJson(image) } : {}) };
}

function meanImageFromJson(o: { shape: number[]; f32: string }): Tensor {
  const bytes = Buffer.from(o.f32, 'base64');
  const data = new Float32Array(bytes.length / 4);
  new Uint8Array(data.buffer).set(bytes);
  if (data.length !== sizeOf(o.shape)) throw new Error(`${ONNX_META.meanImage} metadata has ${data.length} values for shape [${o.shape}]`);
  return { shape: o.shape, data };
}

function classesFromMetadata(meta: Map<string, string>): { classes?: string[] } {
  const classes = parseJson<string[]>(meta, ONNX_META.classes);
  return classes ? { classes } : {};
}
