// Sweeps on workers through Redis (BullMQ): the distributed top-k equals the local one file for file, also when a
// worker is killed with -9 mid-run and when the coordinator is killed and resumed; so do the localisation score,
// feature evolution and the linear probes;
// a job a worker must refuse stops the run with its reason. Each test run starts its own redis-server on a free loopback port.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseQueueUrl } from '../src/distributed/connection.js';
import { checkAllowed } from '../src/distributed/jobs.js';
import { ROOT } from './helpers.js';

const CLI = join(ROOT, 'src', 'cli', 'main.ts');
const REDIS = '/usr/bin/redis-server';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

function cli(args: string[]): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Runs a CLI process to its end: exit code and output. */
function finish(p: ChildProcess): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  p.stdout!.on('data', (d) => (stdout += d));
  p.stderr!.on('data', (d) => (stderr += d));
  return new Promise((resolve) => p.on('close', (code) => resolve({ code, stdout, stderr })));
}

/** Resolves once the process's stderr has printed a line matching `pattern`. */
function waitFor(p: ChildProcess, pattern: RegExp, timeoutMs = 60_000): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${pattern}; saw: ${seen.slice(-500)}`)), timeoutMs);
    p.stderr!.on('data', (d) => {
      seen += d;
      if (pattern.test(seen)) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

describe('queue addresses and allowed roots', () => {
  test('redis URLs: password, user, database, TLS; anything else is one clear error', () => {
    assert.deepEqual(parseQueueUrl('redis://:s%40cret@10.0.0.5:6380/3'), { host: '10.0.0.5', port: 6380, db: 3, username: undefined, password: 's@cret', tls: false });
    assert.deepEqual(parseQueueUrl('rediss://bob:pw@cache.example'), { host: 'cache.example', port: 6379, db: 0, username: 'bob', password: 'pw', tls: true });
    assert.throws(() => parseQueueUrl('http://host:6379'), /redis:\/\/ or rediss:\/\//);
    assert.throws(() => parseQueueUrl('redis://host/abc'), /database must be a number/);
    assert.throws(() => parseQueueUrl('not a url'), /--queue must be a URL/);
  });

  test('a path outside every root is refused, also through .. and a symbolic link', () => {
    const root = mkdtempSync(join(tmpdir(), 'convscope-allow-'));
    checkAllowed(join(root, 'model.onnx'), [root], 'model');
    assert.throws(() => checkAllowed(join(root, '..', 'x.onnx'), [root], 'model'), /model .* is outside the roots this worker serves/);
    spawnSync('ln', ['-s', '/etc', join(root, 'etc')]);
    assert.throws(() => checkAllowed(join(root, 'etc', 'passwd'), [root], 'data'), /outside the roots/);
  });
});

describe('distributed top-k through Redis', { timeout: 300_000 }, () => {
  let redis: ChildProcess;
  let url: string;
  const workers: ChildProcess[] = [];
  const out = mkdtempSync(join(tmpdir(), 'convscope-dist-'));
  // 48 shards of 8 images: small jobs, so that kills land mid-run.
  const scan = ['topk', '--model', 'zfnet-small', '--data', 'shapes:count=384', '--layers', 'relu2,relu5', '--per-page', '64'];

  /** Everything each worker printed (its job lines). */
  const logs = new Map<ChildProcess, string>();
  const startWorker = async (extra: string[] = []) => {
    // Two roots (--allow repeats): the repository (zoo and fixtures) and this test's folder (trained snapshots).
    const w = cli(['worker', '--queue', url, '--allow', ROOT, '--allow', out, '--threads', '1', '--lock-seconds', '2', ...extra]);
    workers.push(w);
    logs.set(w, '');
    w.stderr!.on('data', (d) => logs.set(w, logs.get(w) + String(d)));
    await waitFor(w, /worker: serving/);
    return w;
  };

  before(async () => {
    assert.ok(existsSync(REDIS), `no ${REDIS}: install Debian's redis-server (.ci/run does)`);
    const port = await freePort();
    redis = spawn(REDIS, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    url = `redis://127.0.0.1:${port}/0`;
    // Ready when a worker can connect.
    for (let i = 0; i < 50; i++) {
      const probe = spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' });
      if (probe.stdout.trim() === 'PONG') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const local = await finish(cli([...scan, '--out', join(out, 'local')]));
    assert.equal(local.code, 0, local.stderr);
  });

  after(() => {
    for (const w of workers) w.kill('SIGKILL');
    redis?.kill('SIGKILL');
  });

  const sameAsLocal = (dir: string) => {
    for (const f of ['index.json', 'relu2/projections.npy', 'relu5/projections.npy', 'relu5/page-01.png']) {
      assert.ok(readFileSync(join(dir, f)).equals(readFileSync(join(out, 'local', f))), `${f} differs from the local run`);
    }
  };

  test('two workers give the local result (scan and projections); one killed with -9 mid-run loses nothing', async () => {
    const w1 = await startWorker();
    await startWorker();
    const coordinator = cli([...scan, '--queue', url, '--shard-size', '8', '--out', join(out, 'killed')]);
    const done = finish(coordinator);
    // Its first job loads the model and builds the engine's graphs first: killed there, it dies holding the job,
    // which BullMQ finds stalled once the lock (2 s here) lapses and gives to the other worker.
    await waitFor(w1, /job \S+ \(topk-shard\) started/);
    w1.kill('SIGKILL');
    const r = await done;
    assert.equal(r.code, 0, r.stderr);
    sameAsLocal(join(out, 'killed'));
    // The scan and the projections both ran on the workers.
    const all = [...logs.values()].join('');
    assert.match(all, /\(topk-shard\) started/);
    assert.match(all, /\(topk-project\) started/);
  });

  test('a coordinator killed and restarted with --resume reuses the finished shards and gives the same result', async () => {
    if (workers.filter((w) => w.exitCode === null && w.signalCode === null).length === 0) await startWorker();
    const args = [...scan, '--queue', url, '--shard-size', '8', '--out', join(out, 'resumed')];
    const worker = workers.find((w) => w.exitCode === null && w.signalCode === null)!;
    const first = cli(args);
    const firstDone = finish(first);
    // Killed once workers have finished a few of its shards (they go on with the rest, which stay in Redis).
    await waitFor(worker, /(job \S+ done[\s\S]*){3}/);
    first.kill('SIGKILL');
    const killed = await firstDone;
    assert.equal(killed.code, null, 'the first coordinator was killed before it finished');
    const again = await finish(cli([...args, '--resume']));
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /topk: reused \d+ shards finished before/);
    sameAsLocal(join(out, 'resumed'));
  });

  test('the localisation score through the queue, an image per job, equals the local one', async () => {
    if (workers.filter((w) => w.exitCode === null && w.signalCode === null).length === 0) await startWorker();
    const args = ['occlude', '--model', 'zfnet-small', '--data', 'shapes:count=64', '--score', '--count', '6'];
    const local = await finish(cli([...args, '--out', join(out, 'score-local')]));
    assert.equal(local.code, 0, local.stderr);
    const remote = await finish(cli([...args, '--queue', url, '--out', join(out, 'score-queue')]));
    assert.equal(remote.code, 0, remote.stderr);
    assert.equal(remote.stdout, local.stdout);
    for (const f of ['score.json', 'score.md']) assert.ok(readFileSync(join(out, 'score-queue', f)).equals(readFileSync(join(out, 'score-local', f))), f);
  });

  test('feature evolution with each snapshot scanned through the queue equals the local one', async () => {
    if (workers.filter((w) => w.exitCode === null && w.signalCode === null).length === 0) await startWorker();
    const trained = await finish(cli(['train', '--model', 'zfnet-small', '--data', 'shapes:count=96', '--epochs', '2', '--out', join(out, 'train')]));
    assert.equal(trained.code, 0, trained.stderr);
    const args = ['evolve', '--snapshots', join(out, 'train', 'snapshots'), '--data', 'shapes:count=96', '--count', '40', '--layers', 'relu2,relu5', '--features', '4'];
    const local = await finish(cli([...args, '--out', join(out, 'evolve-local')]));
    assert.equal(local.code, 0, local.stderr);
    const remote = await finish(cli([...args, '--queue', url, '--shard-size', '16', '--out', join(out, 'evolve-queue')]));
    assert.equal(remote.code, 0, remote.stderr);
    assert.equal(remote.stdout.replace(/evolve-queue/g, 'X'), local.stdout.replace(/evolve-local/g, 'X'));
    for (const f of ['evolution.json', 'evolution-relu5.png']) assert.ok(readFileSync(join(out, 'evolve-queue', f)).equals(readFileSync(join(out, 'evolve-local', f))), f);
  });

  test('linear probes with the features extracted on workers (the trained and the random-init model) equal the local ones', async () => {
    if (workers.filter((w) => w.exitCode === null && w.signalCode === null).length === 0) await startWorker();
    const args = ['probe', '--model', 'zfnet-small', '--train', 'shapes:count=80,classes=0-3', '--test', 'shapes:count=80,classes=0-3', '--layers', 'relu2,relu5', '--per-class', '4', '--splits', '2', '--max-test', '24', '--baseline'];
    const local = await finish(cli([...args, '--out', join(out, 'probe-local')]));
    assert.equal(local.code, 0, local.stderr);
    const remote = await finish(cli([...args, '--queue', url, '--shard-size', '10', '--out', join(out, 'probe-queue')]));
    assert.equal(remote.code, 0, remote.stderr);
    assert.ok(readFileSync(join(out, 'probe-queue', 'probe.json')).equals(readFileSync(join(out, 'probe-local', 'probe.json'))), 'probe.json');
  });

  test('a job the worker must refuse (a model outside its roots) stops the run after three attempts, in one line', async () => {
    const outside = mkdtempSync(join(tmpdir(), 'convscope-outside-'));
    const model = join(outside, 'model.onnx');
    spawnSync('cp', [join(ROOT, '..', 'shared', 'fixtures', 'small', 'model.onnx'), model]);
    const r = await finish(cli(['topk', '--model', model, '--data', 'shapes:count=16', '--layers', 'relu5', '--queue', url, '--shard-size', '8', '--out', join(out, 'never')]));
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /a topk-shard job failed 3 times, stopping the run: model .*model\.onnx is outside the roots this worker serves/);
    assert.ok(!existsSync(join(out, 'never', 'index.json')));
  });
});
