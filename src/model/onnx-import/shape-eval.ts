// Constant folding of the small integer computations torch emits around Reshape and Pad (Shape, Gather, Concat, ...),
// with the batch size kept symbolic: a target shape that depends on it is still known up to 'N'.
import { DataType } from '../../onnx/proto.js';
import { sizeOf } from '../../tensor.js';
import { intAttr, intsAttr } from './attributes.js';
import { constantNodeValue, isFloatType, tensorFromAttribute, tensorValues } from './constants.js';
import type { GraphIndex } from './graph.js';

/** An element of a small integer tensor; 'N' is the batch size, known only at run time. */
export type Sym = number | 'N';

export interface SymTensor {
  dims: number[];
  data: Sym[];
  isFloat: boolean;
}

export class NotConstant extends Error {}

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
export class ShapeEvaluator {
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

  /** The dims of an initializer or a Constant node's value, else undefined. */
  private constantDims(name: string): number[] | undefined {
    const init = this.ix.initializers.get(name);
    if (init) return [...init.dims];
    const n = this.ix.producer.get(name);
    return n?.opType === 'Constant' ? this.eval(name).dims : undefined;
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
        // The shape of a layer output, or of a constant (an unfolded export takes the pads' length from one).
        const shape = this.chainShapes.get(n.inputs[0]) ?? this.constantDims(n.inputs[0]);
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
