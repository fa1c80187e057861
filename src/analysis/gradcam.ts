// Grad-CAM (Selvaraju et al. 2017) and Guided Grad-CAM, as Captum 0.7 defines them (LayerGradCam with
// relu_attributions=True; GuidedGradCam = GuidedBackprop x the map upsampled by nearest neighbour).
import type { Engine } from '../engine/engine.js';
import { Landmarks } from '../model/landmarks.js';
import { findLayer } from '../model/layers.js';
import { tensor, type Tensor } from '../tensor.js';
import { resizeBilinear, resizeNearest } from './resample.js';
import { classLayer, classMask } from './class-target.js';

export interface GradCam {
  layer: string;
  targets: number[];
  /** relu(sum_c mean_hw(d score / d A_c) * A_c) at the layer's resolution, [N, 1, h, w]. */
  map: Tensor;
  /** The map upsampled bilinearly (align_corners=False) to the input, [N, 1, H, W]. */
  upsampled: Tensor;
}

/** The layer Grad-CAM looks at when none is named: the model's deepest rectified feature map. */
export function defaultGradCamLayer(engine: Engine): string {
  return new Landmarks(engine.model, engine.infos).lastFeatureMap();
}

function checkCamLayer(engine: Engine, layer: string): void {
  const shape = engine.info(layer).outShape;
  if (shape.length !== 3) throw new Error(`Grad-CAM needs a layer with spatial maps; ${layer} outputs [${shape}]`);
  if (findLayer(engine.model, layer).index >= findLayer(engine.model, classLayer(engine)).index) {
    throw new Error(`Grad-CAM layer ${layer} must come before the class scores (${classLayer(engine)})`);
  }
}

/** Grad-CAM of each image of `input` for its target class, in one engine call. */
export async function gradCam(engine: Engine, input: Tensor, targets: readonly number[], layer = defaultGradCamLayer(engine)): Promise<GradCam> {
  checkCamLayer(engine, layer);
  const { gradient, activation } = await engine.layerGradient(input, { layer: classLayer(engine), mask: classMask(engine, targets) }, layer, {
    rule: 'gradient',
    lrn: 'gradient',
  });
  const [n, c, h, w] = activation.shape;
  const map = tensor([n, 1, h, w]);
  for (let i = 0; i < n; i++) {
    for (let ch = 0; ch < c; ch++) {
      const base = (i * c + ch) * h * w;
      let weight = 0;
      for (let k = 0; k < h * w; k++) weight += gradient.data[base + k];
      weight /= h * w;
      for (let k = 0; k < h * w; k++) map.data[i * h * w + k] += weight * activation.data[base + k];
    }
  }
  for (let k = 0; k < map.data.length; k++) map.data[k] = Math.max(0, map.data[k]);
  const [, , height, width] = input.shape;
  return { layer, targets: [...targets], map, upsampled: resizeBilinear(map, height, width) };
}

/** Guided Grad-CAM: guided backpropagation of each target score times its Grad-CAM map (nearest upsampling), per channel. */
export async function guidedGradCam(engine: Engine, input: Tensor, targets: readonly number[], layer = defaultGradCamLayer(engine)): Promise<{ attribution: Tensor; cam: GradCam }> {
  const cam = await gradCam(engine, input, targets, layer);
  const { projection } = await engine.backward(input, { layer: classLayer(engine), mask: classMask(engine, targets), value: 'one' }, { rule: 'guided', lrn: 'gradient' });
  const [n, c, height, width] = input.shape;
  const near = resizeNearest(cam.map, height, width);
  const attribution = tensor([...projection.shape]);
  const plane = height * width;
  for (let i = 0; i < n; i++) {
    for (let ch = 0; ch < c; ch++) {
      for (let k = 0; k < plane; k++) attribution.data[(i * c + ch) * plane + k] = projection.data[(i * c + ch) * plane + k] * near.data[i * plane + k];
    }
  }
  return { attribution, cam };
}
