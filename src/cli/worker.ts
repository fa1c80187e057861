// `convscope worker`: serve sweep jobs from a Redis queue until SIGINT or SIGTERM (finishing the running job first).
import { describeAddress, parseQueueUrl } from '../distributed/connection.js';
import { startWorker } from '../distributed/worker.js';
import type { Command } from './args.js';

export const workerCommand: Command = {
  summary: 'takes sweep jobs (topk --queue) from Redis until stopped; any machine that reads the data and the model can be one',
  options: {
    queue: { value: true, help: 'redis://[:password@]HOST:PORT[/DB], or rediss:// for TLS' },
    allow: { value: true, repeatable: true, help: 'a root folder the jobs\' model and data paths must lie under; repeat for more (default: the current folder)' },
    concurrency: { value: true, help: 'jobs at once', default: 1 },
    threads: { value: true, help: 'onnxruntime threads per job (default: the cores available)' },
    'lock-seconds': { value: true, help: 'a job whose worker stops renewing its lock this long goes to another worker', default: 30 },
  },
  async run(o) {
    const address = parseQueueUrl(o.required('queue'));
    const allow = o.list('allow');
    const worker = await startWorker({
      address,
      allow: allow.length > 0 ? allow : [process.cwd()],
      concurrency: o.int('concurrency', 1),
      threads: o.has('threads') ? o.int('threads', 1) : undefined,
      lockMs: 1000 * o.int('lock-seconds', 1),
      onEvent: (line) => process.stderr.write(`worker: ${line}\n`),
    });
    process.stderr.write(`worker: serving ${describeAddress(address)} (roots ${allow.length > 0 ? allow.join(', ') : process.cwd()})\n`);
    const stop = () => {
      process.stderr.write('worker: stopping after the running job\n');
      void worker.close();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    await worker.closed;
  },
};
