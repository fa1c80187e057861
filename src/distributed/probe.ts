// Linear-probe feature extraction on workers: the items in shards, one job each, the rows put back in item order, so
// that the probe fits on exactly the features a local extraction gives.
import type { FeatureSet } from '../analysis/probe.js';
import type { QueueAddress } from './connection.js';
import { floatsFromBase64, PROBE_FEATURES, type ProbeFeaturesResult, type ProbeFeaturesSpec } from './jobs.js';
import { runIdentity, runJobs } from './run.js';

export interface DistributedFeaturesOptions extends ProbeFeaturesSpec {
  address: QueueAddress;
  indices: number[];
  /** Items per job; default 1000. */
  shardSize?: number;
  onProgress?: (done: number, total: number, note: string) => void;
}

export async function distributedFeatures(o: DistributedFeaturesOptions): Promise<FeatureSet> {
  const size = o.shardSize ?? 1000;
  const shards = Array.from({ length: Math.ceil(o.indices.length / size) }, (_, s) => o.indices.slice(s * size, (s + 1) * size));
  const spec = { data: o.data, layers: o.layers, pool: o.pool, batchSize: o.batchSize };
  const run = runIdentity('probe', o.model, { spec, shards });
  const { results } = await runJobs<ProbeFeaturesResult>(o.address, PROBE_FEATURES, run, shards.map((indices) => ({ model: o.model, ...spec, indices })), { onProgress: o.onProgress });
  const layers = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const name of o.layers) {
    const parts = results.map((r) => r.layers.find((l) => l.name === name)!);
    const chunks = parts.map((p) => floatsFromBase64(p.data));
    const data = new Float32Array(chunks.reduce((a, c) => a + c.length, 0));
    let at = 0;
    for (const c of chunks) {
      data.set(c, at);
      at += c.length;
    }
    layers.set(name, { shape: parts[0].shape, data });
  }
  return {
    indices: results.flatMap((r) => r.indices),
    labels: Int32Array.from(results.flatMap((r) => r.labels)),
    layers,
    skipped: results.flatMap((r) => r.skipped),
  };
}
