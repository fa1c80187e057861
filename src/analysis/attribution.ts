// Every class attribution convscope offers, behind one call: the paper's projections of a class score (saliency,
// deconvnet, guided backpropagation), Grad-CAM and Guided Grad-CAM, Integrated Gradients, SmoothGrad and occlusion.
import type { Engine } from '../engine/engine.js';
import { tensor, type Tensor } from '../tensor.js';
import { gaussianBlur } from './resample.js';
import type { OnProgress } from '../util/progress.js';
import { argmaxRows, checkTarget, classLayer, classMask, classScores } from './class-target.js';
import { gradCam, guidedGradCam } from './gradcam.js';
import { IG_DEFAULTS, integratedGradients, type IntegrationRule } from './integrated-gradients.js';
import { occlusionMaps, type Fill } from './occlusion.js';
import { smoothGrad } from './smoothgrad.js';

export const ATTRIBUTION_METHODS = ['saliency', 'deconvnet', 'guided-backprop', 'gradcam', 'guided-gradcam', 'ig', 'smoothgrad', 'smoothgrad-sq', 'occlusion'] as const;
export type AttributionMethod = (typeof ATTRIBUTION_METHODS)[number];

/** What each method's values mean for a per-pixel score: a signed amount of evidence, or a magnitude (sign is noise). */
export const METHOD_INFO: Record<AttributionMethod, { title: string; signed: boolean }> = {
  saliency: { title: 'Saliency', signed: false },
  deconvnet: { title: 'Deconvnet', signed: false },
  'guided-backprop': { title: 'Guided backpropagation', signed: false },
  gradcam: { title: 'Grad-CAM', signed: false },
  'guided-gradcam': { title: 'Guided Grad-CAM', signed: false },
  ig: { title: 'Integrated Gradients', signed: true },
  smoothgrad: { title: 'SmoothGrad', signed: false },
  'smoothgrad-sq': { title: 'SmoothGrad-Squared', signed: false },
  occlusion: { title: 'Occlusion', signed: true },
};

export type Baseline = 'zero' | 'blur' | Tensor;

export interface AttributionOptions {
  /** Class to explain; default the predicted class. */
  target?: number;
  /** Grad-CAM's layer; default the deepest rectified feature map. */
  layer?: string;
  /** Integrated Gradients: path points (default 50), rule (default gausslegendre), baseline (default zero). */
  steps?: number;
  integration?: IntegrationRule;
  baseline?: Baseline;
  /** SmoothGrad: noisy copies (default 16), noise as a fraction of the input range (0.15), seed (0), or the noise. */
  samples?: number;
  noise?: number;
  seed?: number;
  noiseTensor?: Tensor;
  /** Occlusion: square side and step (defaults as `occlusionMaps`), fill. */
  window?: number;
  stride?: number;
  fill?: Fill;
  /** Images per engine call for the batched methods. */
  batch?: number;
  onProgress?: OnProgress;
}

export interface Attribution {
  method: AttributionMethod;
  target: number;
  predicted: number;
  /** [1, C, H, W] for pixel-space methods, [1, 1, H, W] for Grad-CAM (upsampled). */
  attribution: Tensor;
  /** One score per input pixel, H x W row-major: channels summed (signed methods) or their magnitudes summed. */
  pixels: Float32Array;
  /** Grad-CAM and Guided Grad-CAM: the layer and its map at the layer's resolution. */
  gradcam?: { layer: string; map: Tensor };
  /** Integrated Gradients: the convergence delta and the rule used. */
  ig?: { delta: number; steps: number; integration: IntegrationRule; baseline: string };
  smoothgrad?: { samples: number; sigma?: number };
  seconds: number;
}

/** The blurred baseline: the image under a Gaussian of sigma = 1/16 of its larger side (14 px at 224). */
export function blurredBaseline(input: Tensor): Tensor {
  return gaussianBlur(input, Math.max(input.shape[2], input.shape[3]) / 16);
}

