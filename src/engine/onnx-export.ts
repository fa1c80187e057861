// convscope model -> a clean ONNX inference graph that other runtimes can load, named the way torch.onnx.export
// names things (`conv1.weight`, node `/conv1/Conv`), so that convscope's own importer reads it back even without the
// metadata; the metadata (layer list, preprocess, classes) makes that round trip exact.
import { GraphBuilder } from '../onnx/builder.js';
import { decodeModel, encodeModel, type GraphProto } from '../onnx/proto.js';
import { writeFileAtomic } from '../util/fs.js';
import { layersToJson, validateModel, type Layer, type Model } from '../model/layers.js';
import { inferShapes } from '../model/shapes.js';
import { ONNX_META } from '../model/onnx-import.js';
import { activationName, emitForward } from './compile.js';
import { initializerWeights } from './graphs.js';

export const ONNX_INPUT = 'input';

/** The graph output's name: `logits` when the model ends in a classifier layer, else `output`. */
export function onnxOutputName(model: Model): string {
  return model.layers.at(-1)?.type === 'linear' ? 'logits' : 'output';
}

export function modelToOnnx(model: Model): Uint8Array {
  validateModel(model);
  if (model.layers.length === 0) throw new Error(`model ${model.name} has no layers to export`);
  const infos = inferShapes(model);
  const b = new GraphBuilder();
  const input = b.input(ONNX_INPUT, ['N', ...model.input]);
  const weights = initializerWeights(b, model);
  const last = model.layers.length - 1;
  const x = emitForward(b, model, infos, input, weights, { upTo: last, switches: false, dropout: 'identity', portable: true }).outputs[last];
  b.output(x, ['N', ...infos[last].outShape]);
  const proto = decodeModel(b.encode(model.name));
  nameLikeTorch(proto.graph, model.layers, x, onnxOutputName(model));
  proto.metadataProps = metadataOf(model);
  return encodeModel(proto);
}

export function writeOnnxModel(path: string, model: Model): void {
  writeFileAtomic(path, modelToOnnx(model));
}

/** Nodes become `/<layer>/<Op>` (then `<Op>_1`, ...) and the last layer's output takes the public output name. */
function nameLikeTorch(g: GraphProto, layers: Layer[], last: string, outputName: string): void {
  let j = 0;
  let counts = new Map<string, number>();
  for (const n of g.nodes) {
    const layer = layers[Math.min(j, layers.length - 1)].name;
    const k = counts.get(n.opType) ?? 0;
    counts.set(n.opType, k + 1);
    n.name = `/${layer}/${n.opType}${k === 0 ? '' : `_${k}`}`;
    n.outputs = n.outputs.map((o) => (o === last ? outputName : o));
    if (n.outputs.includes(activationName(layer)) || n.outputs.includes(outputName)) {
      j++;
      counts = new Map();
    }
  }
  for (const o of g.outputs) if (o.name === last) o.name = outputName;
}

function metadataOf(model: Model): { key: string; value: string }[] {
  const { mean, std, meanImage } = model.preprocess;
  const entries: { key: string; value: string }[] = [
    { key: ONNX_META.architecture, value: JSON.stringify(layersToJson(model.layers)) },
    { key: ONNX_META.input, value: JSON.stringify({ shape: model.input, normalization: '(u8 - mean) / std', mean, std }) },
  ];
  if (model.classes) entries.push({ key: ONNX_META.classes, value: JSON.stringify(model.classes) });
  if (meanImage) {
    // Base64 of the float32 bytes: exact, and a third the size of a JSON number list.
    const f32 = Buffer.from(meanImage.data.buffer, meanImage.data.byteOffset, meanImage.data.byteLength).toString('base64');
    entries.push({ key: ONNX_META.meanImage, value: JSON.stringify({ shape: meanImage.shape, f32 }) });
  }
  return entries;
}
