import { existsSync, readFileSync, statSync } from 'node:fs';
import { extname } from 'node:path';
import { validateModel, validatePreprocess, type Model } from './layers.js';
import { modelFromOnnx } from './onnx-import.js';
import { modelFromSafetensors } from './safetensors.js';
import { createZooModel, isZooName, ZOO_NAMES, type ZooOptions } from './zoo.js';

/** A model from a zoo name, a .safetensors file (convscope's format) or an .onnx file (a PyTorch export). */
export function loadModel(spec: string, zooOptions: ZooOptions = {}): Model {
  let model: Model;
  if (isZooName(spec)) model = createZooModel(spec, zooOptions);
  else {
    if (!existsSync(spec)) {
      throw new Error(`model '${spec}' is neither a zoo model (${ZOO_NAMES.join(', ')}) nor an existing file`);
    }
    if (statSync(spec).isDirectory()) throw new Error(`model ${spec} is a folder, not a .onnx or .safetensors file`);
    const buf = readFileSync(spec);
    const ext = extname(spec).toLowerCase();
    if (ext === '.onnx') model = modelFromOnnx(buf, spec);
    else if (ext === '.safetensors') model = modelFromSafetensors(buf, spec);
    else throw new Error(`model file ${spec}: expected a .onnx or .safetensors file`);
  }
  validateModel(model);
  return model;
}

/** The model's preprocessing with a per-channel mean (replacing any mean image) and std given instead, validated. */
export function withPreprocess(model: Model, given: { mean?: number[]; std?: number[] }): Model {
  const channels = model.input[0];
  for (const key of ['mean', 'std'] as const) {
    const v = given[key];
    if (!v) continue;
    if (v.length !== channels) throw new Error(`--${key} needs ${channels} values for this ${channels}-channel model, got ${v.length}`);
    model.preprocess[key] = v;
    if (key === 'mean') delete model.preprocess.meanImage;
    delete model.preprocess.assumed;
  }
  validatePreprocess(model.preprocess, channels);
  return model;
}
