// Convolution lowerings shared by conv2d's forward and backward: im2col + GEMM for small maps, the input gradient as
// a phase-split Conv, the weight gradient as a GEMM or a dilated Conv. Each was chosen by measurement (see the notes).
import type { GraphBuilder } from '../../../onnx/builder.js';
import type { Layer, Pair } from '../../layers.js';
import type { LayerInfo } from '../../shapes.js';

type Conv2d = Extract<Layer, { type: 'conv2d' }>;
export type Pads = [top: number, left: number, bottom: number, right: number];

export const symmetricPads = (padding: Pair): Pads => [padding[0], padding[1], padding[0], padding[1]];

export function convAttrs(kernel: Pair, stride: Pair, padding: Pair) {
  return { kernel_shape: kernel, strides: stride, pads: symmetricPads(padding) };
}

/** Pads and output padding that make a transposed window op return exactly the forward input size. */
function transposeGeometry(inSize: number, outSize: number, k: number, s: number, padBegin: number): { padEnd: number; outputPadding: number } {
  const padEnd = s * (outSize - 1) + k - padBegin - inSize;
  return padEnd >= 0 ? { padEnd, outputPadding: 0 } : { padEnd: 0, outputPadding: -padEnd };
}

export function transposedWindowOp(b: GraphBuilder, g: string, weight: string, kernel: Pair, stride: Pair, padding: Pair, inShape: number[], outShape: number[], group: number, dilation: Pair = [1, 1]): string {
  const extent = dilatedKernel(kernel, dilation);
  const gy = transposeGeometry(inShape[1], outShape[1], extent[0], stride[0], padding[0]);
  const gx = transposeGeometry(inShape[2], outShape[2], extent[1], stride[1], padding[1]);
  return b.op1('ConvTranspose', [g, weight], {
    kernel_shape: kernel,
    strides: stride,
    pads: [padding[0], padding[1], gy.padEnd, gx.padEnd],
    output_padding: [gy.outputPadding, gx.outputPadding],
    group,
    ...(dilation[0] * dilation[1] !== 1 ? { dilations: dilation } : {}),
  });
}

/** The input extent a dilated kernel spans: (k - 1) d + 1. */
export function dilatedKernel(kernel: Pair, dilation: Pair): Pair {
  return [(kernel[0] - 1) * dilation[0] + 1, (kernel[1] - 1) * dilation[1] + 1];
}

/**
 * The weight gradient of a grouped or dilated convolution (depthwise ones included) in one Conv: dW[o, i, a, b] =
 * sum_{n,y,x} g[n, o, y, x] xpad[n, G(o) ci + i, y s + a d, x s + b d]. The input becomes [ci, G*N, H, W] (batch =
 * the channel within a group, channels = group-major batches) and g the filters [Cout, N, Ho, Wo] in G groups, dilated
 * by the stride and strided by the dilation; the result [ci, Cout, ...] is cut to the kernel and transposed.
 */
