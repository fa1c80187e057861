// The layer stack compiled to ONNX: one forward emitter and one backward emitter whose ReLU rule is a parameter.
// Every graph kind (forward, projection, train step) is assembled from these two functions.
import type { GraphBuilder } from '../onnx/builder.js';
import { DataType } from '../onnx/proto.js';
import type { Layer, Model, Pair } from '../model/layers.js';
import type { LayerInfo } from '../model/shapes.js';
import { assertNever } from '../util/assert.js';

/** How a ReLU passes the backward signal: autograd, Zeiler & Fergus's deconvnet (rectify the signal), or both. */
export type BackwardRule = 'gradient' | 'deconvnet' | 'guided';
/** LRN on the way down: its true gradient, or passed through as the identity (most deconvnet reimplementations). */
export type LrnBackward = 'gradient' | 'identity';

export const BACKWARD_RULES: readonly BackwardRule[] = ['gradient', 'deconvnet', 'guided'];
export const LRN_MODES: readonly LrnBackward[] = ['gradient', 'identity'];

const SWITCHES_SUFFIX = '__switches';
export const activationName = (layer: string) => `${layer}__out`;
export const switchesName = (layer: string) => `${layer}${SWITCHES_SUFFIX}`;
export const dropoutMaskName = (layer: string) => `${layer}__mask`;
export const layerOfSwitches = (name: string) => (name.endsWith(SWITCHES_SUFFIX) ? name.slice(0, -SWITCHES_SUFFIX.length) : undefined);

export interface ForwardTrace {
  /** Tensor name of layer i's input at index i and its output at index i + 1 (indices below `from` stay empty). */
  values: string[];
  /** For max-pool layers, the tensor name of the switches (flat int64 indices over the whole batch tensor). */
  switches: Map<number, string>;
  /** For dropout layers in training graphs, the mask input (already scaled by 1/(1-p)). */
  dropoutMasks: Map<number, string>;
  /** For convolutions lowered to GEMM, the column matrix [Cin*kh*kw, N*Ho*Wo] (reused by the weight gradient). */
  columns: Map<number, string>;
}

/** Maps a weight key (`conv1.weight`) to the graph tensor holding it: an initializer or a graph input. */
export type WeightSource = (key: string) => string;

export interface ForwardOptions {
  /** First layer to compute; `input` is that layer's input (default 0: the image). */
  from?: number;
  /** Last layer to compute (inclusive). */
  upTo: number;
  /** Emit max-pool Indices outputs. */
  switches: boolean;
  /** Dropout: identity (inference) or a multiplicative mask fed as a graph input (training). */
  dropout: 'identity' | 'mask';
  /** Standard ONNX ops where one exists (LRN), for files other runtimes read; otherwise the fastest form here. */
  portable?: boolean;
  /**
   * Run small-map convolutions as im2col + GEMM (see GEMM_CONV_MAX_POSITIONS). Faster, but GEMM blocking follows the
   * batch size, so results would differ in the last bits between batch sizes: only the train step asks.
   */
  gemmSmallConvs?: boolean;
}

type Pads = [top: number, left: number, bottom: number, right: number];

const symmetricPads = (padding: Pair): Pads => [padding[0], padding[1], padding[0], padding[1]];

function convAttrs(kernel: Pair, stride: Pair, padding: Pair) {
  return { kernel_shape: kernel, strides: stride, pads: symmetricPads(padding) };
}

/**
 * Mean over the channel window [c - before, c + after] of x [N,C,H,W] (channels outside the range count as zero), as a
 * 1x1 convolution with a banded C x C weight: onnxruntime runs it in its fast NCHWc conv kernels, where its LRN and
 * pooling ops break the layout (a third faster forward on ZFNet).
 */
function channelWindowMean(b: GraphBuilder, x: string, shape: number[], size: number, before: number, after: number, portable = false): string {
  const [c, h, w] = shape;
  if (portable) {
    // The form an exported file carries (and the importer recognises): an average pool over a [N,1,C,H*W] view.
    const view = b.op1('Reshape', [x, b.int64s([-1, 1, c, h * w])]);
    const mean = b.op1('AveragePool', [view], { kernel_shape: [size, 1], strides: [1, 1], pads: [before, 0, after, 0], count_include_pad: 1 });
    return b.op1('Reshape', [mean, b.int64s([-1, c, h, w])]);
  }
  const band = new Float32Array(c * c);
  for (let o = 0; o < c; o++) for (let i = Math.max(0, o - before); i <= Math.min(c - 1, o + after); i++) band[o * c + i] = 1 / size;
  return b.op1('Conv', [x, b.floatTensor(b.fresh('lrn_band'), [c, c, 1, 1], band)], { kernel_shape: [1, 1] });
}

