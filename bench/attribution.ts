// Attribution benchmark: Grad-CAM, Integrated Gradients (32 steps, Gauss-Legendre) and SmoothGrad (16 samples) of the
// predicted class on ZFNet-224 (the zoo's, seeded weights) and torchvision ResNet-18-224 (seeded random weights, the
// peer's own export), each against Captum's algorithm in PyTorch (bench/peer_attribution.py) in the same run,
// interleaved, medians of the repeats. Agreement with the peer is checked on each method's result before timing
// (SmoothGrad with the peer's noise given to both sides).
//
// IG and SmoothGrad take gradients at dozens of inputs, and at 224 px some max-pool window among millions holds two
// values within float32 rounding of each other: the two sides may route that gradient to different taps, both
// correct in float32 (ZFNet, the path point 1.0 x input: pool1 channel 44, top two 2.2e-7 apart relative; PyTorch
// in float32 and in float64 chose one tap, onnxruntime the other, and 188 pixels under that unit's receptive field
// differ by up to 7 % of the map's max). Such a result is reported as agreeing "up to near-ties" when the pixels
// beyond the tolerance are at most 0.5 % of the map and the L2 error at most 1 %; anything else fails.
//
//   npm run bench:attribution -- [--peer] [--peer-blas DIR] [--record] [--repeats 5] [--warmup 1]
//                                [--models zfnet,resnet18] [--threads N] [--gap 50]
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { gradCam } from '../src/analysis/gradcam.js';
import { argmaxRows, classScores } from '../src/analysis/class-target.js';
import { integratedGradients } from '../src/analysis/integrated-gradients.js';
import { smoothGrad } from '../src/analysis/smoothgrad.js';
import { Engine } from '../src/engine/engine.js';
import { layerToJson, type Model } from '../src/model/layers.js';
import { resolveLayer } from '../src/model/names.js';
import { importOnnx } from '../src/model/onnx-import.js';
import { createZooModel } from '../src/model/zoo.js';
import { encodeNpy, median, readNpy, tensor, type Tensor } from '../src/tensor.js';
import { Rng } from '../src/util/random.js';
import { codeCommit, intArg, machineFacts, relError, ROOT, startPeerProcesses } from './common.js';
import type { PeerProcess } from './peer.js';

const TOLERANCE = 1e-4;
const STEPS = 32;
const SAMPLES = 16;
const NOISE = 0.15;
/** Grad-CAM's layer on each model: its deepest rectified feature map (the PyTorch module of the same output). */
const MODELS: Record<string, { camModule: string }> = { zfnet: { camModule: 'relu5' }, resnet18: { camModule: 'layer4' } };

interface Args {
  peer: boolean;
  peerBlas: string | undefined;
  record: boolean;
  repeats: number;
  warmup: number;
  models: string[];
  threads: number;
  gap: number;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { peer: false, peerBlas: undefined, record: false, repeats: 5, warmup: 1, models: Object.keys(MODELS), threads: availableParallelism(), gap: 50 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => argv[++i];
    switch (a) {
      case '--peer': args.peer = true; break;
      case '--record': args.record = true; break;
      case '--peer-blas': args.peerBlas = value(); break;
      case '--repeats': args.repeats = intArg(a, value(), 1); break;
      case '--warmup': args.warmup = intArg(a, value(), 0); break;
      case '--threads': args.threads = intArg(a, value(), 1); break;
      case '--gap': args.gap = intArg(a, value(), 0); break;
      case '--models': args.models = (value() ?? '').split(',').filter((m) => m.length > 0); break;
      default: throw new Error(`unknown argument ${a}; see the header of bench/attribution.ts`);
    }
  }
  for (const m of args.models) if (!MODELS[m]) throw new Error(`--models: ${m} is not one of ${Object.keys(MODELS).join(', ')}`);
  if (!args.peer && !args.peerBlas) throw new Error('the attribution benchmark compares with PyTorch: give --peer and/or --peer-blas DIR');
  return args;
}

interface Agreement {
  what: string;
  maxRel: number;
  l2Rel: number;
  /** Values farther apart than TOLERANCE x max|theirs|, and how many there are. */
  beyond: number;
  size: number;
  verdict: 'ok' | 'ok up to near-ties' | 'FAIL';
}

