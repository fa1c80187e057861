import type { Layer } from '../model/layers.js';
import type { Tensor } from '../tensor.js';

export interface SgdSettings {
  lr: number;
  momentum: number;
  weightDecay: number;
}

/**
 * SGD with momentum as in the paper (and PyTorch): v = momentum * v + (g + weightDecay * w); w -= lr * v.
 * Weight decay applies to weights, not biases (Krizhevsky et al.'s practice, kept by Zeiler & Fergus).
 */
export class Sgd {
  readonly velocity = new Map<string, Float32Array>();

  /** `trained`: the keys gradients update (default all); the others, running statistics, are left to the caller. */
  constructor(weights: Map<string, Tensor>, trained?: ReadonlySet<string>) {
    for (const [key, t] of weights) if (!trained || trained.has(key)) this.velocity.set(key, new Float32Array(t.data.length));
  }

  step(weights: Map<string, Tensor>, grads: Map<string, Float32Array>, s: SgdSettings): void {
    for (const [key, v] of this.velocity) {
      const w = weights.get(key);
      const g = grads.get(key);
      if (!w) throw new Error(`no weight '${key}'`);
      if (!g) throw new Error(`no gradient for weight '${key}'`);
      const decay = key.endsWith('.weight') ? s.weightDecay : 0;
      const d = w.data;
      for (let i = 0; i < d.length; i++) {
        const vi = s.momentum * v[i] + g[i] + decay * d[i];
        v[i] = vi;
        d[i] -= s.lr * vi;
      }
    }
  }
}

/**
 * The paper's filter renormalisation: each conv filter (one output channel's weights) whose RMS exceeds `cap` is
 * scaled back to RMS `cap`. Returns how many filters were rescaled.
 */
export function renormalizeFilters(layers: Layer[], weights: Map<string, Tensor>, cap: number): number {
  let rescaled = 0;
  for (const layer of layers) {
    if (layer.type !== 'conv2d') continue;
    const w = weights.get(`${layer.name}.weight`)!;
    const per = w.data.length / layer.outChannels;
    for (let f = 0; f < layer.outChannels; f++) {
      const filter = w.data.subarray(f * per, (f + 1) * per);
      let sq = 0;
      for (let i = 0; i < per; i++) sq += filter[i] * filter[i];
      const rms = Math.sqrt(sq / per);
      if (rms > cap) {
        const scale = cap / rms;
        for (let i = 0; i < per; i++) filter[i] *= scale;
        rescaled++;
      }
    }
  }
  return rescaled;
}

export type LrSchedule =
  | { kind: 'constant' }
  /** Multiply by `gamma` every `every` epochs. */
  | { kind: 'step'; every: number; gamma: number }
  /** Set by hand, as the paper did: { epoch: lr } from that epoch (1-based) on. */
  | { kind: 'manual'; at: Record<number, number> };

/** Learning rate for a 1-based epoch. */
export function learningRate(base: number, schedule: LrSchedule, epoch: number): number {
  switch (schedule.kind) {
    case 'constant':
      return base;
    case 'step':
      return base * schedule.gamma ** Math.floor((epoch - 1) / schedule.every);
    case 'manual': {
      let lr = base;
      for (const [e, v] of Object.entries(schedule.at).sort((a, b) => Number(a[0]) - Number(b[0]))) if (epoch >= Number(e)) lr = v;
      return lr;
    }
  }
}

/** Parses `step:EVERY:GAMMA`, `constant`, or `manual:EPOCH=LR,EPOCH=LR`. */
export function parseSchedule(text: string): LrSchedule {
  if (text === 'constant') return { kind: 'constant' };
  const step = /^step:(\d+):([\d.eE-]+)$/.exec(text);
  if (step) return { kind: 'step', every: Number(step[1]), gamma: Number(step[2]) };
  const manual = /^manual:(.+)$/.exec(text);
  if (manual) {
    const at: Record<number, number> = {};
    for (const part of manual[1].split(',')) {
      const m = /^(\d+)=([\d.eE-]+)$/.exec(part);
      if (!m) throw new Error(`bad manual schedule entry '${part}'; use EPOCH=LR`);
      at[Number(m[1])] = Number(m[2]);
    }
    return { kind: 'manual', at };
  }
  throw new Error(`unknown learning-rate schedule '${text}'; use constant, step:EVERY:GAMMA or manual:EPOCH=LR,...`);
}

/** The paper's Fig. 4 snapshot epochs (1, 2, 5, 10, 20, 30, 40, 64), scaled so that 64 maps to the run's last epoch. */
export function paperSnapshotEpochs(epochs: number): number[] {
  return [...new Set([1, 2, 5, 10, 20, 30, 40, 64].map((e) => Math.min(epochs, Math.max(1, Math.ceil((e * epochs) / 64)))))];
}
