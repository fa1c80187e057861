// Local response normalisation pieces, shared by lrn's forward and its true gradient.
import type { GraphBuilder } from '../../../onnx/builder.js';
import type { Layer } from '../../layers.js';

/**
 * Mean over the channel window [c - before, c + after] of x [N,C,H,W] (channels outside the range count as zero), as a
 * 1x1 convolution with a banded C x C weight: onnxruntime runs it in its fast NCHWc conv kernels, where its LRN and
 * pooling ops break the layout (a third faster forward on ZFNet).
 */
export function channelWindowMean(b: GraphBuilder, x: string, shape: number[], size: number, before: number, after: number, portable = false): string {
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
export function inversePower(b: GraphBuilder, d: string, beta: number): string {
  if (beta !== 0.75) return b.op1('Pow', [d, b.floats([-beta], [])]);
  const root = b.op1('Sqrt', [d]);
  return b.op1('Reciprocal', [b.op1('Mul', [root, b.op1('Sqrt', [root])])]);
}

/** PyTorch's LocalResponseNorm denominator base d = k + alpha * mean over the window of a^2 (window c-size/2 .. c+(size-1)/2). */
export function lrnDenominator(b: GraphBuilder, layer: Extract<Layer, { type: 'lrn' }>, a: string, shape: number[], portable = false): string {
  const sq = b.op1('Mul', [a, a]);
  const mean = channelWindowMean(b, sq, shape, layer.size, Math.floor(layer.size / 2), Math.floor((layer.size - 1) / 2), portable);
  return b.op1('Add', [b.op1('Mul', [mean, b.floats([layer.alpha], [])]), b.floats([layer.k], [])]);
}