/** d^-beta; for the paper's beta = 0.75 as 1 / (sqrt(d) sqrt(sqrt(d))): vectorised roots instead of a scalar pow. */
function inversePower(b: GraphBuilder, d: string, beta: number): string {
  if (beta !== 0.75) return b.op1('Pow', [d, b.floats([-beta], [])]);
  const root = b.op1('Sqrt', [d]);
  return b.op1('Reciprocal', [b.op1('Mul', [root, b.op1('Sqrt', [root])])]);
}

/** PyTorch's LocalResponseNorm denominator base d = k + alpha * mean over the window of a^2 (window c-size/2 .. c+(size-1)/2). */
function lrnDenominator(b: GraphBuilder, layer: Extract<Layer, { type: 'lrn' }>, a: string, shape: number[], portable = false): string {
  const sq = b.op1('Mul', [a, a]);
  const mean = channelWindowMean(b, sq, shape, layer.size, Math.floor(layer.size / 2), Math.floor((layer.size - 1) / 2), portable);
  return b.op1('Add', [b.op1('Mul', [mean, b.floats([layer.alpha], [])]), b.floats([layer.k], [])]);
}

/** AdaptiveAvgPool2d as a matrix [H*W, oh*ow] with PyTorch's bins: start floor(i*H/oh), end ceil((i+1)*H/oh). */
function adaptivePoolMatrix(h: number, w: number, oh: number, ow: number): Float32Array {
  const m = new Float32Array(h * w * oh * ow);
  for (let oy = 0; oy < oh; oy++) {
    const y0 = Math.floor((oy * h) / oh);
    const y1 = Math.ceil(((oy + 1) * h) / oh);
    for (let ox = 0; ox < ow; ox++) {
      const x0 = Math.floor((ox * w) / ow);
      const x1 = Math.ceil(((ox + 1) * w) / ow);
      const inv = 1 / ((y1 - y0) * (x1 - x0));
      for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) m[(y * w + x) * oh * ow + oy * ow + ox] = inv;
    }
  }
  return m;
}

