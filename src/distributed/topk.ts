// The top-k scan on workers: the images are cut into shards, one job each; each worker scans its shard into heaps;
// the coordinator merges them exactly (mergeTopk), shard order and worker assignment making no difference. Job ids
// come from the run's inputs, so a coordinator restarted with `resume` finds the shards already done.
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import { Queue, QueueEvents, type Job } from 'bullmq';
import { mergeTopk, type TopkResult } from '../analysis/topk.js';
import { isZooName } from '../model/zoo.js';
import { connect, QUEUE_NAME, type QueueAddress } from './connection.js';
import { entriesFromJson, TOPK_SHARD, type TopkScanSpec, type TopkShardJob, type TopkShardResult } from './jobs.js';

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

/** A run's identity: everything that determines its result, with the model file's size and modification time. */
function runId(o: DistributedTopkOptions, shardSize: number): string {
  const model = isZooName(o.model.path) ? o.model.path : (() => {
    const s = statSync(o.model.path);
    return `${resolve(o.model.path)}:${s.size}:${s.mtimeMs}`;
  })();
  const key = JSON.stringify({ model, seed: o.model.seed, mean: o.model.mean, std: o.model.std, data: o.data, layers: o.layers, k: o.k, perImage: o.perImage, batchSize: o.batchSize, shardSize, indices: createHash('sha256').update(Int32Array.from(o.indices)).digest('hex') });
  return `topk-${createHash('sha256').update(key).digest('hex').slice(0, 16)}`;
}

export async function distributedTopk(o: DistributedTopkOptions): Promise<TopkResult & { resumedShards: number }> {
  const shardSize = o.shardSize ?? 1000;
  if (!(Number.isInteger(shardSize) && shardSize >= 1)) throw new Error(`shard size must be an integer >= 1, got ${shardSize}`);
  if (o.indices.length === 0) throw new Error('nothing to scan: no images');
  const run = runId(o, shardSize);
  const shards = Array.from({ length: Math.ceil(o.indices.length / shardSize) }, (_, s) => o.indices.slice(s * shardSize, (s + 1) * shardSize));
  const jobId = (s: number) => `${run}-${s}`;
  const client = await connect(o.address);
  const eventsClient = await connect(o.address);
  const queue = new Queue(QUEUE_NAME, { connection: client });
  const events = new QueueEvents(QUEUE_NAME, { connection: eventsClient });
  try {
    await events.waitUntilReady();
    let resumedShards = 0;
    for (let s = 0; s < shards.length; s++) {
      const existing = await queue.getJob(jobId(s));
      if (existing && o.resume && (await existing.isCompleted())) resumedShards++;
      else if (existing) await existing.remove().catch(() => undefined);
    }
    const data = (s: number): TopkShardJob => ({ run, shard: s, model: o.model, data: o.data, layers: o.layers, k: o.k, perImage: o.perImage, batchSize: o.batchSize, indices: shards[s] });
    const jobs: Job[] = [];
    for (let s = 0; s < shards.length; s++) {
      jobs.push(await queue.add(TOPK_SHARD, data(s), { jobId: jobId(s), attempts: o.attempts ?? 3, removeOnComplete: false, removeOnFail: false }));
    }
    let images = 0;
    const results = new Map<number, TopkShardResult>();
    const report = async () => {
      const workers = await queue.getWorkersCount().catch(() => 0);
      o.onProgress?.(results.size, shards.length, `${images} images, ${workers} worker${workers === 1 ? '' : 's'}`);
    };
    await report();
    const shardOf = new Map(jobs.map((job, s) => [job.id!, s]));
    let timer: ReturnType<typeof setInterval> | undefined;
    await new Promise<void>((resolveAll, rejectAll) => {
      let finished = false;
      // A shard is settled by its job's state, read from Redis: an event only says where to look.
      const settle = async (id: string): Promise<void> => {
        const s = shardOf.get(id);
        if (s === undefined || results.has(s) || finished) return;
        const job = await queue.getJob(id);
        const state = job ? await job.getState() : 'missing';
        if (state === 'completed') {
          const value = job!.returnvalue as TopkShardResult;
          results.set(s, value);
          images += value.images;
          await report();
          if (results.size === shards.length) {
            finished = true;
            resolveAll();
          }
        } else if (state === 'failed' || state === 'missing') {
          finished = true;
          rejectAll(new Error(`a top-k shard failed ${o.attempts ?? 3} times, stopping the run: ${job?.failedReason ?? `job ${id} disappeared from the queue`}`));
        }
      };
      const fail = (e: unknown) => {
        if (finished) return;
        finished = true;
        rejectAll(e);
      };
      events.on('completed', ({ jobId }) => void settle(jobId).catch(fail));
      events.on('failed', ({ jobId }) => void settle(jobId).catch(fail));
      // Jobs that finished before the listeners, and a slow sweep in case an event is lost on a reconnection.
      const sweep = async () => {
        for (const id of shardOf.keys()) await settle(id);
      };
      timer = setInterval(() => void sweep().catch(fail), 10_000);
      void sweep().catch(fail);
    }).finally(() => {
      clearInterval(timer);
      events.removeAllListeners('completed');
      events.removeAllListeners('failed');
    });
    const merged = mergeTopk(
      [...results.values()].sort((a, b) => a.shard - b.shard).map((r) => ({
        model: r.model, dataset: r.dataset, k: o.k, perImage: o.perImage, images: r.images, skipped: r.skipped,
        layers: r.layers.map((l) => ({ layer: l.layer, shape: l.shape, features: entriesFromJson(l.features) })),
      })),
    );
    // Done and merged: the shards' results are not needed again.
    for (let s = 0; s < shards.length; s++) await (await queue.getJob(jobId(s)))?.remove().catch(() => undefined);
    return { ...merged, resumedShards };
  } finally {
    await events.close();
    await queue.close();
    client.disconnect();
    eventsClient.disconnect();
  }
}