/** Sum over channels of each pixel's values (signed) or of their magnitudes. */
export function pixelScores(attribution: Tensor, signed: boolean): Float32Array {
  const [, c, h, w] = attribution.shape;
  const out = new Float32Array(h * w);
  for (let ch = 0; ch < c; ch++) {
    for (let k = 0; k < h * w; k++) {
      const v = attribution.data[ch * h * w + k];
      out[k] += signed ? v : Math.abs(v);
    }
  }
  return out;
}

function absolute(t: Tensor): Tensor {
  return { shape: [...t.shape], data: t.data.map(Math.abs) };
}

/** One method's attribution of one image [1, C, H, W]. */
export async function attribute(engine: Engine, input: Tensor, method: AttributionMethod, options: AttributionOptions = {}): Promise<Attribution> {
  if (!ATTRIBUTION_METHODS.includes(method)) throw new Error(`unknown attribution method '${method}'; use ${ATTRIBUTION_METHODS.join(', ')}`);
  if (input.shape.length !== 4 || input.shape[0] !== 1) throw new Error(`attribute takes one image [1, C, H, W], got [${input.shape}]`);
  const started = performance.now();
  const [predicted] = argmaxRows(await classScores(engine, input));
  const target = options.target ?? predicted;
  checkTarget(engine, target);
  const done = (attribution: Tensor, extra: Partial<Attribution> = {}): Attribution => ({
    method,
    target,
    predicted,
    attribution,
    pixels: pixelScores(attribution, METHOD_INFO[method].signed),
    ...extra,
    seconds: (performance.now() - started) / 1000,
  });
  const classSeed = { layer: classLayer(engine), mask: classMask(engine, [target]), value: 'one' as const };
  switch (method) {
    case 'saliency':
    case 'deconvnet':
    case 'guided-backprop': {
      const rule = method === 'saliency' ? 'gradient' : method === 'deconvnet' ? 'deconvnet' : 'guided';
      const { projection } = await engine.backward(input, classSeed, { rule, lrn: 'gradient' });
      // Captum's Saliency returns |gradient| by default.
      return done(method === 'saliency' ? absolute(projection) : projection);
    }
    case 'gradcam': {
      const cam = await gradCam(engine, input, [target], options.layer);
      return done(cam.upsampled, { gradcam: { layer: cam.layer, map: cam.map } });
    }
    case 'guided-gradcam': {
      const { attribution, cam } = await guidedGradCam(engine, input, [target], options.layer);
      return done(attribution, { gradcam: { layer: cam.layer, map: cam.map } });
    }
    case 'ig': {
      const b = options.baseline ?? 'zero';
      const baseline = b === 'zero' ? tensor([...input.shape]) : b === 'blur' ? blurredBaseline(input) : b;
      const steps = options.steps ?? IG_DEFAULTS.steps;
      const integration = options.integration ?? IG_DEFAULTS.integration;
      const r = await integratedGradients(engine, input, target, { steps, integration, baseline, batch: options.batch, onProgress: options.onProgress });
      return done(r.attribution, { ig: { delta: r.delta, steps, integration, baseline: typeof b === 'string' ? b : 'given' } });
    }
    case 'smoothgrad':
    case 'smoothgrad-sq': {
      const r = await smoothGrad(engine, input, target, {
        samples: options.samples, noise: options.noise, seed: options.seed, noiseTensor: options.noiseTensor,
        squared: method === 'smoothgrad-sq', batch: options.batch, onProgress: options.onProgress,
      });
      return done(r.attribution, { smoothgrad: { samples: r.samples, sigma: r.sigma } });
    }
    case 'occlusion': {
      const r = await occlusionMaps(engine, input, { mode: 'attribution', target, window: options.window, stride: options.stride, fill: options.fill, onProgress: options.onProgress });
      return done(r.attribution);
    }
  }
}

/** Several methods on one image, sharing the engine's compiled graphs. */
export async function attributeAll(engine: Engine, input: Tensor, methods: readonly AttributionMethod[], options: AttributionOptions = {}): Promise<Attribution[]> {
  const out: Attribution[] = [];
  for (const m of methods) out.push(await attribute(engine, input, m, options));
  return out;
}

