// A training set and a held-out set for the commands that fit something (train, compare-arch, probe, ablate): the
// data's own splits where it has them, else a seeded cut of its one split that the command prints.
import { hasOwnSplits, requireLabels, subset, type Dataset, type OpenOptions } from './dataset.js';
import { openFilteredDataset, splitClassSpec } from './filter.js';
import { splitIndices } from './split.js';

/** The share of a one-split folder held out for validation, and the seed of the cut. */
export const HELD_OUT_FRACTION = 0.2;
export const HELD_OUT_SEED = 0;

export interface TrainAndHeldOut {
  train: Dataset;
  heldOut: Dataset;
  /** Where the held-out set came from: the data's val or test split, or a cut of its one split. */
  source: 'val' | 'test' | 'cut';
  /** For a cut: what was cut, in one line for the user, and the sets' indices into the folder's one split. */
  note?: string;
  indices?: { train: number[]; heldOut: number[] };
}

/** The held-out split the analyses read: `val` where the data has one, else `test` (IDX sets have no val). */
export async function openValidation(spec: string, opts: Omit<OpenOptions, 'split'> = {}): Promise<{ ds: Dataset; split: 'val' | 'test' }> {
  try {
    return { ds: await openFilteredDataset(spec, { ...opts, split: 'val' }), split: 'val' };
  } catch {
    return { ds: await openFilteredDataset(spec, { ...opts, split: 'test' }), split: 'test' };
  }
}

export async function openTrainAndHeldOut(spec: string, opts: Omit<OpenOptions, 'split'> = {}, cut = { fraction: HELD_OUT_FRACTION, seed: HELD_OUT_SEED }): Promise<TrainAndHeldOut> {
  if (hasOwnSplits(splitClassSpec(spec).base)) {
    const train = await openFilteredDataset(spec, { ...opts, split: 'train' });
    const { ds, split } = await openValidation(spec, opts);
    return { train, heldOut: ds, source: split };
  }
  const all = await openFilteredDataset(spec, opts);
  requireLabels(all, 'training');
  const [trainIdx, heldIdx] = splitIndices(all.size, [1 - cut.fraction, cut.fraction], cut.seed);
  if (trainIdx.length === 0 || heldIdx.length === 0) {
    throw new Error(`${all.name} has ${all.size} images: too few to hold ${Math.round(100 * cut.fraction)}% out for validation`);
  }
  return {
    train: subset(all, trainIdx, `${all.name} (training cut)`),
    heldOut: subset(all, heldIdx, `${all.name} (validation cut)`),
    source: 'cut',
    indices: { train: trainIdx, heldOut: heldIdx },
    note: `${all.name} has no train/val/test sub-folders: using ${trainIdx.length} images for training, ${heldIdx.length} for validation (seed ${cut.seed})`,
  };
}
