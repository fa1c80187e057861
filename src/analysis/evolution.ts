// Fig. 4: how features evolve during training. For each snapshot, the strongest activation of chosen feature maps
// over the data, projected to pixel space; plus, per layer, the epoch after which those projections stop changing.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { Dataset } from '../data/dataset.js';
import { Engine } from '../engine/engine.js';
import { layerToJson, type Model } from '../model/layers.js';
import { loadModel } from '../model/load.js';
import { median } from '../tensor.js';
import type { OnProgress } from '../util/progress.js';
import { Rng } from '../util/random.js';
import { resolveTopkLayers, scanTopk, type TopkResult } from './topk.js';
import { projectEntries, type TopkView } from './topk-views.js';

export interface Snapshot {
  epoch: number;
  path: string;
  model: Model;
}

/** Consecutive projections of a feature whose correlation reaches this count as unchanged. */
export const STABLE_CORRELATION = 0.9;

/**
 * The snapshots in a folder (.safetensors or .onnx, e.g. from `convscope train` or exported from elsewhere), in epoch
 * order. The epoch is the `epoch` of a JSON file beside the model, else the last number in the file name.
 */
export function loadSnapshots(dir: string): Snapshot[] {
  if (!existsSync(dir)) throw new Error(`snapshot folder ${dir} does not exist`);
  const files = readdirSync(dir).filter((f) => /\.(safetensors|onnx)$/i.test(f));
  if (files.length === 0) throw new Error(`${dir} holds no .safetensors or .onnx snapshots`);
  const snapshots = files.map((f) => {
    const path = join(dir, f);
    const side = path.replace(/\.(safetensors|onnx)$/i, '.json');
    let epoch: number | undefined;
    if (existsSync(side)) epoch = (JSON.parse(readFileSync(side, 'utf8')) as { epoch?: number }).epoch;
    if (epoch === undefined) {
      const numbers = basename(f).match(/\d+/g);
      if (!numbers) throw new Error(`cannot tell the epoch of snapshot ${path}: no number in its name and no ${basename(side)}`);
      epoch = Number(numbers[numbers.length - 1]);
    }
    return { epoch, path, model: loadModel(path) };
  });
  snapshots.sort((a, b) => a.epoch - b.epoch);
  const arch = JSON.stringify(snapshots[0].model.layers.map(layerToJson));
  for (const s of snapshots) {
    if (JSON.stringify(s.model.layers.map(layerToJson)) !== arch) throw new Error(`snapshot ${s.path} has another architecture than ${snapshots[0].path}`);
  }
  return snapshots;
}

export interface EvolutionOptions {
  /** Layers to follow; default the rectified conv maps (the paper's layers 1-5). */
  layers?: string[];
  /** Feature maps per layer, chosen at random with `seed` (the paper: a random subset); default 8. */
  features?: number;
  seed?: number;
  /** Dataset indices to scan; default all. */
  indices?: ArrayLike<number>;
  /** Snapshots done of all; the note says which snapshot is being scanned. */
  onProgress?: OnProgress;
  /**
   * How a snapshot's top-9 scan is run (default: here, with `scanTopk`); `convscope evolve --queue` runs it on workers.
   * It must give what `scanTopk(engine, ds, { layers, k: 9, indices })` gives.
   */
  scan?: (snapshot: Snapshot, layers: string[]) => Promise<TopkResult>;
}

export interface FeatureTrack {
  feature: number;
  /** Per snapshot: the projection of the strongest activation, cropped to its receptive field. */
  views: TopkView[];
  /** Per consecutive pair of snapshots: correlation of the two projections within the receptive field. */
  correlation: number[];
  /** Per consecutive pair: share of the top-9 images the two snapshots have in common. */
  top9Overlap: number[];
}

export interface LayerEvolution {
  layer: string;
  tracks: FeatureTrack[];
  /** The first snapshot epoch from which every later step keeps the median correlation >= 0.9; null if none. */
  convergedEpoch: number | null;
  /** Per consecutive pair: the median over features of the correlation. */
  medianCorrelation: number[];
}

export interface EvolutionResult {
  epochs: number[];
  /** The dataset's name and the number of images scanned per snapshot. */
  data: string;
  images: number;
  layers: LayerEvolution[];
}

