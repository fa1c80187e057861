// Running a list of jobs of one kind on the workers and collecting their results in order. Job ids come from the
// run's identity, so a coordinator restarted with `resume` finds the jobs already done; a shard is settled by its job's
// state in Redis (events only say where to look, and a slow sweep covers an event lost on a reconnection).
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import { Queue, QueueEvents } from 'bullmq';
import { isZooName } from '../model/zoo.js';
import { connect, QUEUE_NAME, type QueueAddress } from './connection.js';
import type { ModelRef } from './jobs.js';

export interface RunJobsOptions {
  /** Failures before a job stops the run; default 3. */
  attempts?: number;
  /** Reuse the jobs an earlier identical run finished (default: start over). */
  resume?: boolean;
  /** Jobs done, of all, and a note (what the results add up to, the workers seen). */
  onProgress?: (done: number, total: number, note: string) => void;
  /** The note for the progress line from the results so far. */
  note?: (results: unknown[]) => string;
}

/** A run's identity: a hash of everything that determines its result, the model file's size and time included. */
export function runIdentity(kind: string, model: ModelRef, rest: unknown): string {
  const file = isZooName(model.path) ? model.path : (() => {
    const s = statSync(model.path);
    return `${resolve(model.path)}:${s.size}:${s.mtimeMs}`;
  })();
  return `${kind}-${createHash('sha256').update(JSON.stringify({ file, model, rest })).digest('hex').slice(0, 16)}`;
}

/** Runs one job per payload (ids `${run}-${i}`) and returns their results in payload order. */
export async function runJobs<T>(address: QueueAddress, kind: string, run: string, payloads: readonly object[], options: RunJobsOptions = {}): Promise<{ results: T[]; resumed: number }> {
  const attempts = options.attempts ?? 3;
  const client = await connect(address);
  const eventsClient = await connect(address);
  const queue = new Queue(QUEUE_NAME, { connection: client });
  const events = new QueueEvents(QUEUE_NAME, { connection: eventsClient });
  const ids = payloads.map((_, i) => `${run}-${i}`);
  let timer: ReturnType<typeof setInterval> | undefined;
  try {
    await events.waitUntilReady();
    let resumed = 0;
    for (const id of ids) {
      const existing = await queue.getJob(id);
      if (existing && options.resume && (await existing.isCompleted())) resumed++;
      else if (existing) await existing.remove().catch(() => undefined);
    }
    for (const [i, payload] of payloads.entries()) {
      await queue.add(kind, { run, index: i, ...payload }, { jobId: ids[i], attempts, removeOnComplete: false, removeOnFail: false });
    }
    const results = new Map<number, T>();
    const indexOf = new Map(ids.map((id, i) => [id, i]));
    const report = async () => {
      const workers = await queue.getWorkersCount().catch(() => 0);
      const ordered = [...results.entries()].sort((a, b) => a[0] - b[0]).map(([, v]) => v);
      const note = [options.note?.(ordered) ?? '', `${workers} worker${workers === 1 ? '' : 's'}`].filter(Boolean).join(', ');
      options.onProgress?.(results.size, payloads.length, note);
    };
    await report();
    await new Promise<void>((resolveAll, rejectAll) => {
      let finished = false;
      const settle = async (id: string): Promise<void> => {
        const i = indexOf.get(id);
        if (i === undefined || results.has(i) || finished) return;
        // The state first, then the job: a job read before its state would carry no result if it finished in between.
        const state = await queue.getJobState(id);
        const job = state === 'unknown' ? undefined : await queue.getJob(id);
        if (state === 'completed' && job) {
          results.set(i, job.returnvalue as T);
          await report();
          if (results.size === payloads.length && !finished) {
            finished = true;
            resolveAll();
          }
        } else if (state === 'failed' || state === 'unknown' || !job) {
          finished = true;
          rejectAll(new Error(`a ${kind} job failed ${attempts} times, stopping the run: ${job?.failedReason ?? `job ${id} disappeared from the queue`}`));
        }
      };
      const fail = (e: unknown) => {
        if (finished) return;
        finished = true;
        rejectAll(e);
      };
      events.on('completed', ({ jobId }) => void settle(jobId).catch(fail));
      events.on('failed', ({ jobId }) => void settle(jobId).catch(fail));
      const sweep = async () => {
        for (const id of ids) await settle(id);
      };
      timer = setInterval(() => void sweep().catch(fail), 10_000);
      void sweep().catch(fail);
    });
    // Done: the jobs' results are not needed again.
    for (const id of ids) await (await queue.getJob(id))?.remove().catch(() => undefined);
    return { results: ids.map((_, i) => results.get(i)!), resumed };
  } finally {
    clearInterval(timer);
    await events.close();
    await queue.close();
    client.disconnect();
    eventsClient.disconnect();
  }
}
