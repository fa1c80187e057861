// `convscope serve`'s HTTP API, in process on a free port: every endpoint against the library called directly,
// path traversal, 50 requests at once, upload limits and bad input. Requests that must reach the server byte for
// byte (traversal) go through node:http, because fetch normalises '..' and '%2e%2e' before sending.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { request } from 'node:http';
import { crc32, deflateSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { projectUnit, ZF_SETTINGS } from '../src/analysis/project.js';
import { scanTopk } from '../src/analysis/topk.js';
import { topkFigureViews } from '../src/analysis/topk-views.js';
import { openDataset, type Dataset } from '../src/data/dataset.js';
import { loadInput } from '../src/data/image.js';
import { Engine } from '../src/engine/engine.js';
import type { Model } from '../src/model/layers.js';
import { readSafetensorsModel } from '../src/model/safetensors.js';
import { projectionToImage } from '../src/render/figure.js';
import { writeTopk, type TopkIndex } from '../src/report/topk.js';
import { startServer, type RunningServer } from '../src/server/server.js';
import { MAX_ACTIVE_JOBS } from '../src/server/viewer.js';
import { readNpy, type Tensor } from '../src/tensor.js';
import { fixture } from './helpers.js';

interface Raw {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** What the viewer's own page sends with a state-changing request (server/guard.ts). */
const OWN_PAGE = { 'x-convscope': '1' };

/** A request whose path and headers are sent exactly as written (a Host header of our choosing, too). */
function raw(base: string, path: string, method = 'GET', body?: Buffer, headers: Record<string, string> = OWN_PAGE): Promise<Raw> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path, method, headers: body ? { ...headers, 'content-length': body.length } : headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function json(base: string, path: string, init?: RequestInit): Promise<{ status: number; body: any }> {
  const res = await fetch(new URL(path, base), init);
  return { status: res.status, body: await res.json() };
}

/** Decoded pixels of a PNG answer, checked to be one. */
async function png(res: Response): Promise<{ width: number; height: number; channels: number; data: Buffer }> {
  assert.equal(res.status, 200, `${res.url}: ${res.status}`);
  assert.equal(res.headers.get('content-type'), 'image/png');
  const { data, info } = await sharp(Buffer.from(await res.arrayBuffer())).raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, channels: info.channels, data };
}

/** A JSON 4xx whose message is one line: the contract for every bad request. */
async function assertClientError(res: Response | Raw, status: number, what: string): Promise<string> {
  const body = 'body' in res && Buffer.isBuffer(res.body) ? JSON.parse(res.body.toString()) : await (res as Response).json();
  assert.equal(res.status, status, `${what}: got ${res.status} ${JSON.stringify(body)}`);
  assert.equal(typeof body.error, 'string', what);
  assert.ok(body.error.length > 0 && !body.error.includes('\n'), `${what}: one-line error, got ${JSON.stringify(body.error)}`);
  return body.error;
}

describe('convscope serve API', { timeout: 120_000 }, () => {
  let model: Model;
  let data: Dataset;
  let live: RunningServer;
  let fromFolder: RunningServer;
  let engine: Engine;
  let topkDir: string;
  let index: TopkIndex;
  let fixtureInput: Tensor;
  const PNG_BYTES = readFileSync(fixture('input.png'));

  before(async () => {
    model = readSafetensorsModel(fixture('weights.safetensors'));
    data = await openDataset('shapes:count=24', { split: 'val' });
    engine = new Engine(model);
    fixtureInput = await loadInput(fixture('input.png'), model);
    // A small `convscope topk` folder, written by the same library the CLI uses.
    topkDir = mkdtempSync(join(tmpdir(), 'convscope-serve-topk-'));
    const result = await scanTopk(engine, data, { layers: ['relu1'], k: 9 });
    index = await writeTopk(topkFigureViews(engine, data, result, { perPage: 16 }), topkDir);
    // A link out of the served folder: following it would read a file outside.
    symlinkSync('/etc/hostname', join(topkDir, 'escape.txt'));
    live = await startServer({ model, data, scanLimit: 24, uploadLimit: 10 * 1024 * 1024 });
    fromFolder = await startServer({ model, topkDir });
  });

  after(async () => {
    await live?.close();
    await fromFolder?.close();
    await engine?.dispose();
    if (topkDir) rmSync(topkDir, { recursive: true, force: true });
  });

  it('binds 127.0.0.1 by default and serves the viewer page', async () => {
    assert.match(live.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    const res = await fetch(live.url);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type')!, /text\/html/);
    assert.match(await res.text(), /<script src="\/app\.js">/);
    assert.equal((await fetch(new URL('/app.js', live.url))).status, 200);
  });

  it('describes the model: layers, shapes, receptive fields, data and top-9 source', async () => {
    const { status, body } = await json(live.url, '/api/model');
    assert.equal(status, 200);
    assert.deepEqual(body.input, [3, 64, 64]);
    assert.equal(body.layers.length, engine.infos.length);
    const relu5 = body.layers.find((l: { name: string }) => l.name === 'relu5');
    assert.deepEqual(relu5.outShape, [64, 4, 4]);
    assert.deepEqual(relu5.receptiveField.size, [139, 139]);
    assert.equal(body.data.size, 24);
    assert.equal(body.topk.source, 'live');
    assert.ok(body.topk.layers.includes('relu1') && body.topk.layers.includes('relu5'));
    const folder = await json(fromFolder.url, '/api/model');
    assert.deepEqual(folder.body.topk, { layers: ['relu1'], source: 'topk' });
    assert.equal(folder.body.data, null);
  });

  let uploaded: string;

  it('takes an uploaded image and gives the activations the engine gives', async () => {
    const up = await json(live.url, '/api/images', { method: 'POST', body: PNG_BYTES, headers: { ...OWN_PAGE, 'x-filename': 'input.png' } });
    assert.equal(up.status, 201);
    uploaded = up.body.id;
    const img = await png(await fetch(new URL(up.body.url, live.url)));
    assert.deepEqual([img.width, img.height], [64, 64]);
    const { body } = await json(live.url, `/api/images/${uploaded}/activations?layer=relu5`);
    const act = (await engine.forward(fixtureInput, ['relu5'])).activations.get('relu5')!;
    assert.deepEqual(body.shape, [64, 4, 4]);
    for (const f of [0, 8, 19, 59]) {
      const want = Math.max(...act.data.subarray(f * 16, (f + 1) * 16));
      assert.ok(Math.abs(body.features[f].max - want) <= 1e-5 * Math.max(1, want), `feature ${f}: ${body.features[f].max} vs ${want}`);
    }
  });

  it('draws one feature map at the map size, or all maps in a grid', async () => {
    const one = await png(await fetch(new URL(`/api/images/${uploaded}/activation.png?layer=relu2&feature=3`, live.url)));
    assert.deepEqual([one.width, one.height], [8, 8]);
    assert.ok(new Set(one.data).size > 1, 'a real feature map is not one colour');
    const all = await png(await fetch(new URL(`/api/images/${uploaded}/activation.png?layer=relu2`, live.url)));
    assert.ok(all.width > 8 * 7 && all.height > 8 * 7, `64 maps in a grid: ${all.width}x${all.height}`);
  });

  it('projects a clicked unit exactly as projectUnit does, for each rule', async () => {
    const pixels: Buffer[] = [];
    for (const rule of ['deconvnet', 'gradient', 'guided'] as const) {
      const res = await fetch(new URL(`/api/images/${uploaded}/projection.png?layer=relu5&feature=19&y=1&x=2&rule=${rule}`, live.url));
      const unit = JSON.parse(res.headers.get('x-convscope-unit')!);
      const got = await png(res);
      const want = await projectUnit(engine, fixtureInput, 'relu5', 19, [1, 2], { ...ZF_SETTINGS, rule });
      assert.deepEqual({ y: unit.y, x: unit.x, feature: unit.feature }, { y: 1, x: 2, feature: 19 });
      assert.ok(Math.abs(unit.value - want.value) <= 1e-5 * Math.max(1, Math.abs(want.value)));
      assert.ok(Buffer.from(projectionToImage(want.projection).data).equals(got.data), `${rule}: pixels differ from the library's`);
      pixels.push(got.data);
    }
    assert.ok(!pixels[0].equals(pixels[1]), 'deconvnet and gradient give different projections');
    const max = await fetch(new URL(`/api/images/${uploaded}/projection.png?layer=relu5&feature=19`, live.url));
    const want = await projectUnit(engine, fixtureInput, 'relu5', 19, 'max', ZF_SETTINGS);
    assert.deepEqual(JSON.parse(max.headers.get('x-convscope-unit')!).y, want.unit.y);
  });

  it('picks a dataset image by index', async () => {
    const pick = await json(live.url, '/api/dataset/5', { method: 'POST', headers: OWN_PAGE });
    assert.equal(pick.status, 201);
    assert.equal(pick.body.name, data.itemName(5));
    assert.equal(pick.body.label, data.label(5));
    await assertClientError(await fetch(new URL('/api/dataset/24', live.url), { method: 'POST', headers: OWN_PAGE }), 400, 'index past the end');
    await assertClientError(await fetch(new URL('/api/dataset/0', fromFolder.url), { method: 'POST', headers: OWN_PAGE }), 404, 'no --data');
  });

  it('ranks a feature live over --data: 9 entries, best first, with projection and patch PNGs', async () => {
    const { status, body } = await json(live.url, '/api/topk/relu2/3');
    assert.equal(status, 200);
    assert.equal(body.source, 'live');
    assert.equal(body.entries.length, 9);
    for (let i = 1; i < 9; i++) assert.ok(body.entries[i - 1].value >= body.entries[i].value, 'sorted best first');
    const scan = await scanTopk(engine, data, { layers: ['relu2'], k: 9 });
    assert.deepEqual(body.entries.map((e: { image: number }) => e.image), scan.layers[0].features[3].map((e) => e.image));
    const proj = await png(await fetch(new URL('/api/topk/relu2/3/0/projection.png', live.url)));
    const patch = await png(await fetch(new URL('/api/topk/relu2/3/0/patch.png', live.url)));
    assert.ok(new Set(proj.data).size > 1, 'projection is not blank');
    assert.ok(patch.width > 0 && patch.width <= 27, `patch is the clipped 27 px field: ${patch.width}`);
  });

  it('serves a --topk folder: its entries, projections from the .npy, its pages', async () => {
    const { body } = await json(fromFolder.url, '/api/topk/relu1/0');
    assert.equal(body.source, 'topk');
    assert.deepEqual(body.entries.map((e: { image: number }) => e.image), index.layers[0].features[0].entries.map((e) => e.image));
    const npy = readNpy(join(topkDir, index.layers[0].npy));
    const [, k, C, h, w] = npy.shape;
    const at = (0 * k + 2) * C * h * w;
    const want = projectionToImage({ shape: [C, h, w], data: npy.data.subarray(at, at + C * h * w) });
    const got = await png(await fetch(new URL('/api/topk/relu1/0/2/projection.png', fromFolder.url)));
    assert.ok(Buffer.from(want.data).equals(got.data), 'projection PNG is the .npy frame');
    await assertClientError(await fetch(new URL('/api/topk/relu1/0/2/patch.png', fromFolder.url)), 404, 'patch without --data');
    await assertClientError(await fetch(new URL('/api/topk/relu5/0', fromFolder.url)), 404, 'layer not in the folder');
    const page = await fetch(new URL(`/topk/${body.page}`, fromFolder.url));
    assert.equal(page.status, 200);
    assert.ok(Buffer.from(await page.arrayBuffer()).equals(readFileSync(join(topkDir, body.page))));
  });

  it('runs an occlusion map as a job with progress', async () => {
    const start = await json(live.url, `/api/images/${uploaded}/occlusion?window=16&stride=8`, { method: 'POST', headers: OWN_PAGE });
    assert.equal(start.status, 202);
    let job = start.body;
    while (job.state === 'queued' || job.state === 'running') {
      await new Promise((r) => setTimeout(r, 20));
      job = (await json(live.url, start.body.url)).body;
    }
    assert.equal(job.state, 'done', job.error);
    assert.ok(job.total > 0 && job.done === job.total, `progress ${job.done}/${job.total}`);
    assert.equal(job.result.layer, 'relu5');
    assert.equal(job.result.rows * job.result.cols, job.total);
    assert.ok(job.result.minProbability <= job.result.unoccluded.probability + 1e-6);
    const map = await png(await fetch(new URL(`/api/jobs/${job.id}/probability.png`, live.url)));
    assert.deepEqual([map.width, map.height], [64, 64]);
    await assertClientError(await fetch(new URL('/api/jobs/nosuchjob', live.url)), 404, 'unknown job');
  });

  it('bounds the occlusion jobs a page can queue (429), and keeps the ids of jobs still running', async () => {
    const post = () => json(live.url, `/api/images/${uploaded}/occlusion?window=8&stride=1`, { method: 'POST', headers: OWN_PAGE });
    const accepted = [];
    for (let i = 0; i < MAX_ACTIVE_JOBS; i++) {
      const r = await post();
      assert.equal(r.status, 202, `job ${i}`);
      accepted.push(r.body);
    }
    const refused = await post();
    assert.equal(refused.status, 429);
    assert.match(refused.body.error, /^4 occlusion jobs are queued or running; wait for one to finish$/);
    for (const started of accepted) {
      let job = started;
      while (job.state === 'queued' || job.state === 'running') {
        await new Promise((r) => setTimeout(r, 20));
        const polled = await json(live.url, started.url);
        assert.equal(polled.status, 200, 'a queued job keeps its id');
        job = polled.body;
      }
      assert.equal(job.state, 'done', job.error);
    }
    assert.equal((await post()).status, 202, 'accepted again once the queue has drained');
  });

  it('a projection overtakes a running occlusion job: answered between two of its batches, the job still running', async () => {
    const started = (await json(live.url, `/api/images/${uploaded}/occlusion?window=4&stride=1`, { method: 'POST', headers: OWN_PAGE })).body;
    let job = (await json(live.url, started.url)).body;
    while (job.state === 'queued' || (job.state === 'running' && job.done === 0)) {
      await new Promise((r) => setTimeout(r, 20));
      job = (await json(live.url, started.url)).body;
    }
    assert.equal(job.state, 'running');
    const res = await fetch(new URL(`/api/images/${uploaded}/projection.png?layer=relu2&feature=0`, live.url));
    assert.equal(res.status, 200);
    const after = (await json(live.url, started.url)).body;
    assert.ok(after.state === 'running' && after.done < after.total, `the job had not finished: ${after.state} ${after.done}/${after.total}`);
    assert.equal((await json(live.url, started.url, { method: 'DELETE', headers: OWN_PAGE })).status, 202);
    while ((await json(live.url, started.url)).body.state === 'running') await new Promise((r) => setTimeout(r, 20));
  });

  it('cancels a running occlusion job and a queued one (DELETE /api/jobs/ID), freeing the engine for others', async () => {
    // window 4 stride 1 at 64 px: 3721 positions, seconds of work; the second job waits behind the first.
    const post = () => json(live.url, `/api/images/${uploaded}/occlusion?window=4&stride=1`, { method: 'POST', headers: OWN_PAGE });
    const running = (await post()).body;
    const queued = (await post()).body;
    assert.equal((await raw(live.url, running.url, 'DELETE', undefined, { host: new URL(live.url).host })).status, 403, 'DELETE needs the page header');
    let job = (await json(live.url, running.url)).body;
    while (job.state === 'queued' || (job.state === 'running' && job.done === 0)) {
      await new Promise((r) => setTimeout(r, 20));
      job = (await json(live.url, running.url)).body;
    }
    const cancelQueued = await json(live.url, queued.url, { method: 'DELETE', headers: OWN_PAGE });
    assert.equal(cancelQueued.status, 202);
    assert.equal((await json(live.url, running.url, { method: 'DELETE', headers: OWN_PAGE })).status, 202);
    for (const url of [running.url, queued.url]) {
      let j = (await json(live.url, url)).body;
      while (j.state === 'queued' || j.state === 'running') {
        await new Promise((r) => setTimeout(r, 20));
        j = (await json(live.url, url)).body;
      }
      assert.equal(j.state, 'cancelled', `${url}: ${j.error ?? ''}`);
    }
    const stopped = (await json(live.url, running.url)).body;
    assert.ok(stopped.done < stopped.total, `stopped part way: ${stopped.done}/${stopped.total}`);
    assert.equal((await json(live.url, queued.url)).body.done, 0, 'the queued job never ran');
    // A projection is answered at once afterwards.
    const t = Date.now();
    assert.equal((await fetch(new URL(`/api/images/${uploaded}/projection.png?layer=relu2&feature=0`, live.url))).status, 200);
    assert.ok(Date.now() - t < 5000);
  });

  it('refuses a --topk folder made from other data, in one line, and serves it with its own data', async () => {
    assert.equal(index.datasetId?.size, 24);
    const other = await openDataset('shapes:count=24,seed=5', { split: 'val' });
    await assert.rejects(startServer({ model, data: other, topkDir }), (e: Error) => {
      assert.match(e.message, /^--topk .* was made from shapes:.*seed=0.* \(24 images\), not from shapes:.*seed=5.* \(24 images\): give the --data it was made from$/);
      return true;
    });
    const bigger = await openDataset('shapes:count=48', { split: 'val' });
    await assert.rejects(startServer({ model, data: bigger, topkDir }), /not from shapes:.*\(48 images\)/);
    const same = await startServer({ model, data: await openDataset('shapes:count=24', { split: 'val' }), topkDir });
    await same.close();
  });

  it('refuses a decompression bomb from its header, before decoding it', async () => {
    // A PNG that declares 16383x16383 RGB (805 MB decoded) in a few dozen bytes.
    const chunk = (type: string, data: Buffer) => {
      const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
      const len = Buffer.alloc(4);
      len.writeUInt32BE(data.length);
      const crc = Buffer.alloc(4);
      crc.writeUInt32BE(crc32(body) >>> 0);
      return Buffer.concat([len, body, crc]);
    };
    const ihdr = Buffer.alloc(13);
    ihdr.writeUInt32BE(16383, 0);
    ihdr.writeUInt32BE(16383, 4);
    ihdr[8] = 8;
    ihdr[9] = 2;
    const bomb = Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(Buffer.alloc(0))), chunk('IEND', Buffer.alloc(0))]);
    const rss = process.memoryUsage().rss;
    const msg = await assertClientError(await fetch(new URL('/api/images', live.url), { method: 'POST', body: bomb, headers: OWN_PAGE }), 400, 'bomb');
    assert.match(msg, /is 16383x16383 \(268\.4 megapixels\); the limit is 50 megapixels$/);
    assert.ok(process.memoryUsage().rss - rss < 100e6, 'nothing was decoded');
  });

  it('reads no file outside the served folders', async () => {
    const attempts = [
      '/../package.json', '/..%2fpackage.json', '/%2e%2e/package.json', '/%2e%2e%2fpackage.json', '/%2E%2E/%2E%2E/etc/hostname',
      '/web/../../package.json', '//etc/hostname', '/%2fetc%2fhostname', '/etc/hostname', '/..%5cpackage.json', '/%00index.html',
      '/topk/../package.json', '/topk/%2e%2e/%2e%2e/etc/hostname', '/topk//etc/hostname', '/topk/escape.txt', '/topk/%2e%2e%2findex.json',
      '/api/../package.json', '/index.html%00.png',
    ];
    const secret = readFileSync('/etc/hostname');
    const pkg = readFileSync(join(import.meta.dirname, '..', 'package.json'));
    for (const server of [live, fromFolder]) {
      for (const path of attempts) {
        const res = await raw(server.url, path);
        assert.ok(res.status >= 400 && res.status < 500, `${path}: status ${res.status}`);
        assert.ok(!res.body.includes(pkg) && !(secret.length > 1 && res.body.includes(secret)), `${path}: leaked a file`);
      }
    }
    // The folder's own files still come through.
    assert.equal((await raw(fromFolder.url, '/topk/index.json')).status, 200);
    assert.equal((await raw(fromFolder.url, '/topk/relu1/%70age-01.png')).status, 200);
  });

  it('answers 50 concurrent requests, each correctly, through one engine', async () => {
    const units = Array.from({ length: 50 }, (_, i) => ({ feature: (i * 7) % 64, y: i % 4, x: (i >> 2) % 4 }));
    // Count engine calls in flight: the queue must hold it at one, whatever ORT would tolerate.
    const eng = live.viewer.engine;
    let inFlight = 0, most = 0;
    const track = <A extends unknown[], R>(f: (...a: A) => Promise<R>) => async (...a: A): Promise<R> => {
      most = Math.max(most, ++inFlight);
      try {
        return await f(...a);
      } finally {
        inFlight--;
      }
    };
    const { forward, backward } = eng;
    eng.forward = track(forward.bind(eng));
    eng.backward = track(backward.bind(eng));
    const answers = await Promise.all(units.map(async (u, i) => {
      // Every fifth is a different kind of request, so the queue interleaves graphs.
      if (i % 5 === 4) return { kind: 'summary' as const, body: (await json(live.url, `/api/images/${uploaded}/activations?layer=relu3`)).body };
      const res = await fetch(new URL(`/api/images/${uploaded}/projection.png?layer=relu5&feature=${u.feature}&y=${u.y}&x=${u.x}`, live.url));
      return { kind: 'projection' as const, pixels: (await png(res)).data };
    }));
    eng.forward = forward;
    eng.backward = backward;
    assert.equal(most, 1, 'engine calls overlapped');
    const relu3 = (await engine.forward(fixtureInput, ['relu3'])).activations.get('relu3')!;
    for (const [i, a] of answers.entries()) {
      if (a.kind === 'summary') {
        assert.equal(a.body.features.length, 96);
        assert.ok(Math.abs(a.body.features[1].max - Math.max(...relu3.data.subarray(16, 32))) < 1e-4);
        continue;
      }
      const u = units[i];
      const want = await projectUnit(engine, fixtureInput, 'relu5', u.feature, [u.y, u.x], ZF_SETTINGS);
      assert.ok(Buffer.from(projectionToImage(want.projection).data).equals(a.pixels), `request ${i} (${JSON.stringify(u)}) got another unit's projection`);
    }
    assert.equal(live.viewer.queue.pending, 0);
  });

  it('refuses an upload over the limit with 413, declared or streamed', async () => {
    const big = Buffer.alloc(10 * 1024 * 1024 + 1, 7);
    await assertClientError(await raw(live.url, '/api/images', 'POST', big), 413, 'declared length');
    // Chunked: no length up front, so the limit is enforced while reading.
    const status = await new Promise<number>((resolve, reject) => {
      const url = new URL(live.url);
      const req = request({ host: url.hostname, port: url.port, path: '/api/images', method: 'POST', headers: OWN_PAGE }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', reject);
      for (let i = 0; i < 11; i++) req.write(Buffer.alloc(1024 * 1024, 1));
      req.end();
    });
    assert.equal(status, 413);
  });

  it('refuses bad requests with a one-line 4xx and keeps serving', async () => {
    const url = (p: string) => new URL(p, live.url);
    const msg = await assertClientError(await fetch(url('/api/images'), { method: 'POST', body: 'this is not an image', headers: OWN_PAGE }), 400, 'not an image');
    assert.match(msg, /cannot decode image/);
    const truncated = PNG_BYTES.subarray(0, PNG_BYTES.length >> 1);
    await assertClientError(await fetch(url('/api/images'), { method: 'POST', body: truncated, headers: OWN_PAGE }), 400, 'truncated PNG');
    await assertClientError(await fetch(url('/api/images'), { method: 'POST', headers: OWN_PAGE }), 400, 'empty upload');
    await assertClientError(await fetch(url(`/api/images/${uploaded}/activations?layer=nope`)), 404, 'unknown layer');
    await assertClientError(await fetch(url(`/api/images/${uploaded}/activations`)), 400, 'missing layer');
    await assertClientError(await fetch(url(`/api/images/${uploaded}/activation.png?layer=fc6`)), 400, 'vector layer');
    await assertClientError(await fetch(url(`/api/images/${uploaded}/activation.png?layer=relu5&feature=64`)), 400, 'feature out of range');
    await assertClientError(await fetch(url(`/api/images/${uploaded}/projection.png?layer=relu5&feature=1&y=4&x=0`)), 400, 'unit outside the map');
    await assertClientError(await fetch(url(`/api/images/${uploaded}/projection.png?layer=relu5&feature=1.5`)), 400, 'non-integer feature');
    await assertClientError(await fetch(url(`/api/images/${uploaded}/projection.png?layer=relu5&feature=1&y=1`)), 400, 'y without x');
    await assertClientError(await fetch(url(`/api/images/${uploaded}/projection.png?layer=relu5&feature=1&rule=magic`)), 400, 'unknown rule');
    await assertClientError(await fetch(url('/api/images/nosuchimage/activations?layer=relu5')), 404, 'unknown image');
    await assertClientError(await fetch(url('/api/topk/relu5/999')), 400, 'top-9 feature out of range');
    await assertClientError(await fetch(url('/api/nothing')), 404, 'unknown route');
    await assertClientError(await fetch(url('/api/model'), { method: 'POST', headers: OWN_PAGE }), 405, 'wrong method');
    await assertClientError(await fetch(url('/nothing.html')), 404, 'missing static file');
    const after = await json(live.url, '/api/model');
    assert.equal(after.status, 200, 'still serving');
  });

  it('answers only its own pages: Host names, cross-site state changes and the page\'s headers (DNS rebinding, CSRF)', async () => {
    const { port } = new URL(live.url);
    const own = `127.0.0.1:${port}`;
    // DNS rebinding: a page on evil.test whose name now resolves to 127.0.0.1 sends Host evil.test.
    for (const path of ['/api/model', '/', '/app.js']) {
      const r = await raw(live.url, path, 'GET', undefined, { host: `evil.test:${port}` });
      assert.equal(r.status, 403, `${path} with a foreign Host`);
      assert.match(JSON.parse(r.body.toString()).error, /^Host 'evil\.test:\d+' is not this viewer's address; start serve with --allow-host evil\.test/);
    }
    for (const host of [own, `localhost:${port}`, `[::1]:${port}`]) assert.equal((await raw(live.url, '/api/model', 'GET', undefined, { host })).status, 200, host);
    // Cross-site POSTs: a foreign Origin, a cross-site fetch, or no page header are refused and change nothing.
    const before = (live.viewer as unknown as { images: Map<string, unknown> }).images.size;
    const attempts: [Record<string, string>, RegExp][] = [
      [{ host: own, origin: 'http://evil.test', 'x-convscope': '1' }, /from origin 'http:\/\/evil\.test' refused/],
      [{ host: own, 'sec-fetch-site': 'cross-site', 'x-convscope': '1' }, /from a cross-site page refused/],
      [{ host: own, origin: `http://${own}` }, /needs the header 'x-convscope: 1'/],
    ];
    for (const [headers, message] of attempts) {
      const r = await raw(live.url, '/api/images', 'POST', PNG_BYTES, headers);
      assert.equal(r.status, 403, JSON.stringify(headers));
      assert.match(JSON.parse(r.body.toString()).error, message);
      assert.equal((await raw(live.url, `/api/images/${uploaded}/occlusion`, 'POST', undefined, headers)).status, 403);
    }
    assert.equal((live.viewer as unknown as { images: Map<string, unknown> }).images.size, before, 'no upload got in');
    const mine = await raw(live.url, '/api/images', 'POST', PNG_BYTES, { host: own, origin: `http://${own}`, 'sec-fetch-site': 'same-origin', 'x-convscope': '1' });
    assert.equal(mine.status, 201);
    // Every answer forbids sniffing and framing, allows only our own scripts, and grants no CORS.
    for (const path of ['/', '/api/model', '/api/nothing']) {
      const r = await raw(live.url, path);
      assert.equal(r.headers['x-content-type-options'], 'nosniff', path);
      assert.match(String(r.headers['content-security-policy']), /default-src 'none'; script-src 'self'/, path);
      assert.match(String(r.headers['content-security-policy']), /frame-ancestors 'none'/, path);
      assert.equal(r.headers['access-control-allow-origin'], undefined, path);
    }
    const named = await startServer({ model, allowHosts: ['Viewer.Example'] });
    try {
      const p = new URL(named.url).port;
      assert.equal((await raw(named.url, '/api/model', 'GET', undefined, { host: `viewer.example:${p}` })).status, 200, 'an allowed name');
      assert.equal((await raw(named.url, '/api/model', 'GET', undefined, { host: `other.example:${p}` })).status, 403);
    } finally {
      await named.close();
    }
  });
});
