// convscope's library API: everything the CLI does, in a few lines of TypeScript.
export { Engine, type BackwardSettings, type EngineOptions, type ForwardResult, type Seed, type Switches, type TrainStepResult } from './engine/engine.js';
export { BACKWARD_RULES, LRN_MODES, type BackwardRule, type LrnBackward } from './engine/compile.js';
export { findLayer, layerFromJson, layerToJson, validateModel, type Layer, type Model, type Preprocess } from './model/layers.js';
export { inferShapes, unitField, type LayerInfo, type ReceptiveField } from './model/shapes.js';
export { createZooModel, initWeights, ZOO_NAMES, type InitScheme } from './model/zoo.js';
export { loadModel } from './model/load.js';
export { readSafetensorsModel, writeSafetensorsModel } from './model/safetensors.js';
export { readOnnxModel, modelFromOnnx } from './model/onnx-import.js';
export { modelToOnnx, writeOnnxModel } from './model/onnx-export.js';
export { modelTable } from './model/summary.js';
export { decodeImage, fitImage, imageToInput, inputToImage, loadInput, type RgbImage } from './data/image.js';
export { testPattern } from './data/pattern.js';
export { maxUnit, projectClass, projectUnit, projectUnits, unitMask, ZF_SETTINGS, type Projection, type ProjectionSettings, type Unit } from './analysis/project.js';
export { projectionToImage, sideBySide, grid, hstack, vstack, upscale, label, encodePng, writePng } from './render/figure.js';
export { linePlot, type PlotSpec, type Series } from './render/plot.js';
export { readNpy, writeNpy, decodeNpy, encodeNpy, type Tensor } from './tensor.js';
