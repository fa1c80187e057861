// Distributed top-k benchmark: the same scan (zfnet-small, its rectified maps, k 9) over N shapes images run
// locally in this process, on 1 and 2 workers through Redis, and on 1 and 2 workers each pinned to a core of its own
// (taskset: what one-core machines would do), every side with 1 onnxruntime thread; each repeat runs every side in
// turn, medians of the repeats. A redis-server is started on a free loopback port and stopped after.
//
//   npm run bench:distributed -- [--images 10000] [--shard-size 1000] [--repeats 3] [--record]
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { resolveTopkLayers, scanTopk, type TopkResult } from '../src/analysis/topk.js';
import { openDataset } from '../src/data/dataset.js';
import { parseQueueUrl } from '../src/distributed/connection.js';
import { distributedTopk } from '../src/distributed/topk.js';
import { Engine } from '../src/engine/engine.js';
import { createZooModel } from '../src/model/zoo.js';
import { median } from '../src/tensor.js';
import { codeCommit, intArg, ROOT } from './common.js';

const MODEL = 'zfnet-small';

function parseArgs(argv: string[]) {
  const args = { images: 10_000, shardSize: 1000, repeats: 3, record: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => argv[++i];
    if (a === '--images') args.images = intArg(a, value(), 1);
    else if (a === '--shard-size') args.shardSize = intArg(a, value(), 1);
    else if (a === '--repeats') args.repeats = intArg(a, value(), 1);
    else if (a === '--record') args.record = true;
    else throw new Error(`unknown argument ${a}; see the header of bench/distributed.ts`);
  }
  return args;
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** A worker with 1 onnxruntime thread; `cpu` pins the whole process to that core (taskset), as if it were a machine. */
function startWorker(url: string, cpu?: number): Promise<ChildProcess> {
  const command = [process.execPath, '--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts'), 'worker', '--queue', url, '--allow', ROOT, '--threads', '1'];
  const w = cpu === undefined ? spawn(command[0], command.slice(1), { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] }) : spawn('taskset', ['-c', String(cpu), ...command], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  return new Promise((resolve, reject) => {
    let seen = '';
    w.stderr!.on('data', (d) => {
      seen += d;
      if (seen.includes('worker: serving')) resolve(w);
    });
    w.on('exit', (code) => reject(new Error(`worker exited (${code}): ${seen}`)));
  });
}

