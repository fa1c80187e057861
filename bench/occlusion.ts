// Occlusion benchmark: ZFNet-224 (seeded random weights), a 50 px square, stride 8: 23 x 23 = 529 positions.
//
//   node --import tsx bench/occlusion.ts [--peer] [--peer-blas DIR] [--record] [--repeats 3] [--warmup 1] [--threads N]
//                                        [--batch 64] [--full-fraction F]
//
// Times, per repeat and interleaved (the order rotates every repeat, so slow phases of this noisy machine hit every
// side alike): the paper-mode maps with incremental inference, the same with every occluded image recomputed in full
// (batched), Captum-style attribution mode (incremental), and with --peer PyTorch running Captum's Occlusion loop
// (bench/peer_occlusion.py: batches of 32 ablated images, the same weights and input). --peer-blas DIR adds a second
// PyTorch peer whose libblas.so.3 comes from DIR (Debian's python3-torch runs its Linear layers in the system
// libblas.so.3, the slow reference BLAS unless an optimised one is installed; see bench/run.ts). Every time is a whole
// call: the unoccluded forward pass, all positions, and in paper mode the four deconvnet projections. Other
// processes on the machine show in the load average, which the report states.
// --record appends the table to bench/RESULTS.md.
import { execFileSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { occlusionGrid, occlusionMaps, type OcclusionOptions, type PaperMaps } from '../src/analysis/occlusion.js';
import { imageToInput } from '../src/data/image.js';
import { testPattern } from '../src/data/pattern.js';
import { Engine } from '../src/engine/engine.js';
import { planIncremental } from '../src/engine/incremental.js';
import { layerToJson } from '../src/model/layers.js';
import { createZooModel } from '../src/model/zoo.js';
import { median, readNpy, type Tensor } from '../src/tensor.js';
import { relError, type PeerBenchArgs } from './common.js';
import { PeerProcess } from './peer.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const WINDOW = 50;
const STRIDE = 8;
const PEER_BATCH = 32;
const TOLERANCE = 1e-4;

interface Args extends PeerBenchArgs {
  batch: number | undefined;
  fullFraction: number | undefined;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { peer: false, peerBlas: undefined, record: false, repeats: 3, warmup: 1, threads: availableParallelism(), batch: undefined, fullFraction: undefined };
  const num = (flag: string, v: string | undefined, ok: (n: number) => boolean): number => {
    const n = Number(v);
    if (v === undefined || !ok(n)) throw new Error(`${flag}: bad value ${v ?? '(none)'}`);
    return n;
  };
  const int = (n: number) => Number.isInteger(n) && n >= 1;
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    switch (flag) {
      case '--peer': args.peer = true; break;
      case '--record': args.record = true; break;
      case '--peer-blas': args.peerBlas = argv[++i]; if (!args.peerBlas) throw new Error('--peer-blas needs a directory'); break;
      case '--repeats': args.repeats = num(flag, argv[++i], (n) => int(n) && n >= 3); break;
      case '--warmup': args.warmup = num(flag, argv[++i], (n) => Number.isInteger(n) && n >= 0); break;
      case '--threads': args.threads = num(flag, argv[++i], int); break;
      case '--batch': args.batch = num(flag, argv[++i], int); break;
      case '--full-fraction': args.fullFraction = num(flag, argv[++i], (n) => n > 0 && n <= 1); break;
      default: throw new Error(`unknown option ${flag}; usage: node --import tsx bench/occlusion.ts [--peer] [--peer-blas DIR] [--record] [--repeats 3] [--warmup 1] [--threads N] [--batch B] [--full-fraction F]`);
    }
  }
  return args;
}



