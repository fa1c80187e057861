// Checks shared by the ONNX import mappings of window ops and weighted ops.
import type { NodeProto } from '../../onnx/proto.js';
import type { Pair } from '../layers.js';
import { intsAttr, refuse, stringAttr } from '../onnx-import/attributes.js';
import type { ConstTensor } from '../onnx-import/constants.js';

/**
 * 2-D window geometry (Conv, MaxPool, AveragePool): kernel, strides, and pads that PyTorch can express. With
 * `asymmetric` (zero-padded windows only: a convolution), unequal pads are split into the symmetric part the window
 * keeps and the rest, `extra` as [top, left, bottom, right], for a zero Pad before it (TensorFlow's SAME padding).
 */
export function windowGeometry(n: NodeProto, kernel: number[], opts: { dilated?: boolean; asymmetric?: boolean } = {}): { kernel: Pair; stride: Pair; padding: Pair; extra?: [number, number, number, number] } {
  if (kernel.length !== 2) refuse(n, `only 2-D windows are supported, this one is ${kernel.length}-D`);
  const autoPad = stringAttr(n, 'auto_pad', 'NOTSET');
  if (autoPad !== 'NOTSET') refuse(n, `auto_pad ${autoPad} is not supported; export with explicit padding`);
  if (!opts.dilated && intsAttr(n, 'dilations', [1, 1]).some((d) => d !== 1)) refuse(n, 'dilated windows are not supported');
  const strides = intsAttr(n, 'strides', [1, 1]);
  const pads = intsAttr(n, 'pads', [0, 0, 0, 0]);
  if (pads.length !== 4 || pads.some((p) => !Number.isInteger(p) || p < 0)) refuse(n, `pads [${pads}] are not four non-negative integers`);
  const window = { kernel: [kernel[0], kernel[1]] as Pair, stride: [strides[0], strides[1]] as Pair };
  if (pads[0] === pads[2] && pads[1] === pads[3]) return { ...window, padding: [pads[0], pads[1]] };
  if (!opts.asymmetric) refuse(n, `asymmetric pads [${pads}] are not supported`);
  const kept: Pair = [Math.min(pads[0], pads[2]), Math.min(pads[1], pads[3])];
  return { ...window, padding: kept, extra: [pads[0] - kept[0], pads[1] - kept[1], pads[2] - kept[0], pads[3] - kept[1]] };
}

export function flatBias(n: NodeProto, t: ConstTensor, out: number): ConstTensor {
  if (t.data.length !== out || t.dims.filter((d) => d !== 1).length > 1) refuse(n, `bias of shape [${t.dims}] does not fit ${out} outputs`);
  return { ...t, dims: [out] };
}

export function transposed(t: ConstTensor): ConstTensor {
  const [rows, cols] = t.dims;
  const data = new Float32Array(t.data.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) data[c * rows + r] = t.data[r * cols + c];
  return { dims: [cols, rows], data, origin: t.origin };
}
