// SmoothGrad and SmoothGrad-Squared (Smilkov et al. 2017): the mean gradient of the target score (or its square)
// over copies of the image with Gaussian noise added, the copies batched through the engine.
import type { Engine } from '../engine/engine.js';
import { sizeOf, tensor, type Tensor } from '../tensor.js';
import type { OnProgress } from '../util/progress.js';
import { Rng } from '../util/random.js';
import { checkTarget, classLayer, classMask } from './class-target.js';

export const SMOOTHGRAD_DEFAULTS = { samples: 16, noise: 0.15, seed: 0, batch: 16 };

export interface SmoothGradOptions {
  /** Noisy copies; default 16. */
  samples?: number;
  /** Noise standard deviation as a fraction of the input's range (max - min); default 0.15, the paper's 10-20 %. */
  noise?: number;
  /** Seed of the noise; default 0. */
  seed?: number;
  /** The noise itself, [samples, C, H, W] (overrides samples, noise and seed), e.g. to match another tool's draw. */
  noiseTensor?: Tensor;
  /** Mean of squared gradients (SmoothGrad-Squared) instead of the mean gradient. */
  squared?: boolean;
  /** Noisy copies per engine call; default 16. */
  batch?: number;
  onProgress?: OnProgress;
}

export interface SmoothGrad {
  attribution: Tensor;
  target: number;
  samples: number;
  /** The noise standard deviation used, in input units (undefined when the noise was given). */
  sigma?: number;
}

/** The seeded noise SmoothGrad adds: N(0, (noise * (max - min))^2) per value, [samples, C, H, W]. */
export function smoothGradNoise(input: Tensor, samples: number, noise: number, seed: number): { noise: Tensor; sigma: number } {
  if (!(Number.isInteger(samples) && samples >= 1)) throw new Error(`samples must be an integer >= 1, got ${samples}`);
  if (!(Number.isFinite(noise) && noise >= 0)) throw new Error(`noise must be a finite fraction >= 0, got ${noise}`);
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of input.data) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  const sigma = noise * (hi - lo);
  const rng = new Rng(seed);
  const t = tensor([samples, ...input.shape.slice(1)]);
  rng.fillNormal(t.data, sigma);
  return { noise: t, sigma };
}

/** SmoothGrad of one image [1, C, H, W] for one target class. */
export async function smoothGrad(engine: Engine, input: Tensor, target: number, options: SmoothGradOptions = {}): Promise<SmoothGrad> {
  if (input.shape[0] !== 1) throw new Error('smoothGrad takes one image');
  checkTarget(engine, target);
  const drawn = options.noiseTensor ? undefined : smoothGradNoise(input, options.samples ?? SMOOTHGRAD_DEFAULTS.samples, options.noise ?? SMOOTHGRAD_DEFAULTS.noise, options.seed ?? SMOOTHGRAD_DEFAULTS.seed);
  const noise = options.noiseTensor ?? drawn!.noise;
  if (noise.shape.length !== 4 || noise.shape.slice(1).join(',') !== input.shape.slice(1).join(',')) {
    throw new Error(`noise has shape [${noise.shape}], expected [samples, ${input.shape.slice(1)}]`);
  }
  const batch = options.batch ?? SMOOTHGRAD_DEFAULTS.batch;
  if (!(Number.isInteger(batch) && batch >= 1)) throw new Error(`batch must be an integer >= 1, got ${batch}`);
  const samples = noise.shape[0];
  const per = sizeOf(input.shape);
  const total = new Float64Array(per);
  const layer = classLayer(engine);
  for (let start = 0; start < samples; start += batch) {
    const count = Math.min(batch, samples - start);
    const noisy = tensor([count, ...input.shape.slice(1)]);
    for (let i = 0; i < count; i++) {
      for (let k = 0; k < per; k++) noisy.data[i * per + k] = input.data[k] + noise.data[(start + i) * per + k];
    }
    const { projection } = await engine.backward(noisy, { layer, mask: classMask(engine, Array(count).fill(target)), value: 'one' }, { rule: 'gradient', lrn: 'gradient' });
    for (let i = 0; i < count; i++) {
      for (let k = 0; k < per; k++) {
        const g = projection.data[i * per + k];
        total[k] += options.squared ? g * g : g;
      }
    }
    options.onProgress?.(start + count, samples);
  }
  const attribution = tensor([...input.shape]);
  for (let k = 0; k < per; k++) attribution.data[k] = total[k] / samples;
  return { attribution, target, samples, sigma: drawn?.sigma };
}
