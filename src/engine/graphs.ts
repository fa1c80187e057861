// The graph kinds convscope runs. Units, masks and batch contents are always graph inputs, so one compiled
// session serves every request of its kind.
import { GraphBuilder } from '../onnx/builder.js';
import { DataType } from '../onnx/proto.js';
import type { Model } from '../model/layers.js';
import type { LayerInfo } from '../model/shapes.js';
import { activationName, emitBackward, emitForward, layerOfSwitches, type BackwardRule, type LrnBackward, type WeightSource } from './compile.js';

export const INPUT = 'input';
export const SEED_MASK = 'seed_mask';
export const SEED_BY_ACTIVATION = 'seed_by_activation';
export const PROJECTION = 'projection';
export { activationName, layerOfSwitches };

/** Weights baked into the graph as initializers (ORT prepacks them for inference). */
function initializerWeights(b: GraphBuilder, model: Model): WeightSource {
  const added = new Set<string>();
  return (key) => {
    if (!added.has(key)) {
      const t = model.weights.get(key);
      if (!t) throw new Error(`weight '${key}' is missing`);
      b.floatTensor(key, t.shape, t.data);
      added.add(key);
    }
    return key;
  };
}


/** Forward pass returning the outputs of the listed layers and, optionally, every max-pool's switches up to them. */
export function buildForwardGraph(model: Model, infos: LayerInfo[], outputs: number[], withSwitches: boolean): Uint8Array {
  const b = new GraphBuilder();
  const upTo = Math.max(...outputs);
  const input = b.input(INPUT, ['N', ...model.input]);
  const trace = emitForward(b, model, infos, input, initializerWeights(b, model), { upTo, switches: withSwitches, dropout: 'identity' });
  for (const i of outputs) b.output(trace.values[i + 1], ['N', ...infos[i].outShape]);
  for (const [i, sw] of trace.switches) b.output(sw, ['N', ...infos[i].outShape], DataType.INT64);
  return b.encode('convscope_forward');
}

/**
 * Forward to layer `from`, then backward to the pixels from the seed
 *   seed = mask * (by_activation * activation + (1 - by_activation)),
 * so a caller seeds with the activation value (Zeiler & Fergus) or with 1 (Captum) without another graph.
 */
export function buildProjectionGraph(model: Model, infos: LayerInfo[], from: number, rule: BackwardRule, lrn: LrnBackward): Uint8Array {
  const b = new GraphBuilder();
  const input = b.input(INPUT, ['N', ...model.input]);
  const weights = initializerWeights(b, model);
  const trace = emitForward(b, model, infos, input, weights, { upTo: from, switches: true, dropout: 'identity' });
  const act = trace.values[from + 1];
  const mask = b.input(SEED_MASK, ['N', ...infos[from].outShape]);
  const byAct = b.input(SEED_BY_ACTIVATION, [1]);
  const one = b.floats([1], []);
  const gain = b.op1('Add', [b.op1('Mul', [act, byAct]), b.op1('Sub', [one, byAct])]);
  const seed = b.op1('Mul', [mask, gain]);
  const { input: projection } = emitBackward(b, model, infos, trace, from, seed, weights, { rule, lrn, weightGradients: false });
  b.op1('Identity', [projection], {}, PROJECTION);
  b.output(PROJECTION, ['N', ...model.input]);
  b.output(act, ['N', ...infos[from].outShape]);
  return b.encode('convscope_projection');
}