interface Work {
  key: string;
  label: string;
  run: () => Promise<number>;
  first: number;
  times: number[];
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

function machine(threads: number, peers: PeerProcess[], load: string): string {
  const cpuinfo = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
  const cpu = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? 'unknown CPU';
  const ort = (JSON.parse(readFileSync(join(ROOT, 'node_modules', 'onnxruntime-node', 'package.json'), 'utf8')) as { version: string }).version;
  const parts = [`nproc ${execFileSync('nproc', { encoding: 'utf8' }).trim()}`, cpu, `node ${process.version}`, `onnxruntime-node ${ort} (intra-op threads ${threads})`];
  for (const p of peers) {
    const i = p.info;
    if (i) parts.push(`${p.label}: /usr/bin/python3, torch ${i.torch} (threads ${i.threads}, interop ${i.interop_threads}, mkldnn ${i.mkldnn})`);
  }
  parts.push(`1-minute load average at start / end: ${load}`);
  return parts.join('; ');
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const command = `node --import tsx bench/occlusion.ts ${process.argv.slice(2).join(' ')}`.trim();
  const model = createZooModel('zfnet', { seed: 0 });
  const x = imageToInput(testPattern(224), model.preprocess);
  const engine = new Engine(model, { threads: args.threads });
  const grid = occlusionGrid([224, 224], WINDOW, STRIDE);
  const plan = planIncremental(engine.infos, grid.boxes, { fullFraction: args.fullFraction });
  const base: OcclusionOptions = { window: WINDOW, stride: STRIDE, batch: args.batch, fullFraction: args.fullFraction };

  mkdirSync(join(ROOT, '.bench-tmp'), { recursive: true });
  const tmp = mkdtempSync(join(ROOT, '.bench-tmp', 'occlusion-'));
  const peers: PeerProcess[] = [];
  const loadAtStart = loadavg()[0].toFixed(2);
  try {
    let incremental: PaperMaps | undefined;
    let full: PaperMaps | undefined;
    let attribution: Tensor | undefined;
    let target = 0;
    const works: Work[] = [
      { key: 'incremental', label: 'paper maps (b)-(e) + 4 projections, incremental', run: () => timed(async () => (incremental = await occlusionMaps(engine, x, { ...base, mode: 'paper' }))), first: 0, times: [] },
      { key: 'full', label: 'paper maps (b)-(e) + 4 projections, full recomputation (batched)', run: () => timed(async () => (full = await occlusionMaps(engine, x, { ...base, mode: 'paper', incremental: false }))), first: 0, times: [] },
      { key: 'attribution', label: 'attribution mode (Captum Occlusion), incremental', run: () => timed(async () => (attribution = (await occlusionMaps(engine, x, { ...base, mode: 'attribution', target })).attribution)), first: 0, times: [] },
    ];
    console.error('first calls (graph building and ORT session creation included) ...');
    for (const w of works) {
      w.first = await w.run();
      if (w.key === 'incremental') target = incremental!.target;
    }
    const script = join(ROOT, 'bench', 'peer_occlusion.py');
    if (args.peer) peers.push(new PeerProcess('PyTorch', script));
    if (args.peerBlas) {
      const env = { ...process.env, LD_LIBRARY_PATH: [args.peerBlas, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':'), OPENBLAS_NUM_THREADS: String(args.threads) };
      peers.push(new PeerProcess(/openblas/i.test(args.peerBlas) ? 'PyTorch+OpenBLAS' : 'PyTorch+BLAS', script, env));
    }
    if (peers.length > 0) {
      const weights = join(tmp, 'weights.f32');
      const manifest = [...model.weights.entries()].map(([key, t]) => [key, t.shape]);
      writeFileSync(weights, Buffer.concat([...model.weights.values()].map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength))));
      writeFileSync(join(tmp, 'input.f32'), Buffer.from(x.data.buffer, x.data.byteOffset, x.data.byteLength));
      const request = { cmd: 'run', window: WINDOW, stride: STRIDE, target, batch: PEER_BATCH };
      for (const [j, p] of peers.entries()) {
        await p.request({ cmd: 'setup', threads: args.threads, arch: model.layers.map(layerToJson), weights, manifest, input: join(tmp, 'input.f32'), shape: x.shape });
        const w: Work = { key: `peer${j}`, label: `${p.label}, Captum Occlusion loop (batches of ${PEER_BATCH})`, run: async () => (await p.request(request)).ms as number, first: 0, times: [] };
        // The peer saves its attribution after timing the call.
        w.first = (await p.request({ ...request, out: join(tmp, `peer${j}_attribution.npy`) })).ms as number;
        works.push(w);
      }
    }
    for (let r = 0; r < args.warmup; r++) for (const w of works) await w.run();
    for (let r = 0; r < args.repeats; r++) {
      for (let k = 0; k < works.length; k++) {
        const w = works[(r + k) % works.length];
        w.times.push(await w.run());
        console.error(`repeat ${r + 1}/${args.repeats}: ${w.key} ${w.times.at(-1)!.toFixed(0)} ms`);
      }
    }

