// What convscope layer an ONNX node becomes: one op at a time, its attributes checked against what the layer means,
// its weights taken from the graph's constants. Nothing here knows how the nodes are connected beyond the node itself.
import type { NodeProto } from '../../onnx/proto.js';
import { sizeOf } from '../../tensor.js';
import type { Layer, Pair } from '../layers.js';
import { floatAttr, intAttr, intsAttr, refuse, stringAttr, unsupportedOp } from './attributes.js';
import { constTensor, float32Decimal, type ConstTensor } from './constants.js';
import type { GraphIndex } from './graph.js';
import { NotConstant, type ShapeEvaluator, type Sym } from './shape-eval.js';

/** A layer found in the graph, before it gets its final (unique) name. */
export interface Draft {
  layer: Layer;
  /** Weights by parameter suffix: weight, bias, running_mean, running_var. */
  params: Map<string, ConstTensor>;
  /** The node that names the layer when its weights do not. */
  node: NodeProto;
}

export interface Step {
  draft?: Draft;
  /** The tensor the next layer reads. */
  out: string;
}

/** The ops that convert() turns into a layer (or into nothing, like Identity). */
export const LAYER_OPS: ReadonlySet<string> = new Set(['Conv', 'Relu', 'MaxPool', 'AveragePool', 'GlobalAveragePool', 'LRN', 'BatchNormalization', 'Gemm', 'MatMul', 'Flatten', 'Reshape', 'Dropout', 'Identity', 'Softmax']);

export class NodeConverter {
  constructor(
    private readonly ix: GraphIndex,
    private readonly shapes: ShapeEvaluator,
    private readonly opset: number,
    /** The batch dimension when the export fixed it: a Reshape may name it instead of -1 or 0. */
    private readonly fixedBatch: number | undefined,
    /** The [C, H, W] or [F] shape of the tensor the node reads. */
    private readonly currentShape: () => number[],
  ) {}

  /** The layer that node `n`, reading the chain as its first input, becomes; Identity becomes nothing. */
  convert(n: NodeProto): Step {
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
    const isBatch = (v: Sym | undefined) => v === 'N' || (this.fixedBatch !== undefined && v === this.fixedBatch);
    const flat = dims.length === 2 && ((isBatch(dims[0]) && (dims[1] === -1 || dims[1] === features)) || (dims[0] === -1 && dims[1] === features));
    if (!flat) refuse(n, `reshapes [N,${shape}] to [${dims}]; only a flatten to [N, ${features}] is supported`);
    return shape.length === 1 ? { out: n.outputs[0] } : draft({ type: 'flatten', name: '' });
  }
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
