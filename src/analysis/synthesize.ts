// Activation maximisation: synthetic images that drive a unit or a whole feature map (the DeepVis toolbox's
// "synthetic images", Yosinski et al. 2015), by gradient ascent on the input from a seeded start, with their
// regularisers (L2 decay, Gaussian blur every few steps, jitter, clipping of small-norm and small-contribution
// pixels), or in a decorrelated Fourier parameterisation (Olah et al. 2017). The features of a layer go through the
// engine together, one image per feature in a batch.
//
// The image is optimised in pixel units centred on the model's mean (x = pixel - mean, 0 = the mean colour), so the
// step size, decay and clipping mean the same on any model; the network sees x / std.
import { inputFrame } from '../data/image.js';
import type { Engine } from '../engine/engine.js';
import { findLayer } from '../model/layers.js';
import { tensor, type Tensor } from '../tensor.js';
import type { OnProgress } from '../util/progress.js';
import { Rng } from '../util/random.js';
import { gaussianBlur } from './resample.js';
import { Fft, fft2 } from '../util/fft.js';

export type Parameterization = 'pixel' | 'fourier';

export const SYNTHESIS_DEFAULTS = { steps: 200, pixelLr: 6, fourierLr: 0.05, decay: 0.002, blurSigma: 0.5, blurEvery: 4, batch: 32 };

export interface SynthesisOptions {
  /** Maximise the map's mean ('map', default) or its centre unit ('unit'); vector layers have one unit per feature. */
  objective?: 'map' | 'unit';
  /** Ascent steps; default 200. */
  steps?: number;
  /** Step length: the update's root-mean-square in pixel units (pixel mode, default 6) or in spectrum units, where
   * one moves the pre-tanh image by about one (Fourier, default 0.05). */
  lr?: number;
  /** Pixel mode: L2 decay, x <- (1 - decay) x after each step; default 0.002. */
  decay?: number;
  /** Pixel mode: blur with this sigma (pixels) every `blurEvery` steps; defaults 0.5 and 4 (0 turns it off). */
  blurSigma?: number;
  blurEvery?: number;
  /** Random shift of up to this many pixels per step, undone on the gradient; default 1/32 of the larger side. */
  jitter?: number;
  /** Pixel mode: zero the pixels whose norm over channels is below this percentile (0..100); default 0 (off). */
  normPercentile?: number;
  /** Pixel mode: zero the pixels whose contribution |x . gradient| is below this percentile; default 0 (off). */
  contributionPercentile?: number;
  parameterization?: Parameterization;
  seed?: number;
  /** Feature images per engine call; default 32. */
  batch?: number;
  onProgress?: OnProgress;
}

export interface Synthesis {
  layer: string;
  features: number[];
  objective: 'map' | 'unit';
  /** [F, C, H, W] network inputs, one per feature. */
  images: Tensor;
  /** Per feature, the objective at each step (before the step's update). */
  history: Float64Array[];
  /** Per feature, the objective on the final image (no jitter). */
  final: number[];
}

/** Olah et al.'s colour decorrelation (lucid's ImageNet colour_correlation_svd_sqrt, normalised by its largest column norm). */
const COLOUR = (() => {
  const m = [
    [0.26, 0.09, 0.02],
    [0.27, 0.0, -0.05],
    [0.27, -0.09, 0.03],
  ];
  const norm = Math.max(...[0, 1, 2].map((j) => Math.hypot(m[0][j], m[1][j], m[2][j])));
  return m.map((row) => row.map((v) => v / norm));
})();

/** Percentile (0..100) of a list of values, by nearest rank. */
function percentile(values: Float32Array, p: number): number {
  const sorted = Float32Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.floor((p / 100) * sorted.length)))];
}

/** Shifts every plane of one [C, H, W] item by (dy, dx), wrapping around. */
function roll(src: Float32Array, out: Float32Array, c: number, h: number, w: number, dy: number, dx: number): void {
  for (let ch = 0; ch < c; ch++) {
    for (let y = 0; y < h; y++) {
      const sy = (((y - dy) % h) + h) % h;
      for (let x = 0; x < w; x++) out[(ch * h + y) * w + x] = src[(ch * h + sy) * w + ((((x - dx) % w) + w) % w)];
    }
  }
}

