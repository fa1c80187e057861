// ONNX -> convscope layer stack, for `torch.onnx.export` of nn.Sequential-like CNNs, and for convscope's own export.
// The modules under onnx-import/ split the work: graph.ts, constants.ts and shape-eval.ts read the ONNX graph (who
// reads what, constant folding); node-layers.ts and lrn-pattern.ts decide what convscope layer nodes become;
// chain.ts walks the single data path, dag.ts a data path that branches and merges; metadata.ts restores what
// convscope's export recorded.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { decodeModel, type ModelProto } from '../onnx/proto.js';
import type { Tensor } from '../tensor.js';
import { validateModel, type Layer, type Model } from './layers.js';
import { inferShapes } from './shapes.js';
import { ChainImporter, type OnnxNames } from './onnx-import/chain.js';
import { GraphImporter, hasMerges } from './onnx-import/dag.js';
import { findDataInput, indexGraph, inputShape } from './onnx-import/graph.js';
import { classesFromMetadata, layersFromMetadata, ONNX_META, preprocessFromMetadata } from './onnx-import/metadata.js';

export { ONNX_META } from './onnx-import/metadata.js';

/** A model from the bytes of an ONNX file; `path` names the file in errors and gives the model its name. */
export function modelFromOnnx(buf: Uint8Array, path: string): Model {
  return importOnnx(buf, path).model;
}

export interface OnnxImport {
  model: Model;
  /** The layer each ONNX data tensor (aliases through Identity included) and each layer-making node stands for. */
  tensors?: ReadonlyMap<string, string>;
}

/** As modelFromOnnx, with where the file's tensors went. */
export function importOnnx(buf: Uint8Array, path: string): OnnxImport {
  try {
    return importModel(decodeOnnx(buf), path);
  } catch (e) {
    const msg = (e as Error).message.replace(/\s*\n\s*/g, ' ');
    throw new Error(msg.startsWith(`${path}: `) ? msg : `${path}: ${msg}`);
  }
}

export function readOnnxModel(path: string): Model {
  return modelFromOnnx(readFileSync(path), path);
}

function decodeOnnx(buf: Uint8Array): ModelProto {
  let proto: ModelProto;
  try {
    proto = decodeModel(buf);
  } catch (e) {
    throw new Error(`not a readable ONNX file (${(e as Error).message})`);
  }
  if (proto.graph.nodes.length === 0) throw new Error('not an ONNX model: its graph has no nodes');
  return proto;
}

function importModel(proto: ModelProto, path: string): OnnxImport {
  const meta = new Map((proto.metadataProps ?? []).map((e) => [e.key, e.value]));
  const ix = indexGraph(proto.graph);
  const input = inputShape(findDataInput(proto.graph, ix));
  const archJson = meta.get(ONNX_META.architecture);
  const { layers, weights, tensors, sources }: { layers: Layer[]; weights: Map<string, Tensor> } & Partial<OnnxNames> = archJson
    ? layersFromMetadata(archJson, ix)
    : hasMerges(ix, input.name)
      ? new GraphImporter(ix, proto.opsetVersion, input).run()
      : new ChainImporter(ix, proto.opsetVersion, input).run();
  const model: Model = {
    name: basename(path).replace(/\.onnx$/i, ''),
    input: [input.chw[0], input.chw[1], input.chw[2]],
    layers,
    weights,
    preprocess: preprocessFromMetadata(meta, input.chw),
    ...classesFromMetadata(meta),
    ...(tensors ? { onnxNames: tensors } : {}),
    ...(sources ? { onnxSources: sources } : {}),
  };
  validateModel(model);
  inferShapes(model);
  return { model, tensors };
}
