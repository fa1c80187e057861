// The localisation score (occlusion per image, paper Fig. 7 as a number) on workers: images in groups, one job each;
// the per-image results are put back in image order and scored as the local run scores them.
import { scoreOf, type LocalisationScore } from '../analysis/occlusion.js';
import type { QueueAddress } from './connection.js';
import { SCORE_IMAGES, type DataRef, type ModelRef } from './jobs.js';
import { runIdentity, runJobs } from './run.js';

export interface DistributedScoreOptions {
  address: QueueAddress;
  model: ModelRef;
  data: DataRef;
  indices: number[];
  window?: number;
  stride?: number;
  /** Images per job; default 1 (an occlusion of one image is already seconds of work at 224 px). */
  groupSize?: number;
  resume?: boolean;
  onProgress?: (done: number, total: number, note: string) => void;
}

export async function distributedScore(o: DistributedScoreOptions): Promise<LocalisationScore> {
  const size = o.groupSize ?? 1;
  if (o.indices.length === 0) throw new Error('nothing to score: no images');
  const groups = Array.from({ length: Math.ceil(o.indices.length / size) }, (_, g) => o.indices.slice(g * size, (g + 1) * size));
  const settings = { data: o.data, window: o.window, stride: o.stride };
  const run = runIdentity('score', o.model, { settings, groups });
  const { results } = await runJobs<LocalisationScore['perImage']>(o.address, SCORE_IMAGES, run, groups.map((indices) => ({ model: o.model, ...settings, indices })), {
    resume: o.resume,
    onProgress: o.onProgress,
  });
  return scoreOf(results.flat());
}