/**
 * The Fourier parameterisation of one item: per decorrelated channel a complex spectrum, scaled by 1 / frequency so
 * that every frequency starts equally easy to move; pixels = half-range * tanh(colour(Re IDFT(spectrum * scale))).
 */
class FourierImage {
  readonly re: Float64Array[];
  readonly im: Float64Array[];
  private readonly scale: Float64Array;
  private readonly rows: Fft;
  private readonly cols: Fft;
  private raw: Float64Array[] = [];

  constructor(
    readonly c: number,
    readonly h: number,
    readonly w: number,
    private readonly half: Float32Array,
    private readonly centre: Float32Array,
    rng: Rng,
  ) {
    this.rows = new Fft(w);
    this.cols = new Fft(h);
    this.scale = new Float64Array(h * w);
    for (let ky = 0; ky < h; ky++) {
      for (let kx = 0; kx < w; kx++) {
        const f = Math.hypot(Math.min(ky, h - ky) / h, Math.min(kx, w - kx) / w);
        this.scale[ky * w + kx] = 1 / Math.max(f, 1 / Math.max(h, w));
      }
    }
    // Unit root-mean-square, and the transform orthonormal (1 / sqrt(HW)): a spectrum step of rms lr moves the raw
    // pixels (tanh units) by about lr.
    let ss = 0;
    for (const v of this.scale) ss += v * v;
    const norm = 1 / Math.sqrt(ss / (h * w)) / Math.sqrt(h * w);
    for (let k = 0; k < h * w; k++) this.scale[k] *= norm;
    this.re = Array.from({ length: c }, () => Float64Array.from({ length: h * w }, () => 0.01 * rng.normal()));
    this.im = Array.from({ length: c }, () => Float64Array.from({ length: h * w }, () => 0.01 * rng.normal()));
  }

  /** Channel ch of the colour-mixed raw image at position k. */
  private mixed(ch: number, k: number): number {
    const r = this.raw;
    return this.c === 3 ? COLOUR[ch][0] * r[0][k] + COLOUR[ch][1] * r[1][k] + COLOUR[ch][2] * r[2][k] : r[ch][k];
  }

  /** Writes the item's centred pixels (x = pixel - mean) into `out`. */
  render(out: Float32Array): void {
    const { c, h, w } = this;
    const plane = h * w;
    this.raw = this.re.map((re, ch) => {
      const r = new Float64Array(plane);
      const i = new Float64Array(plane);
      for (let k = 0; k < plane; k++) {
        r[k] = re[k] * this.scale[k];
        i[k] = this.im[ch][k] * this.scale[k];
      }
      fft2(r, i, this.h, this.w, 1, this.rows, this.cols);
      return r;
    });
    for (let ch = 0; ch < c; ch++) {
      for (let k = 0; k < plane; k++) {
        const v = this.mixed(ch, k);
        const i = ch * plane + k;
        out[i] = this.centre[i] + this.half[i] * Math.tanh(v);
      }
    }
  }

  /** Ascent on the spectrum from the gradient with respect to the centred pixels rendered last. */
  step(grad: Float32Array, lr: number): void {
    const { c, h, w } = this;
    const plane = h * w;
    // Through tanh, then the colour mix (its transpose), then Re IDFT (its adjoint), then the frequency scale.
    const gRaw = Array.from({ length: c }, () => new Float64Array(plane));
    for (let ch = 0; ch < c; ch++) {
      for (let k = 0; k < plane; k++) {
        const t = Math.tanh(this.mixed(ch, k));
        const g = grad[ch * plane + k] * this.half[ch * plane + k] * (1 - t * t);
        for (let j = 0; j < c; j++) gRaw[j][k] += (c === 3 ? COLOUR[ch][j] : ch === j ? 1 : 0) * g;
      }
    }
    const gRe: Float64Array[] = [];
    const gIm: Float64Array[] = [];
    let total = 0;
    for (let ch = 0; ch < c; ch++) {
      const r = gRaw[ch];
      const i = new Float64Array(plane);
      fft2(r, i, this.h, this.w, 1, this.rows, this.cols);
      for (let k = 0; k < plane; k++) {
        r[k] *= this.scale[k];
        i[k] *= -this.scale[k];
        total += r[k] * r[k] + i[k] * i[k];
      }
      gRe.push(r);
      gIm.push(i);
    }
    const rms = Math.sqrt(total / (2 * c * plane)) + 1e-12;
    for (let ch = 0; ch < c; ch++) {
      for (let k = 0; k < plane; k++) {
        this.re[ch][k] += (lr * gRe[ch][k]) / rms;
        this.im[ch][k] += (lr * gIm[ch][k]) / rms;
      }
    }
  }
}