    const inc = incremental!;
    const ref = full!;
    const classFlips = inc.topClass.data.filter((c, i) => c !== ref.topClass.data[i]).length;
    const errors: [string, number][] = [
      ['incremental vs full (b)', relError(inc.activation, ref.activation)],
      ['(d)', relError(inc.probability, ref.probability)],
      ['(c)', Math.max(...inc.projections.map((p, i) => relError(p.projection, ref.projections[i].projection)))],
      ...peers.map((p, j): [string, number] => [`attribution vs ${p.label}`, relError(attribution!, readNpy(join(tmp, `peer${j}_attribution.npy`)))]),
    ];
    const checks = [...errors.map(([what, e]) => `${what} ${e.toExponential(2)}`), `(e) ${classFlips} of ${inc.topClass.data.length} positions differ`];
    const failed = errors.filter(([, e]) => !(e <= TOLERANCE)).map(([what]) => what).concat(classFlips > 0 ? ['(e)'] : []);
    const get = (key: string) => works.find((w) => w.key === key);
    const ratio = (a: string, b: string) => (get(a) && get(b) ? (median(get(a)!.times) / median(get(b)!.times)).toFixed(2) : '-');
    const fmt = (ms: number) => ms.toFixed(0);
    const rows = works.map((w) => `| ${w.label} | ${fmt(median(w.times))} | ${fmt(Math.min(...w.times))}-${fmt(Math.max(...w.times))} | ${fmt(w.first)} |`);
    const segs = plan.segments.map((s) => `${model.layers[s.from].name}${s.to > s.from ? `..${model.layers[s.to].name}` : ''} ${s.size.join('x')} of ${s.outShape.slice(1).join('x')}`).join(', ');
    const report = [
      `### zfnet-224 (seed 0), window ${WINDOW}, stride ${STRIDE}, ${grid.ys.length}x${grid.xs.length} = ${grid.boxes.length} positions (last clipped), target ${target}: median of ${args.repeats} after ${args.warmup} warm-up, interleaved`,
      '',
      '| work | median ms | min-max ms | first call ms |',
      '| --- | --- | --- | --- |',
      ...rows,
      '',
      `- full / incremental (paper mode): ${ratio('full', 'incremental')}x.`,
      ...peers.map((p, j) => `- ${p.label} / ours: ${ratio(`peer${j}`, 'attribution')}x (attribution mode), ${ratio(`peer${j}`, 'incremental')}x (paper mode, incremental).`),
      `- planner: boxes ${segs}; full computation from ${model.layers[plan.tailFrom].name}; predicted FLOPs per occluded image ${(plan.flops.incremental / 1e9).toFixed(3)} G of ${(plan.flops.full / 1e9).toFixed(3)} G (${(plan.flops.full / plan.flops.incremental).toFixed(2)}x fewer).`,
      `- agreement, max|a-b|/max|b| (tolerance ${TOLERANCE}): ${checks.join('; ')}.`,
    ].join('\n');
    const facts = machine(args.threads, peers, `${loadAtStart} / ${loadavg()[0].toFixed(2)}`);
    console.log(`\n${report}\n\nmachine: ${facts}`);
    if (args.record && failed.length > 0) console.error('not recorded: the agreement check failed');
    else if (args.record) {
      const path = join(ROOT, 'bench', 'RESULTS.md');
      const head = existsSync(path) ? '' : '# convscope benchmark results\n';
      const date = new Date().toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
      appendFileSync(path, `${head}\n## Occlusion, ${date}\n\nCommand: \`${command}\`\n\nMachine: ${facts}\n\n${report}\n`);
      console.log(`recorded in ${path}`);
    }
    if (failed.length > 0) {
      console.error(`agreement check FAILED: ${failed.join(', ')}`);
      process.exitCode = 1;
    }
  } finally {
    for (const p of peers) await p.close();
    await engine.dispose();
    rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