function agreement(what: string, ours: Tensor, theirs: Tensor): Agreement {
  const maxRel = relError(ours, theirs);
  let scale = 0;
  let diff2 = 0;
  let ref2 = 0;
  for (let k = 0; k < theirs.data.length; k++) scale = Math.max(scale, Math.abs(theirs.data[k]));
  let beyond = 0;
  for (let k = 0; k < theirs.data.length; k++) {
    const d = ours.data[k] - theirs.data[k];
    diff2 += d * d;
    ref2 += theirs.data[k] ** 2;
    if (Math.abs(d) > TOLERANCE * scale) beyond++;
  }
  const l2Rel = Math.sqrt(diff2 / ref2);
  const size = theirs.data.length;
  const verdict = maxRel <= TOLERANCE ? 'ok' : beyond <= 0.005 * size && l2Rel <= 0.01 ? 'ok up to near-ties' : 'FAIL';
  return { what, maxRel, l2Rel, beyond, size, verdict };
}

function describeAgreement(a: Agreement): string {
  const detail = a.verdict === 'ok' ? '' : ` (${a.beyond} of ${a.size} values beyond, L2 ${a.l2Rel.toExponential(1)})`;
  return `${a.what} ${a.maxRel.toExponential(2)} ${a.verdict}${detail}`;
}

const fmt = (ms: number) => (ms >= 100 ? ms.toFixed(0) : ms.toFixed(1));

/** Sets up every peer on one model; returns convscope's model (for ResNet-18, the first peer's export) and input. */
async function setup(name: string, args: Args, peers: PeerProcess[], dir: string): Promise<{ model: Model; input: Tensor }> {
  const layer = MODELS[name].camModule;
  if (name === 'resnet18') {
    for (const p of peers) await p.request({ cmd: 'setup', threads: args.threads, dir, torchvision: name, size: 224, layer });
    return { model: importOnnx(readFileSync(join(dir, 'model.onnx')), 'resnet18.onnx').model, input: readNpy(join(dir, 'x1.npy')) };
  }
  const model = createZooModel(name, { seed: 0 });
  const rng = new Rng(7);
  const input = tensor([1, ...model.input]);
  for (let k = 0; k < input.data.length; k++) input.data[k] = 60 * rng.normal();
  const weights: Record<string, string> = {};
  for (const [key, t] of model.weights) writeFileSync((weights[key] = join(dir, `${key}.npy`)), encodeNpy(t));
  writeFileSync(join(dir, 'input.npy'), encodeNpy(input));
  for (const p of peers) await p.request({ cmd: 'setup', threads: args.threads, dir, arch: model.layers.map(layerToJson), weights, input: join(dir, 'input.npy'), layer });
  return { model, input };
}

