// PyTorch's nn.LocalResponseNorm, which torch.onnx.export writes out as a subgraph of elementary ops, recognised as
// one lrn layer.
import type { NodeProto } from '../../onnx/proto.js';
import { intAttr, intsAttr, refuse, stringAttr } from './attributes.js';
import { constTensor, float32Decimal } from './constants.js';
import { nodeReads, subgraphs, type GraphIndex } from './graph.js';
import type { Step } from './node-layers.js';
import { NotConstant, type ShapeEvaluator, type Sym } from './shape-eval.js';

/** Nodes torch emits for nn.LocalResponseNorm between Mul(x, x) and Div(x, D), data path and shape arithmetic. */
const LRN_SUBGRAPH_OPS = new Set(['Mul', 'Unsqueeze', 'Squeeze', 'Shape', 'Gather', 'Constant', 'Concat', 'Reshape', 'ConstantOfShape', 'Slice', 'Transpose', 'Cast', 'Pad', 'AveragePool', 'Equal', 'If', 'Identity', 'Add', 'Pow']);

export class LrnMatcher {
  constructor(
    private readonly ix: GraphIndex,
    private readonly shapes: ShapeEvaluator,
  ) {}

  /**
   * nn.LocalResponseNorm as torch (opset 17) exports it: Div(x, Pow(Add(Mul(avg, alpha), k), beta)) where avg is
   * an AveragePool of size (size,1,1) over Mul(x, x) padded by size//2 channels before and (size-1)//2 after.
   */
  match(x: string, users: NodeProto[]): Step | undefined {
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
