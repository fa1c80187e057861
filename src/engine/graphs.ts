// The graph kinds convscope runs. Units, masks and batch contents are always graph inputs, so one compiled
// session serves every request of its kind.
import { GraphBuilder } from '../onnx/builder.js';
import { DataType } from '../onnx/proto.js';
import type { Model } from '../model/layers.js';
import type { LayerInfo } from '../model/shapes.js';
import { activationName, dropoutMaskName, emitBackward, emitForward, layerOfSwitches, type BackwardRule, type LrnBackward, type WeightSource } from './compile.js';

export const INPUT = 'input';
export const SEED_MASK = 'seed_mask';
export const SEED_BY_ACTIVATION = 'seed_by_activation';
export const PROJECTION = 'projection';
export { activationName, dropoutMaskName, layerOfSwitches };

/** Weights baked into the graph as initializers (ORT prepacks them for inference). */
export function initializerWeights(b: GraphBuilder, model: Model): WeightSource {
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
  for (const i of outputs) b.output(trace.outputs[i], ['N', ...infos[i].outShape]);
  trace.saved.forEach(({ switches }, i) => switches && b.output(switches, ['N', ...infos[i].outShape], DataType.INT64));
  return b.encode('convscope_forward');
}

/**
 * Forward to layer `from`, then backward to the pixels from the seed
 *   seed = mask * (by_activation * activation + (1 - by_activation)),
 * so a caller seeds with the activation value (Zeiler & Fergus) or with 1 (Captum) without another graph. With
 * `atMax`, of each item's masked values (one feature map) only the first maximum in row-major order stays seeded, so
 * that "the strongest activation of map f" takes one call instead of a forward pass and then a projection.
 */
export function buildProjectionGraph(model: Model, infos: LayerInfo[], from: number, rule: BackwardRule, lrn: LrnBackward, atMax: boolean): Uint8Array {
  const b = new GraphBuilder();
  const input = b.input(INPUT, ['N', ...model.input]);
  const weights = initializerWeights(b, model);
  const trace = emitForward(b, model, infos, input, weights, { upTo: from, switches: true, dropout: 'identity' });
  const act = trace.outputs[from];
  const shape = infos[from].outShape;
  let mask = b.input(SEED_MASK, ['N', ...shape]);
  const byAct = b.input(SEED_BY_ACTIVATION, [1]);
  const gain = b.op1('Add', [b.op1('Mul', [act, byAct]), b.op1('Sub', [b.floats([1], []), byAct])]);
  if (atMax) {
    const positions = shape.slice(1).reduce((a, d) => a * d, 1);
    const masked = b.op1('ReduceSum', [b.op1('Reshape', [b.op1('Mul', [act, mask]), b.int64s([0, shape[0], positions])]), b.int64s([1])], { keepdims: 0 });
    const first = b.op1('ArgMax', [masked], { axis: 1, keepdims: 1, select_last_index: 0 });
    const onehot = b.op1('OneHot', [first, b.int64s([positions], []), b.floats([0, 1])], { axis: -1 });
    mask = b.op1('Mul', [mask, b.op1('Reshape', [onehot, b.int64s([0, 1, ...shape.slice(1)])])]);
  }
  const seed = b.op1('Mul', [mask, gain]);
  const { input: projection } = emitBackward(b, model, infos, trace, from, seed, weights, { rule, lrn, weightGradients: false });
  if (!projection) throw new Error(`internal: no signal from layer ${from} reaches the input`);
  b.op1('Identity', [projection], {}, PROJECTION);
  b.output(PROJECTION, ['N', ...model.input]);
  b.output(act, ['N', ...infos[from].outShape]);
  return b.encode('convscope_projection');
}

export const LAYER_GRADIENT = 'layer_gradient';

/**
 * Forward to layer `from`, then backward from `seed_mask` (a plain derivative seed: no activation gain) down to the
 * output of layer `at` only: the gradient there, `at`'s activation and `from`'s (Grad-CAM's three ingredients).
 */
export function buildLayerGradientGraph(model: Model, infos: LayerInfo[], from: number, at: number, rule: BackwardRule, lrn: LrnBackward): Uint8Array {
  const b = new GraphBuilder();
  const input = b.input(INPUT, ['N', ...model.input]);
  const weights = initializerWeights(b, model);
  const trace = emitForward(b, model, infos, input, weights, { upTo: from, switches: true, dropout: 'identity' });
  const seed = b.input(SEED_MASK, ['N', ...infos[from].outShape]);
  const { atStop } = emitBackward(b, model, infos, trace, from, seed, weights, { rule, lrn, weightGradients: false }, at);
  if (!atStop) throw new Error(`layer ${model.layers[from].name} does not depend on layer ${model.layers[at].name}`);
  b.op1('Identity', [atStop], {}, LAYER_GRADIENT);
  b.output(LAYER_GRADIENT, ['N', ...infos[at].outShape]);
  b.output(trace.outputs[at], ['N', ...infos[at].outShape]);
  b.output(trace.outputs[from], ['N', ...infos[from].outShape]);
  return b.encode('convscope_layer_gradient');
}

