// A convscope worker: takes jobs from the queue until closed, loads each model and dataset once (cached by file
// identity), reports progress to the job, and refuses any job whose paths lie outside the roots it serves.
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import { Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { randomlyInitialised } from '../analysis/ablate.js';
import { localisationItems, localisationScore } from '../analysis/occlusion.js';
import { extractFeatures } from '../analysis/probe.js';
import { scanTopk } from '../analysis/topk.js';
import { projectEntries } from '../analysis/topk-views.js';
import type { Dataset } from '../data/dataset.js';
import { openFilteredDataset } from '../data/filter.js';
import { Engine } from '../engine/engine.js';
import { loadModel, withPreprocess } from '../model/load.js';
import { isZooName } from '../model/zoo.js';
import { connect, QUEUE_NAME, type QueueAddress } from './connection.js';
import {
  checkAllowed, entriesToJson, floatsToBase64, jobPaths, PROBE_FEATURES, SCORE_IMAGES, TOPK_PROJECT, TOPK_SHARD, viewToJson,
  type DataRef, type ModelRef, type ProbeFeaturesJob, type ProbeFeaturesResult, type ScoreJob, type TopkProjectJob, type TopkShardJob, type TopkShardResult,
} from './jobs.js';

export interface WorkerOptions {
  address: QueueAddress;
  /** Roots every model and data path of a job must lie under. */
  allow: readonly string[];
  /** Jobs at once (each holds its own engine call); default 1. */
  concurrency?: number;
  /** onnxruntime threads per engine; default the cores available. */
  threads?: number;
  /** How long a job's lock lasts (ms): a killed worker's job goes to another after about this long. Default 30 s. */
  lockMs?: number;
  onEvent?: (line: string) => void;
}

export interface RunningWorker {
  /** Stops taking jobs, lets the running ones finish, disconnects. */
  close(): Promise<void>;
  /** Resolves when the worker stops (closed, or its connection lost for good). */
  closed: Promise<void>;
}

const MAX_CACHED = 4;

/** A key that changes when the file does: its path, size and modification time. */
function fileKey(path: string): string {
  if (isZooName(path)) return `zoo:${path}`;
  const s = statSync(path);
  return `${resolve(path)}:${s.size}:${s.mtimeMs}`;
}

class Cache<T> {
  private readonly entries = new Map<string, Promise<T>>();
  constructor(private readonly dispose: (v: T) => Promise<void> = async () => undefined) {}

  get(key: string, make: () => Promise<T>): Promise<T> {
    let v = this.entries.get(key);
    if (!v) {
      v = make();
      v.catch(() => this.entries.delete(key));
      this.entries.set(key, v);
      while (this.entries.size > MAX_CACHED) {
        const [oldest, value] = this.entries.entries().next().value!;
        this.entries.delete(oldest);
        void value.then(this.dispose, () => undefined);
      }
    }
    return v;
  }

  async clear(): Promise<void> {
    const all = [...this.entries.values()];
    this.entries.clear();
    for (const v of all) await v.then(this.dispose, () => undefined);
  }
}

export async function startWorker(options: WorkerOptions): Promise<RunningWorker> {
  const allow = options.allow.map((r) => resolve(r));
  if (allow.length === 0) throw new Error('a worker needs at least one --allow root');
  const engines = new Cache<Engine>((e) => e.dispose());
  const datasets = new Cache<Dataset>();
  const log = options.onEvent ?? (() => undefined);

  const engineFor = (m: ModelRef) =>
    engines.get(`${fileKey(m.path)}:${m.seed}:${m.mean ?? ''}:${m.std ?? ''}:${m.reinit ?? ''}`, async () => {
      const loaded = withPreprocess(loadModel(m.path, { seed: m.seed }), { mean: m.mean, std: m.std });
      return new Engine(m.reinit === undefined ? loaded : randomlyInitialised(loaded, m.reinit), { threads: options.threads });
    });
  const datasetFor = (d: DataRef) => datasets.get(`${d.spec}:${d.split}:${d.dataPath ?? ''}`, () => openFilteredDataset(d.spec, { split: d.split, ...(d.dataPath ? { data: d.dataPath } : {}) }));

  const processors: Record<string, (job: Job) => Promise<unknown>> = {
    [TOPK_SHARD]: async (job) => {
      const data = job.data as TopkShardJob;
      for (const p of jobPaths(data.model, data.data, isZooName)) checkAllowed(p.path, allow, p.what);
      const engine = await engineFor(data.model);
      const ds = await datasetFor(data.data);
      const r = await scanTopk(engine, ds, {
        layers: data.layers, k: data.k, perImage: data.perImage, batchSize: data.batchSize, indices: data.indices,
        onProgress: (done, total) => void job.updateProgress({ done, total }).catch(() => undefined),
      });
      const result: TopkShardResult = {
        shard: data.shard, images: r.images, skipped: r.skipped, model: r.model, dataset: r.dataset,
        layers: r.layers.map((l) => ({ layer: l.layer, shape: l.shape, features: entriesToJson(l.features) })),
      };
      return result;
    },
  };

  processors[SCORE_IMAGES] = async (job) => {
    const data = job.data as ScoreJob;
    for (const p of jobPaths(data.model, data.data, isZooName)) checkAllowed(p.path, allow, p.what);
    const engine = await engineFor(data.model);
    const items = await localisationItems(await datasetFor(data.data), engine.model, data.indices);
    const r = await localisationScore(engine, items, {
      window: data.window, stride: data.stride,
      onProgress: (done, total) => void job.updateProgress({ done, total }).catch(() => undefined),
    });
    return r.perImage;
  };

  processors[PROBE_FEATURES] = async (job) => {
    const data = job.data as ProbeFeaturesJob;
    for (const p of jobPaths(data.model, data.data, isZooName)) checkAllowed(p.path, allow, p.what);
    const engine = await engineFor(data.model);
    const set = await extractFeatures(engine, await datasetFor(data.data), data.indices, data.layers, {
      pool: data.pool, batchSize: data.batchSize,
      onBatch: (done, total) => void job.updateProgress({ done, total }).catch(() => undefined),
    });
    const result: ProbeFeaturesResult = {
      indices: set.indices, labels: Array.from(set.labels), skipped: set.skipped,
      layers: data.layers.map((name) => ({ name, shape: set.layers.get(name)!.shape, data: floatsToBase64(set.layers.get(name)!.data) })),
    };
    return result;
  };

  processors[TOPK_PROJECT] = async (job) => {
    const data = job.data as TopkProjectJob;
    for (const p of jobPaths(data.model, data.data, isZooName)) checkAllowed(p.path, allow, p.what);
    const engine = await engineFor(data.model);
    const units = data.units.map(([feature, value, image, y, x]) => ({ feature, entry: { value, image, y, x } }));
    const views = await projectEntries(engine, await datasetFor(data.data), data.layer, units, {
      settings: data.settings, batchUnits: data.batchUnits,
      onProgress: (done, total) => void job.updateProgress({ done, total }).catch(() => undefined),
    });
    return views.map(viewToJson);
  };

  const client: Redis = await connect(options.address);
  const worker = new Worker(
    QUEUE_NAME,
    async (job) => {
      const process = processors[job.name];
      // A job kind this version does not know is refused, never interpreted.
      if (!process) throw new Error(`unknown job kind '${job.name}'`);
      log(`job ${job.id} (${job.name}) started`);
      const out = await process(job);
      log(`job ${job.id} done`);
      return out;
    },
    { connection: client, concurrency: options.concurrency ?? 1, lockDuration: options.lockMs ?? 30_000, stalledInterval: options.lockMs ?? 30_000, maxStalledCount: 3 },
  );
  worker.on('failed', (job, e) => log(`job ${job?.id} failed: ${e.message}`));
  worker.on('error', (e) => log(`worker error: ${e.message}`));
  await worker.waitUntilReady();
  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  let closing: Promise<void> | undefined;
  return {
    closed,
    close() {
      closing ??= (async () => {
        await worker.close();
        await engines.clear();
        await datasets.clear();
        client.disconnect();
        resolveClosed();
      })();
      return closing;
    },
  };
}
