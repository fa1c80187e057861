// The top-k scan on workers: the images are cut into shards, one job each; each worker scans its shard into heaps;
// the coordinator merges them exactly (mergeTopk), shard order and worker assignment making no difference.
import { mergeTopk, type TopkResult } from '../analysis/topk.js';
import type { QueueAddress } from './connection.js';
import type { TopkEntry } from '../analysis/topk-heaps.js';
import type { TopkView } from '../analysis/topk-views.js';
import { entriesFromJson, TOPK_PROJECT, TOPK_SHARD, viewFromJson, type SerializedView, type TopkProjectJob, type TopkScanSpec, type TopkShardResult } from './jobs.js';
import { runIdentity, runJobs } from './run.js';

export interface DistributedTopkOptions extends TopkScanSpec {
  address: QueueAddress;
  /** The dataset indices to scan, in order. */
  indices: number[];
  /** Images per job; default 1000. */
  shardSize?: number;
  /** Reuse the shards an earlier identical run finished (default: start over). */
  resume?: boolean;
  /** Failures before a shard stops the run; default 3. */
  attempts?: number;
  /** Shards done, of all; with the images scanned so far and the workers seen. */
  onProgress?: (done: number, total: number, note: string) => void;
}

export async function distributedTopk(o: DistributedTopkOptions): Promise<TopkResult & { resumedShards: number }> {
  const shardSize = o.shardSize ?? 1000;
  if (!(Number.isInteger(shardSize) && shardSize >= 1)) throw new Error(`shard size must be an integer >= 1, got ${shardSize}`);
  if (o.indices.length === 0) throw new Error('nothing to scan: no images');
  const spec: TopkScanSpec = { model: o.model, data: o.data, layers: o.layers, k: o.k, perImage: o.perImage, batchSize: o.batchSize };
  const shards = Array.from({ length: Math.ceil(o.indices.length / shardSize) }, (_, s) => o.indices.slice(s * shardSize, (s + 1) * shardSize));
  const run = runIdentity('topk', o.model, { spec, shards });
  const { results, resumed } = await runJobs<TopkShardResult>(o.address, TOPK_SHARD, run, shards.map((indices, shard) => ({ ...spec, shard, indices })), {
    attempts: o.attempts,
    resume: o.resume,
    onProgress: o.onProgress,
    note: (done) => `${(done as TopkShardResult[]).reduce((a, r) => a + r.images, 0)} images`,
  });
  const merged = mergeTopk(
    results.map((r) => ({
      model: r.model, dataset: r.dataset, k: o.k, perImage: o.perImage, images: r.images, skipped: r.skipped,
      layers: r.layers.map((l) => ({ layer: l.layer, shape: l.shape, features: entriesFromJson(l.features) })),
    })),
  );
  return { ...merged, resumedShards: resumed };
}

/**
 * Projects a page's units on the workers, `unitsPerJob` units a job, and gives the views back in the units' order
 * (for topkFigureViews' `project`).
 */
export function distributedProjector(
  address: QueueAddress,
  spec: Pick<TopkScanSpec, 'model' | 'data'>,
  settings: TopkProjectJob['settings'],
  batchUnits: number,
  unitsPerJob = 4 * batchUnits,
): (layer: string, units: { feature: number; entry: TopkEntry }[]) => Promise<TopkView[]> {
  return async (layer, units) => {
    const chunks = Array.from({ length: Math.ceil(units.length / unitsPerJob) }, (_, c) => units.slice(c * unitsPerJob, (c + 1) * unitsPerJob));
    const payloads = chunks.map((chunk) => ({
      model: spec.model, data: spec.data, layer, settings, batchUnits,
      units: chunk.map((u) => [u.feature, u.entry.value, u.entry.image, u.entry.y, u.entry.x] as [number, number, number, number, number]),
    }));
    const run = runIdentity('project', spec.model, { data: spec.data, layer, settings, batchUnits, payloads: payloads.map((p) => p.units) });
    const { results } = await runJobs<SerializedView[]>(address, TOPK_PROJECT, run, payloads);
    return results.flat().map(viewFromJson);
  };
}