export const LABELS = 'labels_onehot';
export const LOSS = 'loss';
export const LOGITS = 'logits';
export const INPUT_GRADIENT = 'input_gradient';
export const gradientName = (key: string) => `grad__${key}`;
/** The train step's updated value of a running statistic (batch norm in training). */
export const statisticName = (key: string) => `stat__${key}`;

/** Weights fed per call, for graphs whose weights change between calls (training). */
function inputWeights(b: GraphBuilder, model: Model): WeightSource {
  const added = new Set<string>();
  return (key) => {
    if (!added.has(key)) {
      const t = model.weights.get(key);
      if (!t) throw new Error(`weight '${key}' is missing`);
      b.input(key, t.shape);
      added.add(key);
    }
    return key;
  };
}

/** The layer whose output is the class scores: the last one, or the one below a final softmax. */
export function logitsLayer(model: Model): number {
  const last = model.layers.length - 1;
  return model.layers[last].type === 'softmax' ? last - 1 : last;
}

/**
 * One SGD step's worth of compute: forward with dropout masks, mean softmax cross-entropy, backward with the
 * gradient rule, and the gradient of every weight (and of the input, with `inputGradient`). Weights are inputs, so
 * one session serves the whole run.
 */
export function buildTrainStepGraph(model: Model, infos: LayerInfo[], inputGradient: boolean): Uint8Array {
  const b = new GraphBuilder();
  const input = b.input(INPUT, ['N', ...model.input]);
  const weights = inputWeights(b, model);
  const top = logitsLayer(model);
  const classes = infos[top].outShape[0];
  const trace = emitForward(b, model, infos, input, weights, { upTo: top, switches: true, dropout: 'mask', batchNorm: 'training', gemmSmallConvs: true });
  const logits = trace.outputs[top];
  const onehot = b.input(LABELS, ['N', classes]);
  const logp = b.op1('LogSoftmax', [logits], { axis: 1 });
  const perItem = b.op1('ReduceSum', [b.op1('Mul', [onehot, logp]), b.int64s([1])], { keepdims: 0 });
  b.op1('Neg', [b.op1('ReduceMean', [perItem], { keepdims: 0 })], {}, LOSS);
  const n = b.op1('Cast', [b.op1('Gather', [b.op1('Shape', [logits]), b.int64s([0], [])], { axis: 0 })], { to: 1 });
  const seed = b.op1('Div', [b.op1('Sub', [b.op1('Exp', [logp]), onehot]), n]);
  const backward = emitBackward(b, model, infos, trace, top, seed, weights, { rule: 'gradient', lrn: 'gradient', weightGradients: true, inputGradient, gemmSmallConvs: true });
  const { weightGrads } = backward;
  if (inputGradient) {
    b.op1('Identity', [backward.input!], {}, INPUT_GRADIENT);
    b.output(INPUT_GRADIENT, ['N', ...model.input]);
  }
  b.op1('Identity', [logits], {}, LOGITS);
  b.output(LOSS, []);
  b.output(LOGITS, ['N', classes]);
  for (const [key, g] of weightGrads) {
    b.op1('Identity', [g], {}, gradientName(key));
    b.output(gradientName(key), model.weights.get(key)!.shape);
  }
  for (const [key, t] of trace.saved.flatMap((s) => s.statistics ?? [])) {
    b.op1('Identity', [t], {}, statisticName(key));
    b.output(statisticName(key), model.weights.get(key)!.shape);
  }
  return b.encode('convscope_train_step');
}

/** Logits for a batch with weights fed as inputs (evaluation during training, without recompiling). */
export function buildEvalGraph(model: Model, infos: LayerInfo[]): Uint8Array {
  const b = new GraphBuilder();
  const input = b.input(INPUT, ['N', ...model.input]);
  const top = logitsLayer(model);
  const trace = emitForward(b, model, infos, input, inputWeights(b, model), { upTo: top, switches: false, dropout: 'identity' });
  b.op1('Identity', [trace.outputs[top]], {}, LOGITS);
  b.output(LOGITS, ['N', infos[top].outShape[0]]);
  return b.encode('convscope_eval');
}