function transposeMatrix(m: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(m.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = m[r * cols + c];
  return t;
}

/** Per output position, how many input (or padding) cells an average pool divides by. */
function avgPoolDivisors(layer: Extract<Layer, { type: 'avgpool2d' }>, inShape: number[], outShape: number[]): Float32Array {
  const [, h, w] = inShape;
  const [, oh, ow] = outShape;
  const div = new Float32Array(oh * ow);
  for (let oy = 0; oy < oh; oy++) {
    for (let ox = 0; ox < ow; ox++) {
      const y0 = oy * layer.stride[0] - layer.padding[0];
      const x0 = ox * layer.stride[1] - layer.padding[1];
      const clip = (v: number, hi: number) => Math.min(Math.max(v, 0), hi);
      if (layer.countIncludePad) {
        // PyTorch counts padding cells but not the overhang past the padding that ceil_mode adds.
        const yh = Math.min(y0 + layer.kernel[0], h + layer.padding[0]) - y0;
        const xw = Math.min(x0 + layer.kernel[1], w + layer.padding[1]) - x0;
        div[oy * ow + ox] = yh * xw;
      } else {
        div[oy * ow + ox] = (clip(y0 + layer.kernel[0], h) - clip(y0, h)) * (clip(x0 + layer.kernel[1], w) - clip(x0, w));
      }
    }
  }
  return div;
}

/** Pads and output padding that make a transposed window op return exactly the forward input size. */
function transposeGeometry(inSize: number, outSize: number, k: number, s: number, padBegin: number): { padEnd: number; outputPadding: number } {
  const padEnd = s * (outSize - 1) + k - padBegin - inSize;
  return padEnd >= 0 ? { padEnd, outputPadding: 0 } : { padEnd: 0, outputPadding: -padEnd };
}

function transposedWindowOp(b: GraphBuilder, g: string, weight: string, kernel: Pair, stride: Pair, padding: Pair, inShape: number[], outShape: number[], group: number): string {
  const gy = transposeGeometry(inShape[1], outShape[1], kernel[0], stride[0], padding[0]);
  const gx = transposeGeometry(inShape[2], outShape[2], kernel[1], stride[1], padding[1]);
  return b.op1('ConvTranspose', [g, weight], {
    kernel_shape: kernel,
    strides: stride,
    pads: [padding[0], padding[1], gy.padEnd, gx.padEnd],
    output_padding: [gy.outputPadding, gx.outputPadding],
    group,
  });
}

/**
 * [N, C*s0*s1, Q0, Q1] with channel c*s0*s1 + ry*s1 + rx holding phase (ry, rx) -> [N, C, Q0*s0, Q1*s1] with that
 * phase at rows q*s0 + ry, columns q*s1 + rx. Square strides use DepthToSpace (CRD order), about half the time of the
 * general reshape-transpose-reshape (zfnet-small conv2 input gradient: 1.17 -> 0.64 ms).
 */
function interleavePhases(b: GraphBuilder, phases: string, channels: number, stride: Pair, q: Pair): string {
  const [s0, s1] = stride;
  if (s0 * s1 === 1) return phases;
  if (s0 === s1) return b.op1('DepthToSpace', [phases], { blocksize: s0, mode: 'CRD' });
  const split = b.op1('Reshape', [phases, b.int64s([-1, channels, s0, s1, q[0], q[1]])]);
  const moved = b.op1('Transpose', [split], { perm: [0, 1, 4, 2, 5, 3] });
  return b.op1('Reshape', [moved, b.int64s([-1, channels, q[0] * s0, q[1] * s1])]);
}

/**
 * The input gradient of a convolution, dx = ConvTranspose(g, W), computed as one ordinary Conv plus an interleave:
 * onnxruntime's Conv is an order of magnitude faster than its ConvTranspose on CPU. Output row Y + pad = q*s + r
 * (phase r) sums taps a = r + j*s of W against g[q - j], so each phase is a correlation with the flipped sub-kernel
 * W[r + (J-1-t)*s], t < J = ceil(k/s); the s0*s1 phases are stacked as output channels, interleaved, and the padding
 * is sliced off. The phase kernel is gathered from W inside the graph, so the same code serves initializer weights
 * (constant-folded) and weights fed per call (training). With `gemm`, a small phase map runs as a GEMM (convolve).
 */
function convInputGradient(b: GraphBuilder, g: string, weight: string, layer: Extract<Layer, { type: 'conv2d' }>, info: LayerInfo, gemm: boolean): string {
  const { inShape, outShape } = info;
  const [s0, s1] = layer.stride;
  const [k0, k1] = layer.kernel;
  const j0 = Math.ceil(k0 / s0);
  const j1 = Math.ceil(k1 / s1);
  const cOut = layer.outChannels;
  const cIn = layer.inChannels;
  // index into [W flattened, 0]: the phase kernel K[c*s0*s1 + ry*s1 + rx, o, ty, tx] = W[o, c, ry + (j0-1-ty)*s0, rx + (j1-1-tx)*s1]
  const zero = cOut * cIn * k0 * k1;
  const index: number[] = [];
  for (let c = 0; c < cIn; c++) {
    for (let ry = 0; ry < s0; ry++) {
      for (let rx = 0; rx < s1; rx++) {
        for (let o = 0; o < cOut; o++) {
          for (let ty = 0; ty < j0; ty++) {
            for (let tx = 0; tx < j1; tx++) {
              const a = ry + (j0 - 1 - ty) * s0;
              const bb = rx + (j1 - 1 - tx) * s1;
              index.push(a < k0 && bb < k1 ? ((o * cIn + c) * k0 + a) * k1 + bb : zero);
            }
          }
        }
      }
    }
  }
  const padded = b.op1('Concat', [b.op1('Reshape', [weight, b.int64s([-1])]), b.floats([0])], { axis: 0 });
  const kernel = b.op1('Reshape', [b.op1('Gather', [padded, b.int64s(index, [index.length])], { axis: 0 }), b.int64s([cIn * s0 * s1, cOut, j0, j1])]);
  const [, h, w] = inShape;
  const [, oh, ow] = outShape;
  const [p0, p1] = layer.padding;
  // Only the phase rows q that reach rows pad .. pad+size-1 of the interleaved signal are computed.
  const qStart0 = Math.min(Math.floor(p0 / s0), j0 - 1);
  const qStart1 = Math.min(Math.floor(p1 / s1), j1 - 1);
  const qEnd0 = Math.ceil((h + p0) / s0);
  const qEnd1 = Math.ceil((w + p1) / s1);
  const q0 = qEnd0 - qStart0;
  const q1 = qEnd1 - qStart1;
  const pads: Pads = [j0 - 1 - qStart0, j1 - 1 - qStart1, Math.max(0, qEnd0 - oh), Math.max(0, qEnd1 - ow)];
  const phaseShape = [cIn * s0 * s1, Math.max(oh, qEnd0) - qStart0, Math.max(ow, qEnd1) - qStart1];
  let { out: phases } = convolve(b, g, kernel, undefined, { kernel: [j0, j1], stride: [1, 1], pads, inShape: outShape, outShape: phaseShape }, gemm);
  if (phaseShape[1] > q0 || phaseShape[2] > q1) phases = b.op1('Slice', [phases, b.int64s([0, 0]), b.int64s([q0, q1]), b.int64s([2, 3])]);
  const full = interleavePhases(b, phases, cIn, layer.stride, [q0, q1]);
  const top = p0 - qStart0 * s0;
  const left = p1 - qStart1 * s1;
  return b.op1('Slice', [full, b.int64s([top, left]), b.int64s([top + h, left + w]), b.int64s([2, 3])]);
}

export function emitForward(b: GraphBuilder, model: Model, infos: LayerInfo[], input: string, weight: WeightSource, opts: ForwardOptions): ForwardTrace {
  const from = opts.from ?? 0;
  const trace: ForwardTrace = { values: [], switches: new Map(), dropoutMasks: new Map(), columns: new Map() };
  trace.values[from] = input;
  let x = input;
  for (let i = from; i <= opts.upTo; i++) {
    const layer = model.layers[i];
    const info = infos[i];
    const out = activationName(layer.name);
    switch (layer.type) {
      case 'conv2d': {
        const bias = layer.bias ? weight(`${layer.name}.bias`) : undefined;
        const { cols } = convolve(b, x, weight(`${layer.name}.weight`), bias, layerGeometry(layer, info), opts.gemmSmallConvs === true, out);
        if (cols) trace.columns.set(i, cols);
        break;
      }
      case 'relu':
        b.op1('Relu', [x], {}, out);
        break;
      case 'maxpool2d': {
        const attrs = { ...convAttrs(layer.kernel, layer.stride, layer.padding), ceil_mode: layer.ceilMode ? 1 : 0 };
        if (opts.switches) {
          const sw = switchesName(layer.name);
          b.op('MaxPool', [x], attrs, [out, sw]);
          trace.switches.set(i, sw);
        } else b.op('MaxPool', [x], attrs, [out]);
        break;
      }
      case 'avgpool2d':
        b.op1('AveragePool', [x], { ...convAttrs(layer.kernel, layer.stride, layer.padding), ceil_mode: layer.ceilMode ? 1 : 0, count_include_pad: layer.countIncludePad ? 1 : 0 }, out);
        break;
      case 'adaptiveavgpool2d': {
        const [c, h, w] = info.inShape;
        const [oh, ow] = layer.output;
        const m = b.floatTensor(b.fresh(`${layer.name}_pool_matrix`), [h * w, oh * ow], adaptivePoolMatrix(h, w, oh, ow));
        const flat = b.op1('Reshape', [x, b.int64s([-1, c, h * w])]);
        b.op1('Reshape', [b.op1('MatMul', [flat, m]), b.int64s([-1, c, oh, ow])], {}, out);
        break;
      }
      case 'lrn': {
        if (opts.portable && layer.size % 2 === 1) {
          b.op1('LRN', [x], { size: layer.size, alpha: { float: layer.alpha }, beta: { float: layer.beta }, bias: { float: layer.k } }, out);
        } else if (opts.portable) {
          // ONNX's LRN centres even windows differently from PyTorch: PyTorch's window, written out.
          const d = lrnDenominator(b, layer, x, info.inShape, true);
          b.op1('Div', [x, b.op1('Pow', [d, b.floats([layer.beta], [])])], {}, out);
        } else {
          // From its formula rather than ONNX's LRN op, which is slower here (see channelWindowMean).
          const d = lrnDenominator(b, layer, x, info.inShape);
          b.op1('Mul', [x, inversePower(b, d, layer.beta)], {}, out);
        }
        break;
      }
      case 'batchnorm2d': {
        const p = (s: string) => weight(`${layer.name}.${s}`);
        b.op1('BatchNormalization', [x, p('weight'), p('bias'), p('running_mean'), p('running_var')], { epsilon: { float: layer.eps } }, out);
        break;
      }
      case 'flatten':
        b.op1('Flatten', [x], { axis: 1 }, out);
        break;
      case 'linear': {
        const inputs = [x, weight(`${layer.name}.weight`)];
        if (layer.bias) inputs.push(weight(`${layer.name}.bias`));
        b.op1('Gemm', inputs, { transB: 1 }, out);
        break;
      }
      case 'dropout':
        if (opts.dropout === 'mask') {
          const mask = b.input(dropoutMaskName(layer.name), ['N', ...info.outShape]);
          trace.dropoutMasks.set(i, mask);
          b.op1('Mul', [x, mask], {}, out);
        } else b.op1('Identity', [x], {}, out);
        break;
      case 'softmax':
        b.op1('Softmax', [x], { axis: 1 }, out);
        break;
      default:
        assertNever(layer, 'layer type');
    }
    x = out;
    trace.values[i + 1] = out;
  }
  return trace;
}

export interface BackwardOptions {
  rule: BackwardRule;
  lrn: LrnBackward;
  /** Emit dLoss/dWeight for every parameter, named `grad__<key>` (train step). */
  weightGradients: boolean;
  /** As ForwardOptions.gemmSmallConvs, for the input-gradient convolutions. */
  gemmSmallConvs?: boolean;
}

/**
 * Emits the backward pass from the gradient `seed` at the output of layer `from` down to the graph input.
 * Returns the tensor name of the signal at the input, and the weight gradients when asked for.
 */
export function emitBackward(
  b: GraphBuilder,
  model: Model,
  infos: LayerInfo[],
  trace: ForwardTrace,
  from: number,
  seed: string,
  weight: WeightSource,
  opts: BackwardOptions,
): { input: string; weightGrads: Map<string, string> } {
  const weightGrads = new Map<string, string>();
  let g = seed;
  // Set when a max pool already applied the gate of the ReLU below it (at the pooled size, see the maxpool2d case).
  let gatedByPool = false;
  for (let i = from; i >= 0; i--) {
    const layer = model.layers[i];
    const info = infos[i];
    const x = trace.values[i];
    const y = trace.values[i + 1];
    const needInputGrad = i > 0 || !opts.weightGradients;
    switch (layer.type) {
      case 'conv2d': {
        const cols = trace.columns.get(i);
        if (opts.weightGradients) {
          const byGemm = opts.gemmSmallConvs === true && info.outShape[1] * info.outShape[2] <= GEMM_WEIGHT_GRADIENT_MAX_POSITIONS;
          const wcols = cols ?? (byGemm ? columns(b, toChannelMajor(b, x), layerGeometry(layer, info)) : undefined);
          weightGrads.set(`${layer.name}.weight`, wcols ? gemmWeightGradient(b, layer, wcols, g) : convWeightGradient(b, layer, info, x, g));
          if (layer.bias) weightGrads.set(`${layer.name}.bias`, b.op1('ReduceSum', [g, b.int64s([0, 2, 3])], { keepdims: 0 }));
        }
        if (needInputGrad) {
          const w = weight(`${layer.name}.weight`);
          const small = info.inShape[1] * info.inShape[2] <= GEMM_CONV_MAX_POSITIONS;
          const byGemm = opts.gemmSmallConvs === true && small && unitStride(layer) && layer.padding[0] < layer.kernel[0] && layer.padding[1] < layer.kernel[1];
          g = byGemm ? gemmInputGradient(b, g, w, layer, info) : convInputGradient(b, g, w, layer, info, opts.gemmSmallConvs === true);
        }
        break;
      }
      case 'linear': {
        if (opts.weightGradients) {
          weightGrads.set(`${layer.name}.weight`, b.op1('Gemm', [g, x], { transA: 1 }));
          if (layer.bias) weightGrads.set(`${layer.name}.bias`, b.op1('ReduceSum', [g, b.int64s([0])], { keepdims: 0 }));
        }
        if (needInputGrad) g = b.op1('MatMul', [g, weight(`${layer.name}.weight`)]);
        break;
      }
      case 'relu': {
        if (opts.rule === 'deconvnet') g = b.op1('Relu', [g]);
        else if (gatedByPool) {
          if (opts.rule === 'guided') g = b.op1('Relu', [g]);
          gatedByPool = false;
        } else {
          // The gate reads the ReLU's output (y > 0 exactly where x > 0) so that onnxruntime can fuse Conv+Relu,
          // and multiplies by it as 0/1 floats: Where ran on one core (zfnet-small relu1 gate: 2.2 -> 1.4 ms).
          g = b.op1('Mul', [opts.rule === 'guided' ? b.op1('Relu', [g]) : g, positiveMask(b, y)]);
        }
        break;
      }
      case 'maxpool2d': {
        // Each value goes back to the position its switch recorded; values that meet at one position add up.
        // (A switch-free form, comparing each strided tap with the pooled value, ran slower: its Slices and Pads.)
        const sw = trace.switches.get(i);
        if (!sw) throw new Error(`internal: no switches recorded for ${layer.name}`);
        if (opts.rule !== 'deconvnet' && i > 0 && model.layers[i - 1].type === 'relu') {
          // A pooled value is the ReLU output at its switch, so the ReLU's gate (output > 0) read at the pooled size
          // is the gate at every position a value goes back to: 4x fewer elements than gating after the scatter.
          g = b.op1('Mul', [g, positiveMask(b, y)]);
          gatedByPool = true;
        }
        const size = b.op1('Reshape', [b.op1('Size', [x]), b.int64s([1])]);
        const zeros = b.op1('ConstantOfShape', [size], {});
        const flat = b.op1('ScatterElements', [zeros, b.op1('Reshape', [sw, b.int64s([-1])]), b.op1('Reshape', [g, b.int64s([-1])])], { axis: 0, reduction: 'add' });
        g = b.op1('Reshape', [flat, b.op1('Shape', [x])]);
        break;
      }
      case 'avgpool2d': {
        const [c] = info.inShape;
        const div = avgPoolDivisors(layer, info.inShape, info.outShape);
        const inv = b.floatTensor(b.fresh(`${layer.name}_inv_divisor`), [1, 1, info.outShape[1], info.outShape[2]], div.map((d) => 1 / d));
        const ones = b.floatTensor(b.fresh(`${layer.name}_ones`), [c, 1, ...layer.kernel], new Float32Array(c * layer.kernel[0] * layer.kernel[1]).fill(1));
        g = transposedWindowOp(b, b.op1('Mul', [g, inv]), ones, layer.kernel, layer.stride, layer.padding, info.inShape, info.outShape, c);
        break;
      }
      case 'adaptiveavgpool2d': {
        const [c, h, w] = info.inShape;
        const [oh, ow] = layer.output;
        const mt = b.floatTensor(b.fresh(`${layer.name}_pool_matrix_t`), [oh * ow, h * w], transposeMatrix(adaptivePoolMatrix(h, w, oh, ow), h * w, oh * ow));
        const flat = b.op1('Reshape', [g, b.int64s([-1, c, oh * ow])]);
        g = b.op1('Reshape', [b.op1('MatMul', [flat, mt]), b.int64s([-1, c, h, w])]);
        break;
      }
      case 'lrn': {
        if (opts.lrn === 'identity') break;
        // dL/da_j = g_j d_j^-b - (2 alpha b / size) a_j sum_{c: j in W(c)} g_c a_c d_c^(-b-1), d = k + alpha/size sum_W a^2.
        const d = lrnDenominator(b, layer, x, info.inShape);
        const dPow = inversePower(b, d, layer.beta);
        const direct = b.op1('Mul', [g, dPow]);
        const u = b.op1('Div', [b.op1('Mul', [direct, x]), d]);
        const back = channelWindowMean(b, u, info.inShape, layer.size, Math.floor((layer.size - 1) / 2), Math.floor(layer.size / 2));
        // channelWindowMean divides by size; the formula's 2*alpha*beta/size times the sum is 2*alpha*beta times the mean.
        const cross = b.op1('Mul', [b.op1('Mul', [back, x]), b.floats([2 * layer.alpha * layer.beta], [])]);
        g = b.op1('Sub', [direct, cross]);
        break;
      }
      case 'batchnorm2d': {
        const gamma = model.weights.get(`${layer.name}.weight`)!.data;
        const variance = model.weights.get(`${layer.name}.running_var`)!.data;
        const scale = Array.from(gamma, (s, c) => s / Math.sqrt(variance[c] + layer.eps));
        g = b.op1('Mul', [g, b.floats(scale, [layer.channels, 1, 1])]);
        break;
      }
      case 'flatten':
        g = b.op1('Reshape', [g, b.op1('Shape', [x])]);
        break;
      case 'dropout': {
        const mask = trace.dropoutMasks.get(i);
        if (mask) g = b.op1('Mul', [g, mask]);
        break;
      }
      case 'softmax': {
        const dot = b.op1('ReduceSum', [b.op1('Mul', [g, y]), b.int64s([1])], { keepdims: 1 });
        g = b.op1('Mul', [y, b.op1('Sub', [g, dot])]);
        break;
      }
      default:
        assertNever(layer, 'layer type');
    }
  }
  return { input: g, weightGrads };
}

/**
 * In the train step, convolutions whose output maps have at most this many positions run as im2col (one Gather) + one
 * GEMM: onnxruntime's Conv kernels fall far below its GEMM on small maps. zfnet-small, batch 32, conv3-5 (4x4 maps):
 * forward + input gradient + weight gradient 4.3-5.8 ms as Convs, 2.8-3.5 ms as GEMMs; ZFNet-224 batch 16 with its
 * 13x13 conv3-5 lowered: 1110 -> 907 ms a step.
 */
const GEMM_CONV_MAX_POSITIONS = 256;
/**
 * Weight gradients take the GEMM up to larger maps (the columns are gathered in the backward when the forward ran
 * a Conv): zfnet-small conv1 (32x32) 4.5 -> 3.5 ms with the gather, ZFNet conv2 (26x26) 149 ms as a Conv, 98 ms
 * as the GEMM, at batch 32. Larger maps (ZFNet conv1, 110x110: 230 MB of columns at batch 32) keep the dilated Conv.
 */
const GEMM_WEIGHT_GRADIENT_MAX_POSITIONS = 1024;

/** 1 where t > 0, else 0, as floats: the gate of a ReLU read from its output. */
function positiveMask(b: GraphBuilder, t: string): string {
  return b.op1('Cast', [b.op1('Greater', [t, b.floats([0], [])])], { to: DataType.FLOAT });
}

interface ConvGeometry {
  kernel: Pair;
  stride: Pair;
  pads: Pads;
  /** [C, H, W] of the input and output. */
  inShape: number[];
  outShape: number[];
}

function layerGeometry(layer: Extract<Layer, { type: 'conv2d' }>, info: LayerInfo): ConvGeometry {
  return { kernel: layer.kernel, stride: layer.stride, pads: symmetricPads(layer.padding), inShape: info.inShape, outShape: info.outShape };
}

/**
 * y = conv(x [N, C, H, W], weight [O, C, kh, kw]) + bias: onnxruntime's Conv, or, when `gemm` allows and the output map
 * is small, im2col + one GEMM, returning the column matrix for the weight gradient.
 */
function convolve(b: GraphBuilder, x: string, weight: string, bias: string | undefined, geo: ConvGeometry, gemm: boolean, output?: string): { out: string; cols?: string } {
  const [o, oh, ow] = geo.outShape;
  if (!gemm || oh * ow > GEMM_CONV_MAX_POSITIONS) {
    const inputs = bias ? [x, weight, bias] : [x, weight];
    return { out: b.op1('Conv', inputs, { kernel_shape: geo.kernel, strides: geo.stride, pads: geo.pads }, output) };
  }
  const cols = columns(b, toChannelMajor(b, x), geo);
  const inputs = [b.op1('Reshape', [weight, b.int64s([o, -1])]), cols];
  if (bias) inputs.push(b.op1('Reshape', [bias, b.int64s([o, 1])]));
  return { out: fromChannelMajor(b, b.op1('Gemm', inputs), geo.outShape, output), cols };
}

/** [N, C, H, W] -> [C, H, W, N]: channels leading and the batch innermost, so that one Gather builds the columns. */
function toChannelMajor(b: GraphBuilder, x: string): string {
  return b.op1('Transpose', [x], { perm: [1, 2, 3, 0] });
}

/** A GEMM output [C, H*W*N] back to [N, C, H, W]. */
function fromChannelMajor(b: GraphBuilder, m: string, shape: number[], output?: string): string {
  const [c, h, w] = shape;
  return b.op1('Transpose', [b.op1('Reshape', [m, b.int64s([c, h, w, -1])])], { perm: [3, 0, 1, 2] }, output);
}

/**
 * im2col of a channel-major map [C, H, W, N]: rows (c, a, b), columns (y, x, n), as [C*kh*kw, Ho*Wo*N].
 * One Gather of whole batch rows over the padded positions: a Slice per tap cost more than the GEMM it feeds.
 */
function columns(b: GraphBuilder, xt: string, geo: ConvGeometry, flipped = false): string {
  const [channels, ih, iw] = geo.inShape;
  const [, oh, ow] = geo.outShape;
  const { kernel, stride, pads } = geo;
  const padded = pads.some((p) => p > 0) ? b.op1('Pad', [xt, b.int64s([0, pads[0], pads[1], 0, 0, pads[2], pads[3], 0])]) : xt;
  const h = ih + pads[0] + pads[2];
  const w = iw + pads[1] + pads[3];
  const index: number[] = [];
  for (let a = 0; a < kernel[0]; a++) {
    for (let c = 0; c < kernel[1]; c++) {
      // Flipped: row (a, c) reads tap (kh-1-a, kw-1-c), the correlation form of a transposed convolution.
      const [ta, tc] = flipped ? [kernel[0] - 1 - a, kernel[1] - 1 - c] : [a, c];
      for (let y = 0; y < oh; y++) for (let x = 0; x < ow; x++) index.push((y * stride[0] + ta) * w + x * stride[1] + tc);
    }
  }
  const flat = b.op1('Reshape', [padded, b.int64s([channels, h * w, -1])]);
  const taps = b.op1('Gather', [flat, b.int64s(index, [index.length])], { axis: 1 });
  return b.op1('Reshape', [taps, b.int64s([channels * kernel[0] * kernel[1], -1])]);
}

function unitStride(layer: Extract<Layer, { type: 'conv2d' }>): boolean {
  return layer.stride[0] === 1 && layer.stride[1] === 1;
}

/**
 * Stride 1: dx[c,n,i,j] = sum_{o,a,b} W[o,c,a,b] gpad[o,n,i+kh-1-a,j+kw-1-b], g padded by k-1-p: W as [Cin, Cout*kh*kw]
 * (a transpose) times the flipped columns of g. The general path gathers a flipped kernel instead, which onnxruntime's
 * 1-d Gather does slowly (0.3 ms for conv4's 83k weights).
 */
function gemmInputGradient(b: GraphBuilder, g: string, weight: string, layer: Extract<Layer, { type: 'conv2d' }>, info: LayerInfo): string {
  const [k0, k1] = layer.kernel;
  const wm = b.op1('Reshape', [b.op1('Transpose', [weight], { perm: [1, 0, 2, 3] }), b.int64s([layer.inChannels, -1])]);
  const pads: Pads = [k0 - 1 - layer.padding[0], k1 - 1 - layer.padding[1], k0 - 1 - layer.padding[0], k1 - 1 - layer.padding[1]];
  const cols = columns(b, toChannelMajor(b, g), { kernel: layer.kernel, stride: [1, 1], pads, inShape: info.outShape, outShape: info.inShape }, true);
  return fromChannelMajor(b, b.op1('MatMul', [wm, cols]), info.inShape);
}

/** dW = g [Cout, Ho*Wo*N] x columns^T, reshaped to [Cout, Cin, kh, kw]. */
function gemmWeightGradient(b: GraphBuilder, layer: Extract<Layer, { type: 'conv2d' }>, cols: string, g: string): string {
  const gm = b.op1('Reshape', [toChannelMajor(b, g), b.int64s([layer.outChannels, -1])]);
  // dW^T = columns x g^T: onnxruntime's GEMM runs the tall-times-short orientation faster (zfnet-small conv1: 2.8 -> 1.8
  // ms). The transpose back goes through a 3-d view, which keeps onnxruntime from fusing it into the Gemm again.
  const dwt = b.op1('Reshape', [b.op1('Gemm', [cols, gm], { transB: 1 }), b.int64s([layer.inChannels, -1, layer.outChannels])]);
  return b.op1('Reshape', [b.op1('Transpose', [dwt], { perm: [2, 0, 1] }), b.int64s([layer.outChannels, layer.inChannels, ...layer.kernel])]);
}

/**
 * dW[o,i,a,b] = sum_{n,y,x} g[n,o,y,x] * xpad[n,i,y*s+a,x*s+b]: a convolution of the input (batch as channels) with
 * the output gradient as filter, dilated by the stride; sliced to the kernel size when the stride leaves a remainder.
 */
function convWeightGradient(b: GraphBuilder, layer: Extract<Layer, { type: 'conv2d' }>, info: LayerInfo, x: string, g: string): string {
  const xt = b.op1('Transpose', [x], { perm: [1, 0, 2, 3] });
  const gt = b.op1('Transpose', [g], { perm: [1, 0, 2, 3] });
  const [, oh, ow] = info.outShape;
  const [, h, w] = info.inShape;
  let dw = b.op1('Conv', [xt, gt], {
    kernel_shape: [oh, ow],
    strides: [1, 1],
    dilations: layer.stride,
    pads: [layer.padding[0], layer.padding[1], layer.padding[0], layer.padding[1]],
  });
  const fullH = h + 2 * layer.padding[0] - (oh - 1) * layer.stride[0];
  const fullW = w + 2 * layer.padding[1] - (ow - 1) * layer.stride[1];
  if (fullH !== layer.kernel[0] || fullW !== layer.kernel[1]) {
    dw = b.op1('Slice', [dw, b.int64s([0, 0]), b.int64s(layer.kernel), b.int64s([2, 3])]);
  }
  return b.op1('Transpose', [dw], { perm: [1, 0, 2, 3] });
}

