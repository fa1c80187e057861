// Architecture selection (paper Sec. 4.1, Fig. 6): what the first-layer filters look like, which feature maps are
// dead, how much of the filters' energy sits at high frequencies (aliasing from large strides), how sparse maps are.
import { batches } from '../data/batches.js';
import type { Dataset, Skipped } from '../data/dataset.js';
import type { Engine } from '../engine/engine.js';
import { Landmarks } from '../model/landmarks.js';
import type { Model } from '../model/layers.js';
import type { Tensor } from '../tensor.js';
import type { OnProgress } from '../util/progress.js';

/** A feature map counts as dead when it is active (some unit > 0) on fewer than this share of images. */
export const DEAD_THRESHOLD = 0.01;

/**
 * Share of a filter's spectral energy above half the Nyquist frequency (|f| > 0.25 cycles/pixel on either axis),
 * from the DFT of each input-channel kernel zero-padded to `n` x `n`, summed over input channels.
 */
export function highFrequencyShare(w: Tensor, n = 32): number[] {
  const [out, inC, kh, kw] = w.shape;
  const cos = Float64Array.from({ length: n }, (_, k) => Math.cos((2 * Math.PI * k) / n));
  const sin = Float64Array.from({ length: n }, (_, k) => Math.sin((2 * Math.PI * k) / n));
  const high = (k: number) => Math.min(k, n - k) / n > 0.25;
  const rowRe = new Float64Array(kh * n);
  const rowIm = new Float64Array(kh * n);
  const shares: number[] = [];
  for (let f = 0; f < out; f++) {
    let total = 0;
    let upper = 0;
    for (let c = 0; c < inC; c++) {
      const base = (f * inC + c) * kh * kw;
      // Separable DFT: rows first (x -> v), then columns (y -> u).
      for (let y = 0; y < kh; y++) {
        for (let v = 0; v < n; v++) {
          let re = 0;
          let im = 0;
          for (let x = 0; x < kw; x++) {
            const a = w.data[base + y * kw + x];
            re += a * cos[(v * x) % n];
            im -= a * sin[(v * x) % n];
          }
          rowRe[y * n + v] = re;
          rowIm[y * n + v] = im;
        }
      }
      for (let u = 0; u < n; u++) {
        for (let v = 0; v < n; v++) {
          let re = 0;
          let im = 0;
          for (let y = 0; y < kh; y++) {
            const c1 = cos[(u * y) % n];
            const s1 = sin[(u * y) % n];
            const r = rowRe[y * n + v];
            const i = rowIm[y * n + v];
            re += r * c1 + i * s1;
            im += i * c1 - r * s1;
          }
          const e = re * re + im * im;
          total += e;
          if (high(u) || high(v)) upper += e;
        }
      }
    }
    shares.push(total > 0 ? upper / total : 0);
  }
  return shares;
}

export interface LayerActivity {
  layer: string;
  features: number;
  /** Per feature: the share of images on which some unit of the map is > 0. */
  activeShare: number[];
  /** Feature maps active on fewer than DEAD_THRESHOLD of the images. */
  dead: number[];
  /** Share of zero units over all images, positions and features. */
  sparsity: number;
}

/** One pass over `dataset` recording, per feature map of each layer, how often it fires and how sparse it is. */
export async function layerActivity(engine: Engine, dataset: Dataset, layers: string[], options: { batchSize?: number; onProgress?: OnProgress; indices?: number[] } = {}): Promise<{ activity: LayerActivity[]; skipped: Skipped[]; images: number }> {
  const counts = new Map<string, { active: Float64Array; zeros: number; units: number }>();
  for (const l of layers) counts.set(l, { active: new Float64Array(engine.info(l).outShape[0]), zeros: 0, units: 0 });
  const stream = batches(dataset, { input: engine.model.input, preprocess: engine.model.preprocess, batchSize: options.batchSize ?? 64, indices: options.indices });
  const total = options.indices?.length ?? dataset.size;
  let images = 0;
  for await (const b of stream) {
    const { activations } = await engine.forward(b.input, layers);
    for (const l of layers) {
      const a = activations.get(l)!;
      const c = counts.get(l)!;
      const [n, f] = a.shape;
      const per = a.data.length / (n * f);
      for (let i = 0; i < n; i++) {
        for (let k = 0; k < f; k++) {
          const base = (i * f + k) * per;
          let any = false;
          for (let p = 0; p < per; p++) {
            if (a.data[base + p] > 0) any = true;
            else c.zeros++;
          }
          if (any) c.active[k]++;
        }
      }
      c.units += a.data.length;
    }
    images += b.labels.length;
    options.onProgress?.(images, total);
  }
  const activity = layers.map((layer) => {
    const c = counts.get(layer)!;
    const activeShare = Array.from(c.active, (v) => v / Math.max(images, 1));
    return {
      layer,
      features: activeShare.length,
      activeShare,
      dead: activeShare.flatMap((s, k) => (s < DEAD_THRESHOLD ? [k] : [])),
      sparsity: c.zeros / Math.max(c.units, 1),
    };
  });
  return { activity, skipped: stream.skipped, images };
}

export interface ConvLayerReport {
  conv: string;
  /** The rectified output the activity was measured on. */
  activation: string;
  kernel: string;
  stride: number;
  features: number;
  dead: number;
  sparsity: number;
  /** Mean over filters of the share of energy above half Nyquist. */
  highFrequency: number;
}

/** The conv layers of a model, each with the ReLU that rectifies it (the layer the activity is measured on). */
export function convLayers(model: Model): { conv: string; activation: string }[] {
  const marks = new Landmarks(model);
  return model.layers.flatMap((l, i) => (l.type === 'conv2d' ? [{ conv: l.name, activation: marks.rectified(i) }] : []));
}

/** The per-conv-layer table of `convscope filters`. */
export async function filterReport(engine: Engine, dataset: Dataset, options: { onProgress?: OnProgress; indices?: number[] } = {}): Promise<{ rows: ConvLayerReport[]; images: number; skipped: Skipped[] }> {
  const convs = convLayers(engine.model);
  const { activity, images, skipped } = await layerActivity(engine, dataset, convs.map((c) => c.activation), options);
  const rows = convs.map(({ conv, activation }, i) => {
    const layer = engine.model.layers.find((l) => l.name === conv)!;
    if (layer.type !== 'conv2d') throw new Error(`internal: ${conv} is not a conv layer`);
    const hf = highFrequencyShare(engine.model.weights.get(`${conv}.weight`)!);
    return {
      conv, activation,
      kernel: `${layer.kernel[0]}x${layer.kernel[1]}`,
      stride: layer.stride[0],
      features: layer.outChannels,
      dead: activity[i].dead.length,
      sparsity: activity[i].sparsity,
      highFrequency: hf.reduce((a, b) => a + b, 0) / hf.length,
    };
  });
  return { rows, images, skipped };
}
