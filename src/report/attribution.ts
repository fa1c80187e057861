// The files of `convscope attribute`: each method's attribution (.npy, Grad-CAM also at the layer's resolution), its
// figure, one figure of all methods side by side, and attribution.json.
import type { Attribution } from '../analysis/attribution.js';
import { inputToImage } from '../data/image.js';
import type { Model } from '../model/layers.js';
import { attributionFigure } from '../render/attribution.js';
import { encodePng } from '../render/figure.js';
import { encodeNpy, type Tensor } from '../tensor.js';
import { compactJson } from '../util/json.js';
import type { OutputFiles } from './files.js';
import { classNamer } from './occlusion.js';

export async function attributionFiles(model: Model, input: Tensor, results: Attribution[]): Promise<{ files: OutputFiles; summary: string }> {
  const name = classNamer(model);
  const image = inputToImage(input, model.preprocess);
  const files: OutputFiles = new Map();
  for (const a of results) {
    if (a.method === 'gradcam') {
      files.set('gradcam.npy', encodeNpy(a.gradcam!.map));
      files.set('gradcam_upsampled.npy', encodeNpy(a.attribution));
    } else {
      files.set(`${a.method}.npy`, encodeNpy(a.attribution));
    }
    files.set(`${a.method}.png`, await encodePng(await attributionFigure(image, [a], model.name, name)));
  }
  if (results.length > 1) files.set('attributions.png', await encodePng(await attributionFigure(image, results, model.name, name)));
  const methods = results.map((a) => ({
    method: a.method,
    shape: a.attribution.shape,
    seconds: a.seconds,
    ...(a.gradcam ? { layer: a.gradcam.layer, layerShape: a.gradcam.map.shape } : {}),
    ...(a.ig ? { ig: a.ig } : {}),
    ...(a.smoothgrad ? { smoothgrad: a.smoothgrad } : {}),
  }));
  const { target, predicted } = results[0];
  files.set('attribution.json', compactJson({ model: model.name, target, targetName: name(target), predicted, predictedName: name(predicted), methods }));
  const ms = results.map((a) => `${a.method} ${(a.seconds * 1000).toFixed(0)} ms`).join(', ');
  return { files, summary: `target ${name(target)} (predicted ${name(predicted)}): ${ms}` };
}
