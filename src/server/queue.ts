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
