import { AsyncLocalStorage } from 'node:async_hooks';
import type { EngineGate } from '../engine/engine.js';
// One engine serves every request: ORT sessions are not ours to run concurrently, and a burst of requests must
// wait its turn rather than multiply memory or crash the process.

/** Runs tasks one at a time, in the order they were submitted; a failed task does not stop the ones after it. */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();
  private waiting = 0;

  /** Tasks submitted and not yet finished (including the one running). */
  get pending(): number {
    return this.waiting;
  }

  run<T>(task: () => Promise<T>): Promise<T> {
    this.waiting++;
    const result = this.tail.then(task, task);
    // The chain must continue whatever this task does, and the caller gets the task's own outcome.
    this.tail = result.then(
      () => undefined,
      () => undefined,
    ).finally(() => {
      this.waiting--;
    });
    return result;
  }
}

/**
 * A gate for the engine's session runs with two lanes: work started inside `background` (occlusion jobs) waits while
 * any other run wants the engine, so a click is answered between two batches of a job, not after the whole job.
 */
export class LaneGate implements EngineGate {
  private readonly lane = new AsyncLocalStorage<'background'>();
  private busy = false;
  private readonly waiting = { interactive: [] as (() => void)[], background: [] as (() => void)[] };

  background<T>(task: () => Promise<T>): Promise<T> {
    return this.lane.run('background', task);
  }

  async enter(): Promise<() => void> {
    if (this.busy) await new Promise<void>((resolve) => this.waiting[this.lane.getStore() ?? 'interactive'].push(resolve));
    // Handed over by leave(), or free: either way this run holds the engine now.
    this.busy = true;
    return () => {
      const next = this.waiting.interactive.shift() ?? this.waiting.background.shift();
      if (next) next();
      else this.busy = false;
    };
  }
}