/** The projection placed in its full receptive field (zeros where the field left the image), flattened. */
function inField(view: TopkView): Float32Array {
  const [fy0, fx0, fy1, fx1] = view.field.full;
  const [cy0, cx0] = view.field.clipped;
  const [C, h, w] = view.projection.shape;
  const H = fy1 - fy0;
  const W = fx1 - fx0;
  const out = new Float32Array(C * H * W);
  for (let c = 0; c < C; c++) {
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) out[(c * H + y + cy0 - fy0) * W + x + cx0 - fx0] = view.projection.data[(c * h + y) * w + x];
    }
  }
  return out;
}

export function correlation(a: Float32Array, b: Float32Array): number {
  const n = a.length;
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < n; i++) {
    ma += a[i];
    mb += b[i];
  }
  ma /= n;
  mb /= n;
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < n; i++) {
    const da = a[i] - ma;
    const db = b[i] - mb;
    sab += da * db;
    saa += da * da;
    sbb += db * db;
  }
  return saa > 0 && sbb > 0 ? sab / Math.sqrt(saa * sbb) : saa === sbb ? 1 : 0;
}

/** The earliest snapshot epoch after which every consecutive step stays at or above the threshold. */
export function convergedEpoch(epochs: number[], stepScores: number[], threshold = STABLE_CORRELATION): number | null {
  let from: number | null = null;
  for (let i = stepScores.length - 1; i >= 0; i--) {
    if (stepScores[i] < threshold) break;
    from = epochs[i];
  }
  return from;
}

export async function featureEvolution(snapshots: Snapshot[], ds: Dataset, options: EvolutionOptions = {}): Promise<EvolutionResult> {
  if (snapshots.length === 0) throw new Error('no snapshots');
  const first = new Engine(snapshots[0].model);
  const layers = resolveTopkLayers(first, options.layers);
  const rng = new Rng(options.seed ?? 0);
  const chosen = new Map(layers.map((l) => {
    const count = first.info(l).outShape[0];
    const pick = Math.min(options.features ?? 8, count);
    const order = Array.from({ length: count }, (_, i) => i);
    for (let i = count - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [order[i], order[j]] = [order[j], order[i]];
    }
    return [l, order.slice(0, pick).sort((a, b) => a - b)] as const;
  }));
  await first.dispose();

  const perSnapshot: { views: Map<string, TopkView[]>; top9: Map<string, Set<number>[]> }[] = [];
  for (const [i, snap] of snapshots.entries()) {
    options.onProgress?.(i, snapshots.length, `epoch ${snap.epoch}: scanning ${ds.name} for the strongest activations (${snap.path})`);
    const engine = new Engine(snap.model);
    try {
      const scan = options.scan ? await options.scan(snap, layers) : await scanTopk(engine, ds, { layers, k: 9, indices: options.indices });
      const views = new Map<string, TopkView[]>();
      const top9 = new Map<string, Set<number>[]>();
      for (const lt of scan.layers) {
        const features = chosen.get(lt.layer)!;
        views.set(lt.layer, await projectEntries(engine, ds, lt.layer, features.map((f) => ({ feature: f, entry: lt.features[f][0] }))));
        top9.set(lt.layer, features.map((f) => new Set(lt.features[f].map((e) => e.image))));
      }
      perSnapshot.push({ views, top9 });
    } finally {
      await engine.dispose();
    }
  }

  options.onProgress?.(snapshots.length, snapshots.length);

  const epochs = snapshots.map((s) => s.epoch);
  return {
    epochs,
    data: ds.name,
    images: options.indices?.length ?? ds.size,
    layers: layers.map((layer) => {
      const tracks = chosen.get(layer)!.map((feature, fi) => {
        const views = perSnapshot.map((s) => s.views.get(layer)![fi]);
        const fields = views.map(inField);
        const sets = perSnapshot.map((s) => s.top9.get(layer)![fi]);
        return {
          feature,
          views,
          correlation: fields.slice(1).map((f, i) => correlation(fields[i], f)),
          top9Overlap: sets.slice(1).map((s, i) => [...s].filter((img) => sets[i].has(img)).length / Math.max(s.size, 1)),
        };
      });
      const medianCorrelation = epochs.slice(1).map((_, i) => median(tracks.map((t) => t.correlation[i])));
      return { layer, tracks, medianCorrelation, convergedEpoch: convergedEpoch(epochs, medianCorrelation) };
    }),
  };
}