export function groupedConvWeightGradient(b: GraphBuilder, layer: Conv2d, info: LayerInfo, x: string, g: string): string {
  const groups = layer.groups ?? 1;
  const dilation = layer.dilation ?? [1, 1];
  const ci = layer.inChannels / groups;
  const [, h, w] = info.inShape;
  const [, oh, ow] = info.outShape;
  const grouped = b.op1('Reshape', [x, b.int64s([-1, groups, ci, h, w])]);
  const input = b.op1('Reshape', [b.op1('Transpose', [grouped], { perm: [2, 1, 0, 3, 4] }), b.int64s([ci, -1, h, w])]);
  const filters = b.op1('Transpose', [g], { perm: [1, 0, 2, 3] });
  let dw = b.op1('Conv', [input, filters], {
    kernel_shape: [oh, ow],
    strides: dilation,
    dilations: layer.stride,
    pads: symmetricPads(layer.padding),
    group: groups,
  });
  dw = b.op1('Slice', [dw, b.int64s([0, 0]), b.int64s(layer.kernel), b.int64s([2, 3])]);
  return b.op1('Transpose', [dw], { perm: [1, 0, 2, 3] });
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
export function convInputGradient(b: GraphBuilder, g: string, weight: string, layer: Conv2d, info: LayerInfo, gemm: boolean): string {
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

/**
 * In the train step, convolutions whose output maps have at most this many positions run as im2col (one Gather) + one
 * GEMM: onnxruntime's Conv kernels fall far below its GEMM on small maps. zfnet-small, batch 32, conv3-5 (4x4 maps):
 * forward + input gradient + weight gradient 4.3-5.8 ms as Convs, 2.8-3.5 ms as GEMMs; ZFNet-224 batch 16 with its
 * 13x13 conv3-5 lowered: 1110 -> 907 ms a step.
 */
export const GEMM_CONV_MAX_POSITIONS = 256;
/**
 * Weight gradients take the GEMM up to larger maps (the columns are gathered in the backward when the forward ran
 * a Conv): zfnet-small conv1 (32x32) 4.5 -> 3.5 ms with the gather, ZFNet conv2 (26x26) 149 ms as a Conv, 98 ms
 * as the GEMM, at batch 32; ResNet-18's 56x56 layer1 convs at batch 16: 165 ms each as the Conv (a 56x56 kernel),
 * the whole step 2.97 -> 2.40 s with the GEMM. Larger maps (ZFNet conv1, 110x110: 230 MB of columns at batch 32) keep
 * the dilated Conv.
 */
export const GEMM_WEIGHT_GRADIENT_MAX_POSITIONS = 3136;

export interface ConvGeometry {
  kernel: Pair;
  stride: Pair;
  pads: Pads;
  /** [C, H, W] of the input and output. */
  inShape: number[];
  outShape: number[];
}

export function layerGeometry(layer: Conv2d, info: LayerInfo): ConvGeometry {
  return { kernel: layer.kernel, stride: layer.stride, pads: symmetricPads(layer.padding), inShape: info.inShape, outShape: info.outShape };
}

/**
 * y = conv(x [N, C, H, W], weight [O, C, kh, kw]) + bias: onnxruntime's Conv, or, when `gemm` allows and the output map
 * is small, im2col + one GEMM, returning the column matrix for the weight gradient.
 */
export function convolve(b: GraphBuilder, x: string, weight: string, bias: string | undefined, geo: ConvGeometry, gemm: boolean, output?: string): { out: string; cols?: string } {
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
export function toChannelMajor(b: GraphBuilder, x: string): string {
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
export function columns(b: GraphBuilder, xt: string, geo: ConvGeometry, flipped = false): string {
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

export function unitStride(layer: Conv2d): boolean {
  return layer.stride[0] === 1 && layer.stride[1] === 1;
}

/**
 * Stride 1: dx[c,n,i,j] = sum_{o,a,b} W[o,c,a,b] gpad[o,n,i+kh-1-a,j+kw-1-b], g padded by k-1-p: W as [Cin, Cout*kh*kw]
 * (a transpose) times the flipped columns of g. The general path gathers a flipped kernel instead, which onnxruntime's
 * 1-d Gather does slowly (0.3 ms for conv4's 83k weights).
 */
export function gemmInputGradient(b: GraphBuilder, g: string, weight: string, layer: Conv2d, info: LayerInfo): string {
  const [k0, k1] = layer.kernel;
  const wm = b.op1('Reshape', [b.op1('Transpose', [weight], { perm: [1, 0, 2, 3] }), b.int64s([layer.inChannels, -1])]);
  const pads: Pads = [k0 - 1 - layer.padding[0], k1 - 1 - layer.padding[1], k0 - 1 - layer.padding[0], k1 - 1 - layer.padding[1]];
  const cols = columns(b, toChannelMajor(b, g), { kernel: layer.kernel, stride: [1, 1], pads, inShape: info.outShape, outShape: info.inShape }, true);
  return fromChannelMajor(b, b.op1('MatMul', [wm, cols]), info.inShape);
}

/** dW = g [Cout, Ho*Wo*N] x columns^T, reshaped to [Cout, Cin, kh, kw]. */
export function gemmWeightGradient(b: GraphBuilder, layer: Conv2d, cols: string, g: string): string {
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
export function convWeightGradient(b: GraphBuilder, layer: Conv2d, info: LayerInfo, x: string, g: string): string {
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

