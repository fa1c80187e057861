// Attribution benchmark: Grad-CAM, Integrated Gradients (32 steps, Gauss-Legendre) and SmoothGrad (16 samples) of the
// predicted class on ZFNet-224 (the zoo's, seeded weights) and torchvision ResNet-18-224 (seeded random weights, the
// peer's own export), each against Captum's algorithm in PyTorch (bench/peer_attribution.py) in the same run,
// interleaved, medians of the repeats. Agreement with the peer is checked on each method's result before timing
// (SmoothGrad with the peer's noise given to both sides).
//
// IG and SmoothGrad take gradients at dozens of inputs, and at 224 px some max-pool window among millions holds two
// values within float32 rounding of each other: each side may route that gradient to a different tap, and a tie in a
// deep pool moves the gradient of a whole receptive field (ZFNet, 16 noisy copies: PyTorch float32 differed from
// float64 at 61883 of 150528 values of one copy, convscope at none; on another copy both did at 24229). When the two
// float32 results differ beyond the tolerance, the peer computes the same work in float64 (untimed) and ours agrees
// "as float32 allows" if its L2 distance to float64 is at most twice PyTorch float32's (or 1e-4); else it fails.
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
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
import { codeCommit, intArg, machineFacts, relError, ROOT, startPeerProcesses, timeInterleaved, type PeerBenchArgs } from './common.js';
import type { PeerProcess } from './peer.js';

const TOLERANCE = 1e-4;
const STEPS = 32;
const SAMPLES = 16;
const NOISE = 0.15;
/** Grad-CAM's layer on each model: its deepest rectified feature map (the PyTorch module of the same output). */
const MODELS: Record<string, { camModule: string }> = { zfnet: { camModule: 'relu5' }, resnet18: { camModule: 'layer4' } };

interface Args extends PeerBenchArgs {
  models: string[];
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
  /** Float32 results apart: L2 distances to the float64 result, relative to its norm, of ours and of the peer's. */
  float64?: { ours: number; theirs: number };
  verdict: 'ok' | 'ok as float32 allows' | 'FAIL';
}

function l2Rel(a: Tensor, ref: Tensor): number {
  let d2 = 0;
  let r2 = 0;
  for (let k = 0; k < ref.data.length; k++) {
    d2 += (a.data[k] - ref.data[k]) ** 2;
    r2 += ref.data[k] ** 2;
  }
  return Math.sqrt(d2 / r2);
}

/** Ours against the peer's float32 result; when they differ, both against the peer's float64 result. */
async function agreement(what: string, ours: Tensor, theirs: Tensor, float64: () => Promise<Tensor>): Promise<Agreement> {
  const maxRel = relError(ours, theirs);
  if (maxRel <= TOLERANCE) return { what, maxRel, verdict: 'ok' };
  const ref = await float64();
  const distances = { ours: l2Rel(ours, ref), theirs: l2Rel(theirs, ref) };
  return { what, maxRel, float64: distances, verdict: distances.ours <= Math.max(2 * distances.theirs, TOLERANCE) ? 'ok as float32 allows' : 'FAIL' };
}

function describeAgreement(a: Agreement): string {
  const detail = a.float64 ? ` (L2 to float64: ours ${a.float64.ours.toExponential(1)}, PyTorch float32 ${a.float64.theirs.toExponential(1)})` : '';
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
    const out64 = join(dir, 'peer_out64.npy');
    const peerResult = async (p: PeerProcess, msg: Record<string, unknown>, file: string) => {
      await p.request({ cmd: 'run', ...msg, out: file });
      return readNpy(file);
    };
    for (const p of peers) {
      const check = async (what: string, msg: Record<string, unknown>, ours: Tensor) =>
        checks.push(await agreement(`${p.label} ${what}`, ours, await peerResult(p, msg, out), () => peerResult(p, { ...msg, float64: true }, out64)));
      await check('Grad-CAM', works[0].peer, (await gradCam(engine, input, [target], layer)).upsampled);
      await check('IG', works[1].peer, (await integratedGradients(engine, input, target, { steps: STEPS })).attribution);
      await check('SmoothGrad', { ...works[2].peer, given_noise: noiseFile }, (await smoothGrad(engine, input, target, { noiseTensor: noise })).attribution);
    }
    const rows: { label: string; ours: number[]; peers: number[][] }[] = [];
    for (const work of works) rows.push({ label: work.label, ...(await timeInterleaved(work.ours, peers, work.peer, args)) });
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
  if (args.record && failed.length > 0) console.error('not recorded: the agreement check failed');
  else if (args.record) {
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