function sameResult(a: TopkResult, b: TopkResult): boolean {
  return a.images === b.images && JSON.stringify(a.layers) === JSON.stringify(b.layers);
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const loadBefore = loadavg()[0];
  const port = await freePort();
  const redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const url = `redis://127.0.0.1:${port}/0`;
  for (let i = 0; i < 50 && spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).stdout.trim() !== 'PONG'; i++) await new Promise((r) => setTimeout(r, 100));
  const workers: ChildProcess[] = [];
  try {
    // Every timed run renders its images afresh (a new seed, so no process has them in its render cache): the local
    // scan and the workers do the same work, as they would decoding files they have not read before.
    const spec = (seed: number) => `shapes:count=${args.images},seed=${seed}`;
    const engine = new Engine(createZooModel(MODEL), { threads: 1 });
    const layers = resolveTopkLayers(engine);
    const options = { layers, k: 9, perImage: 1, batchSize: 64 };
    const indicesOf = async (seed: number) => {
      const ds = await openDataset(spec(seed), { split: 'train' });
      return { ds, indices: Array.from({ length: Math.min(args.images, ds.size) }, (_, i) => i) };
    };
    const { indices } = await indicesOf(0);
    const local = async (seed: number) => {
      const { ds, indices: idx } = await indicesOf(seed);
      return scanTopk(engine, ds, { ...options, indices: idx });
    };
    const distributed = async (seed: number) =>
      distributedTopk({ address: parseQueueUrl(url), model: { path: MODEL, seed: 0 }, data: { spec: spec(seed), split: 'train' }, ...options, indices, shardSize: args.shardSize });
    const times: Record<string, number[]> = { local: [], '1 worker': [], '2 workers': [], '1 pinned': [], '2 pinned': [] };
    const timed = async <T>(key: string, f: () => Promise<T>): Promise<T> => {
      const t = performance.now();
      const out = await f();
      times[key].push(performance.now() - t);
      return out;
    };
    // Each repeat runs every side in turn (the machine's load drifts over minutes): local, then 1 and 2 workers, then
    // 1 and 2 workers each pinned to a core of its own (taskset). Pinned, a worker no longer borrows the other core
    // (rendering on its JavaScript thread while onnxruntime runs), so 1 vs 2 compares one core-sized machine with two.
    const warm = () => distributedTopk({ address: parseQueueUrl(url), model: { path: MODEL, seed: 0 }, data: { spec: spec(0), split: 'train' }, ...options, indices: indices.slice(0, 64), shardSize: 8 });
    const stopAll = async () => {
      await Promise.all(workers.splice(0).map((w) => new Promise((resolve) => (w.exitCode !== null ? resolve(null) : (w.once('exit', resolve), w.kill('SIGTERM'))))));
    };
    // Every run renders its images afresh: each side gets its own seed (a worker keeps what it rendered).
    const seedOf = (r: number, side: number) => r * 10 + side;
    for (let r = 1; r <= args.repeats; r++) {
      await timed('local', () => local(seedOf(r, 0)));
      const results: [string, number, TopkResult][] = [];
      for (const [k, [one, two, cpus]] of ([['1 worker', '2 workers', [undefined, undefined]], ['1 pinned', '2 pinned', [0, 1]]] as const).entries()) {
        workers.push(await startWorker(url, cpus[0]));
        await warm();
        results.push([one, seedOf(r, 2 * k + 1), await timed(one, () => distributed(seedOf(r, 2 * k + 1)))]);
        workers.push(await startWorker(url, cpus[1]));
        await warm();
        results.push([two, seedOf(r, 2 * k + 2), await timed(two, () => distributed(seedOf(r, 2 * k + 2)))]);
        await stopAll();
      }
      // The first repeat's results are checked against local scans of the same images (not timed).
      if (r === 1) {
        for (const [key, seed, result] of results) if (!sameResult(await local(seed), result)) throw new Error(`${key}: the result differs from the local scan of the same images`);
      }
    }
    const m = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
    const rate = (ms: number) => ((indices.length / ms) * 1000).toFixed(0);
    const lines = [
      `### Distributed top-k: ${MODEL}, ${layers.length} layers, ${indices.length} shapes images, shards of ${args.shardSize}, 1 onnxruntime thread everywhere; median of ${args.repeats}`,
      '',
      '| run | seconds | images/s | vs local |',
      '|---|---|---|---|',
      `| local (in process) | ${(m.local / 1000).toFixed(2)} | ${rate(m.local)} | 1.00 |`,
      `| 1 worker through Redis | ${(m['1 worker'] / 1000).toFixed(2)} | ${rate(m['1 worker'])} | ${(m.local / m['1 worker']).toFixed(3)} (overhead ${(100 * (m['1 worker'] / m.local - 1)).toFixed(1)} %) |`,
      `| 2 workers through Redis | ${(m['2 workers'] / 1000).toFixed(2)} | ${rate(m['2 workers'])} | ${(m.local / m['2 workers']).toFixed(2)}; ${(m['1 worker'] / m['2 workers']).toFixed(2)}x one worker |`,
      `| 1 worker pinned to core 0 | ${(m['1 pinned'] / 1000).toFixed(2)} | ${rate(m['1 pinned'])} | ${(m.local / m['1 pinned']).toFixed(2)} |`,
      `| 2 workers pinned to cores 0 and 1 | ${(m['2 pinned'] / 1000).toFixed(2)} | ${rate(m['2 pinned'])} | ${(m.local / m['2 pinned']).toFixed(2)}; ${(m['1 pinned'] / m['2 pinned']).toFixed(2)}x one pinned worker |`,
      '',
      '- every side\'s result in the first repeat equals the local scan of the same images (checked after timing).',
      '- unpinned, a worker renders its images on its JavaScript thread while onnxruntime runs on the other core; pinned, both share one core. The coordinator (this process) and redis-server are not pinned.',
      `- Load average ${loadBefore.toFixed(2)} before, ${loadavg()[0].toFixed(2)} after.`,
    ];
    const text = lines.join('\n');
    console.log(text);
    if (args.record) {
      const date = new Date().toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
      appendFileSync(join(ROOT, 'bench', 'RESULTS.md'), `\n## ${date}: distributed top-k\n\nCode: commit ${codeCommit()}\n\nCommand: \`npm run bench:distributed -- ${process.argv.slice(2).join(' ')}\`\n\n${text}\n`);
      console.log('recorded in bench/RESULTS.md');
    }
    await engine.dispose();
  } finally {
    for (const w of workers) w.kill('SIGTERM');
    redis.kill('SIGKILL');
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