async function benchModel(name: string, args: Args, peers: PeerProcess[], dir: string): Promise<{ markdown: string; failed: string[] }> {
  const { model, input } = await setup(name, args, peers, dir);
  const engine = new Engine(model, { threads: args.threads });
  try {
    const layer = resolveLayer(model, MODELS[name].camModule);
    const [target] = argmaxRows(await classScores(engine, input));
    const works = [
      { label: `Grad-CAM at ${MODELS[name].camModule}`, ours: () => gradCam(engine, input, [target], layer), peer: { work: 'gradcam', target } },
      { label: `Integrated Gradients, ${STEPS} steps`, ours: () => integratedGradients(engine, input, target, { steps: STEPS, integration: 'gausslegendre' }), peer: { work: 'ig', target, steps: STEPS } },
      { label: `SmoothGrad, ${SAMPLES} samples`, ours: () => smoothGrad(engine, input, target, { samples: SAMPLES, noise: NOISE, seed: 1 }), peer: { work: 'smoothgrad', target, samples: SAMPLES, noise: NOISE } },
    ];
    const checks: Agreement[] = [];
    const out = join(dir, 'peer_out.npy');
    const noiseFile = join(dir, 'noise.npy');
    const noise = tensor([SAMPLES, ...model.input]);
    const rng = new Rng(3);
    for (let k = 0; k < noise.data.length; k++) noise.data[k] = 20 * rng.normal();
    writeFileSync(noiseFile, encodeNpy(noise));
    for (const p of peers) {
      await p.request({ cmd: 'run', ...works[0].peer, out });
      checks.push(agreement(`${p.label} Grad-CAM`, (await gradCam(engine, input, [target], layer)).upsampled, readNpy(out)));
      await p.request({ cmd: 'run', ...works[1].peer, out });
      checks.push(agreement(`${p.label} IG`, (await integratedGradients(engine, input, target, { steps: STEPS })).attribution, readNpy(out)));
      await p.request({ cmd: 'run', ...works[2].peer, given_noise: noiseFile, out });
      checks.push(agreement(`${p.label} SmoothGrad`, (await smoothGrad(engine, input, target, { noiseTensor: noise })).attribution, readNpy(out)));
    }
    const rows: { label: string; ours: number[]; peers: number[][] }[] = [];
    for (const work of works) {
      const row = { label: work.label, ours: [] as number[], peers: peers.map(() => [] as number[]) };
      for (let r = 0; r < args.warmup; r++) {
        await work.ours();
        for (const p of peers) await p.request({ cmd: 'run', ...work.peer });
      }
      const sides = [
        async () => {
          await sleep(args.gap);
          const t0 = performance.now();
          await work.ours();
          row.ours.push(performance.now() - t0);
        },
        ...peers.map((p, j) => async () => {
          await sleep(args.gap);
          row.peers[j].push((await p.request({ cmd: 'run', ...work.peer })).ms as number);
        }),
      ];
      for (let r = 0; r < args.repeats; r++) for (let k = 0; k < sides.length; k++) await sides[(r + k) % sides.length]();
      rows.push(row);
    }
    const header = ['method', 'ours ms', ...peers.flatMap((p) => [`${p.label} (Captum's algorithm) ms`, `${p.label}/ours`])];
    const lines = [
      `### ${name} (3x224x224): median of ${args.repeats} after ${args.warmup} warm-up, interleaved, ${args.gap} ms idle before each call; target = the predicted class ${target}`,
      '',
      `| ${header.join(' | ')} |`,
      `| ${header.map(() => '---').join(' | ')} |`,
      ...rows.map((r) => `| ${[r.label, fmt(median(r.ours)), ...r.peers.flatMap((xs) => [fmt(median(xs)), (median(xs) / median(r.ours)).toFixed(2)])].join(' | ')} |`),
      '',
      `- ours: IG in batches of 16 path points plus a forward of input and baseline for the convergence delta, which Captum skips by default; SmoothGrad in batches of 16, noise drawn inside the timed call on both sides.`,
      `- agreement, max|ours-theirs|/max|theirs| (tolerance ${TOLERANCE}): ${checks.map(describeAgreement).join('; ')}.`,
    ];
    return { markdown: lines.join('\n'), failed: checks.filter((c) => c.verdict === 'FAIL').map((c) => c.what) };
  } finally {
    await engine.dispose();
  }
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const loadBefore = loadavg()[0];
  mkdirSync(join(ROOT, '.bench-tmp'), { recursive: true });
  const tmp = mkdtempSync(join(ROOT, '.bench-tmp', 'attribution-'));
  const peers = startPeerProcesses(join(ROOT, 'bench', 'peer_attribution.py'), args);
  const reports: string[] = [];
  const failed: string[] = [];
  try {
    for (const name of args.models) {
      console.error(`benchmarking attributions on ${name} ...`);
      const dir = mkdtempSync(join(tmp, `${name}-`));
      const r = await benchModel(name, args, peers, dir);
      reports.push(r.markdown);
      failed.push(...r.failed);
      console.log(`\n${r.markdown}`);
    }
  } finally {
    for (const p of peers) await p.close();
    rmSync(tmp, { recursive: true, force: true });
  }
  const facts = `${machineFacts(peers, args.threads)}; 1-min load average ${loadBefore.toFixed(2)} before, ${loadavg()[0].toFixed(2)} after`;
  console.log(`\nmachine: ${facts}`);
  if (args.record) {
    const date = new Date().toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
    const cli = process.argv.slice(2).join(' ');
    appendFileSync(join(ROOT, 'bench', 'RESULTS.md'), `\n## Attribution methods vs Captum, ${date}\n\nCode: commit ${codeCommit()}\n\nCommand: \`npm run bench:attribution -- ${cli}\`\n\nMachine: ${facts}\n\n${reports.join('\n\n')}\n`);
    console.log('recorded in bench/RESULTS.md');
  }
  if (failed.length > 0) {
    console.error(`agreement check FAILED: ${failed.join(', ')}`);
    process.exitCode = 1;
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
