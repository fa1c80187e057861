import type { GraphBuilder } from '../../../onnx/builder.js';
import { DataType } from '../../../onnx/proto.js';

/** 1 where t > 0, else 0, as floats: the gate of a ReLU read from its output. */
export function positiveMask(b: GraphBuilder, t: string): string {
  return b.op1('Cast', [b.op1('Greater', [t, b.floats([0], [])])], { to: DataType.FLOAT });
}
