// The top-k scan graph: forward to the deepest requested layer and, per layer, each image's best positions of every
// feature map. onnxruntime-node runs a session on the JS thread, so a scan in JS could not overlap the forward pass;
// reducing in the graph also saves copying whole maps out (relu1 of zfnet-small is 128 KB per image, its top-1 is
// 128 bytes).
import type { Model } from '../model/layers.js';
import type { LayerInfo } from '../model/shapes.js';
import { GraphBuilder } from '../onnx/builder.js';
import { DataType } from '../onnx/proto.js';
import { emitForward } from './compile.js';
import { initializerWeights, INPUT } from './graphs.js';

export const topkValuesName = (layer: string) => `${layer}__topk_values`;
export const topkPositionsName = (layer: string) => `${layer}__topk_indices`;

/** A layer's output per image as [C, H, W]; a vector layer's [F] as F maps of one position. */
export const mapShape = (s: number[]): [number, number, number] => (s.length === 3 ? [s[0], s[1], s[2]] : [s[0], 1, 1]);

/**
 * `per[j]` best positions of every map of layer `layers[j]`: ONNX TopK along the flattened map, which breaks ties
 * towards the lower index (the row-major position), as the scan's ranking does.
 */
export function buildTopkGraph(model: Model, infos: LayerInfo[], layers: number[], per: number[]): Uint8Array {
  const b = new GraphBuilder();
  const input = b.input(INPUT, ['N', ...model.input]);
  const trace = emitForward(b, model, infos, input, initializerWeights(b, model), { upTo: Math.max(...layers), switches: false, dropout: 'identity' });
  layers.forEach((i, j) => {
    const [c, h, w] = mapShape(infos[i].outShape);
    const name = model.layers[i].name;
    const flat = b.op1('Reshape', [trace.outputs[i], b.int64s([-1, c, h * w])]);
    b.op('TopK', [flat, b.int64s([per[j]])], { axis: 2, largest: 1, sorted: 1 }, [topkValuesName(name), topkPositionsName(name)]);
    b.output(topkValuesName(name), ['N', c, per[j]]);
    b.output(topkPositionsName(name), ['N', c, per[j]], DataType.INT64);
  });
  return b.encode('convscope_topk');
}
