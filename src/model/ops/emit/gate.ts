import type { GraphBuilder } from '../../../onnx/builder.js';

/**
 * 1 where t > 0, else 0, as floats, for a non-negative t (a ReLU's output, or a max pool of one): the gate of a ReLU
 * read from its output. Sign is one pass where Greater + Cast took two.
 */
export function positiveMask(b: GraphBuilder, t: string): string {
  return b.op1('Sign', [t]);
}
