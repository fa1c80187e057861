/**
 * Results of task(0..n-1) in order, with at most `concurrency` running and at most `window` started ahead of the
 * consumer: decoding overlaps the consumer's work while memory stays bounded. Tasks must not reject.
 */
export async function* ordered<T>(n: number, task: (k: number) => Promise<T>, concurrency: number, window: number): AsyncGenerator<T> {
  const pending = new Map<number, Promise<T>>();
  let started = 0, running = 0, consumed = 0, stopped = false;
  const pump = (): void => {
    while (!stopped && started < n && running < concurrency && started < consumed + window) {
      const k = started++;
      running++;
      pending.set(
        k,
        task(k).finally(() => {
          running--;
          pump();
        }),
      );
    }
  };
  try {
    while (consumed < n) {
      pump();
      const r = await pending.get(consumed)!;
      pending.delete(consumed);
      consumed++;
      yield r;
    }
  } finally {
    stopped = true;
  }
}