/** Synthetic images for the given features of one layer (feature maps of a map layer, units of a vector layer). */
export async function synthesize(engine: Engine, layer: string, features: readonly number[], options: SynthesisOptions = {}): Promise<Synthesis> {
  // A ReLU's zero output passes no gradient, and a start that silences a map would stay silent: the ascent follows the
  // map before the ReLU (DeepVis does the same), while the objective reported is the layer's own.
  const { layer: named } = findLayer(engine.model, layer);
  const info = engine.info(layer);
  const ascend = named.type === 'relu' && info.inputs.length === 1 && info.inputs[0] >= 0 ? engine.model.layers[info.inputs[0]].name : layer;
  const shape = info.outShape;
  const [maps, mh, mw] = shape.length === 3 ? shape : [shape[0], 1, 1];
  for (const f of features) if (!(Number.isInteger(f) && f >= 0 && f < maps)) throw new Error(`feature ${f} is out of range for layer ${layer}, which has ${maps} (0..${maps - 1})`);
  if (features.length === 0) throw new Error('synthesize needs at least one feature');
  const objective = options.objective ?? 'map';
  const steps = options.steps ?? SYNTHESIS_DEFAULTS.steps;
  const mode = options.parameterization ?? 'pixel';
  const lr = options.lr ?? (mode === 'fourier' ? SYNTHESIS_DEFAULTS.fourierLr : SYNTHESIS_DEFAULTS.pixelLr);
  const decay = options.decay ?? SYNTHESIS_DEFAULTS.decay;
  const blurSigma = options.blurSigma ?? SYNTHESIS_DEFAULTS.blurSigma;
  const blurEvery = options.blurEvery ?? SYNTHESIS_DEFAULTS.blurEvery;
  const normPct = options.normPercentile ?? 0;
  const contribPct = options.contributionPercentile ?? 0;
  const batch = options.batch ?? SYNTHESIS_DEFAULTS.batch;
  for (const [name, v, lo, hi] of [['steps', steps, 1, Infinity], ['batch', batch, 1, Infinity], ['blurEvery', blurEvery, 1, Infinity]] as const) {
    if (!(Number.isInteger(v) && v >= lo && v <= hi)) throw new Error(`${name} must be an integer >= ${lo}, got ${v}`);
  }
  for (const [name, v, hi] of [['lr', lr, Infinity], ['decay', decay, 1], ['blurSigma', blurSigma, Infinity], ['normPercentile', normPct, 100], ['contributionPercentile', contribPct, 100]] as const) {
    if (!(Number.isFinite(v) && v >= 0 && v <= hi)) throw new Error(`${name} must be a number in [0, ${hi}], got ${v}`);
  }
  if (mode !== 'pixel' && mode !== 'fourier') throw new Error(`parameterization must be pixel or fourier, got '${String(mode)}'`);
  const [c, h, w] = engine.model.input as [number, number, number];
  const jitter = options.jitter ?? Math.max(1, Math.round(Math.max(h, w) / 32));
  if (!(Number.isInteger(jitter) && jitter >= 0)) throw new Error(`jitter must be an integer >= 0, got ${jitter}`);
  const per = c * h * w;
  const plane = h * w;
  const frame = inputFrame(engine.model.preprocess, [c, h, w]);
  // The valid pixels 0..255 in centred units: [-mean, 255 - mean].
  const lo = frame.mean.map((m) => -m);
  const hi = frame.mean.map((m) => 255 - m);
  const rng = new Rng(options.seed ?? 0);
  const images = tensor([features.length, c, h, w]);
  const history = features.map(() => new Float64Array(steps));
  const final: number[] = [];
  const unitsPer = maps * mh * mw;
  const objectiveOf = (activation: Tensor, item: number, f: number): number => {
    const base = item * unitsPer + f * mh * mw;
    const relu = ascend !== layer ? (v: number) => Math.max(0, v) : (v: number) => v;
    if (objective === 'unit') return relu(activation.data[base + Math.floor(mh / 2) * mw + Math.floor(mw / 2)]);
    let s = 0;
    for (let k = 0; k < mh * mw; k++) s += relu(activation.data[base + k]);
    return s / (mh * mw);
  };
  const toInput = (x: Float32Array, out: Float32Array, offset: number) => {
    for (let k = 0; k < per; k++) out[offset + k] = x[k] / frame.std[Math.floor(k / plane)];
  };

  for (let start = 0; start < features.length; start += batch) {
    const group = features.slice(start, start + batch);
    const n = group.length;
    const mask = tensor([n, ...shape]);
    group.forEach((f, i) => {
      const base = i * unitsPer + f * mh * mw;
      if (objective === 'unit') mask.data[base + Math.floor(mh / 2) * mw + Math.floor(mw / 2)] = 1;
      else mask.data.fill(1 / (mh * mw), base, base + mh * mw);
    });
    const xs = group.map(() => Float32Array.from({ length: per }, () => 8 * rng.normal()));
    const fourier = mode === 'fourier' ? group.map(() => new FourierImage(c, h, w, hi.map((v, k) => (v - lo[k]) / 2), hi.map((v, k) => (v + lo[k]) / 2), rng)) : undefined;
    const input = tensor([n, c, h, w]);
    const shifted = new Float32Array(per);
    const shifts: [number, number][] = group.map(() => [0, 0]);
    for (let t = 0; t <= steps; t++) {
      const last = t === steps;
      group.forEach((_, i) => {
        fourier?.[i].render(xs[i]);
        shifts[i] = last || jitter === 0 ? [0, 0] : [rng.int(2 * jitter + 1) - jitter, rng.int(2 * jitter + 1) - jitter];
        roll(xs[i], shifted, c, h, w, shifts[i][0], shifts[i][1]);
        toInput(shifted, input.data, i * per);
      });
      const { projection, activation } = await engine.backward(input, { layer: ascend, mask, value: 'one' }, { rule: 'gradient', lrn: 'gradient' });
      group.forEach((f, i) => {
        const value = objectiveOf(activation, i, f);
        if (last) final[start + i] = value;
        else history[start + i][t] = value;
      });
      if (last) break;
      group.forEach((_, i) => {
        // The gradient with respect to the centred pixels of the unshifted image.
        const g = new Float32Array(per);
        const gin = projection.data.subarray(i * per, (i + 1) * per);
        roll(gin, g, c, h, w, -shifts[i][0], -shifts[i][1]);
        for (let k = 0; k < per; k++) g[k] /= frame.std[Math.floor(k / plane)];
        if (fourier) {
          fourier[i].step(g, lr);
          return;
        }
        const x = xs[i];
        let total = 0;
        for (const v of g) total += v * v;
        const rms = Math.sqrt(total / per) + 1e-12;
        for (let k = 0; k < per; k++) x[k] = (1 - decay) * (x[k] + (lr * g[k]) / rms);
        if (blurSigma > 0 && (t + 1) % blurEvery === 0) x.set(gaussianBlur({ shape: [1, c, h, w], data: x }, blurSigma).data);
        if (normPct > 0 || contribPct > 0) {
          const norms = new Float32Array(plane);
          const contributions = new Float32Array(plane);
          for (let ch = 0; ch < c; ch++) {
            for (let k = 0; k < plane; k++) {
              norms[k] += x[ch * plane + k] ** 2;
              contributions[k] += x[ch * plane + k] * g[ch * plane + k];
            }
          }
          const normCut = normPct > 0 ? percentile(norms, normPct) : -Infinity;
          const contribCut = contribPct > 0 ? percentile(contributions.map(Math.abs), contribPct) : -Infinity;
          for (let k = 0; k < plane; k++) {
            if (norms[k] < normCut || Math.abs(contributions[k]) < contribCut) for (let ch = 0; ch < c; ch++) x[ch * plane + k] = 0;
          }
        }
        for (let k = 0; k < per; k++) x[k] = Math.min(hi[k], Math.max(lo[k], x[k]));
      });
      options.onProgress?.(start * steps + (t + 1) * n, features.length * steps);
    }
    group.forEach((_, i) => toInput(xs[i], images.data, (start + i) * per));
  }
  return { layer, features: [...features], objective, images, history, final };
}
