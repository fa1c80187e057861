// Convolution lowerings shared by conv2d's forward and backward: im2col + GEMM for small maps, the input gradient as
// a flipped Conv or a ConvTranspose, the weight gradient as a GEMM or a dilated Conv. Each was chosen by measurement
// (see the notes).
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
 * The input gradient of a convolution, dx = ConvTranspose(g, W), lowered by stride as measured by
 * `node --import tsx bench/tooling/input-gradient.ts` (batch 16, ZFNet's and ResNet-18's shapes):
 * - stride 1: one Conv of g with the flipped, transposed kernel, the forward's cost (ConvTranspose took 1.4-2.5x);
 * - strided: onnxruntime's ConvTranspose, a GEMM and a col2im per image (as fast as MatMul + Col2Im, and 0.8-0.9x
 *   of it on ZFNet's conv1 and conv2). The phase-split Conv used before padded each phase kernel to ceil(k/s) taps,
 *   16 for a 3x3 kernel's 9 and 4 for a 1x1's 1: ResNet-18's batch-16 gradient pass fell from 900 to 776 ms.
 * The flipped kernel is gathered inside the graph, so the same code serves initializer weights (constant-folded) and
 * weights fed per call (training). With `gemm`, a small stride-1 map runs as a GEMM (convolve).
 */
export function convInputGradient(b: GraphBuilder, g: string, weight: string, layer: Conv2d, info: LayerInfo, gemm: boolean): string {
  const { inShape, outShape } = info;
  if (!unitStride(layer)) return transposedWindowOp(b, g, weight, layer.kernel, layer.stride, layer.padding, inShape, outShape, 1);
  const [k0, k1] = layer.kernel;
  const [p0, p1] = layer.padding;
  const [cIn, h, w] = inShape;
  const cOut = layer.outChannels;
  // K[c, o, a, b] = W[o, c, k0-1-a, k1-1-b]
  const index: number[] = [];
  for (let c = 0; c < cIn; c++) {
    for (let o = 0; o < cOut; o++) {
      for (let a = 0; a < k0; a++) for (let bb = 0; bb < k1; bb++) index.push(((o * cIn + c) * k0 + k0 - 1 - a) * k1 + k1 - 1 - bb);
    }
  }
  const flat = b.op1('Reshape', [weight, b.int64s([-1])]);
  const kernel = b.op1('Reshape', [b.op1('Gather', [flat, b.int64s(index, [index.length])], { axis: 0 }), b.int64s([cIn, cOut, k0, k1])]);
  // Padding k-1-p on each side gives exactly the input size; padding beyond k-1 (rare) is sliced off instead.
  const pad: Pair = [Math.max(0, k0 - 1 - p0), Math.max(0, k1 - 1 - p1)];
  const cut: Pair = [Math.max(0, p0 - (k0 - 1)), Math.max(0, p1 - (k1 - 1))];
  const full = [cIn, h + 2 * cut[0], w + 2 * cut[1]];
  const { out } = convolve(b, g, kernel, undefined, { kernel: layer.kernel, stride: [1, 1], pads: symmetricPads(pad), inShape: outShape, outShape: full }, gemm);
  if (cut[0] === 0 && cut[1] === 0) return out;
  return b.op1('Slice', [out, b.int64s(cut), b.int64s([cut[0] + h, cut[1] + w]), b.int64s([2, 3])]);
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

