// Where a graph kind spends its time: onnxruntime's own per-node profile of the train step or a projection.
//
//   npm run bench:profile -- [--model zfnet-small|FILE.onnx] [--graph train|project] [--batch 32] [--layer relu5] [--runs 25] [--top 25] [--names]
//
// Prints the median wall time of session.run, the kernel time per op type and the slowest nodes with their input
// shapes (means over the runs), and the minor page faults per run. Random weights and inputs: timings only.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { sessionOptions } from '../src/engine/engine.js';
import { findLayer } from '../src/model/layers.js';
import { inferShapes } from '../src/model/shapes.js';
import { loadModel } from '../src/model/load.js';
import { buildProjectionGraph, buildTrainStepGraph, dropoutMaskName, INPUT, LABELS, SEED_BY_ACTIVATION, SEED_MASK } from '../src/engine/graphs.js';
import { median } from '../src/tensor.js';
import { intArg } from './common.js';

interface Args {
  model: string;
  graph: 'train' | 'project';
  batch: number;
  layer: string;
  runs: number;
  top: number;
  /** Print each slow node's name (which layer's forward or backward it belongs to). */
  names: boolean;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { model: 'zfnet-small', graph: 'train', batch: 32, layer: 'relu5', runs: 25, top: 25, names: false };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => argv[++i];
    switch (flag) {
      case '--model': args.model = value(); break;
      case '--names': args.names = true; break;
      case '--graph': {
        const g = value();
        if (g !== 'train' && g !== 'project') throw new Error(`--graph is train or project, got ${g}`);
        args.graph = g;
        break;
      }
      case '--batch': args.batch = intArg(flag, value(), 1); break;
      case '--layer': args.layer = value(); break;
      case '--runs': args.runs = intArg(flag, value(), 1); break;
      case '--top': args.top = intArg(flag, value(), 0); break;
      default: throw new Error(`unknown option ${flag}`);
    }
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
const model = loadModel(args.model, { seed: 0 });
const infos = inferShapes(model);
const n = args.batch;
const sizeOf = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
let state = 1;
const random = (length: number) => Float32Array.from({ length }, () => (state = (state * 16807) % 2147483647) / 2147483647);

const feeds: Record<string, ort.Tensor> = { [INPUT]: new ort.Tensor('float32', random(n * sizeOf(model.input)), [n, ...model.input]) };
let bytes: Uint8Array;
if (args.graph === 'train') {
  bytes = buildTrainStepGraph(model, infos, false);
  for (const [key, t] of model.weights) feeds[key] = new ort.Tensor('float32', t.data, t.shape);
  const classes = infos[infos.length - 1].outShape[0];
  const onehot = new Float32Array(n * classes);
  for (let i = 0; i < n; i++) onehot[i * classes + (i % classes)] = 1;
  feeds[LABELS] = new ort.Tensor('float32', onehot, [n, classes]);
  for (const [i, layer] of model.layers.entries()) {
    if (layer.type === 'dropout') feeds[dropoutMaskName(layer.name)] = new ort.Tensor('float32', new Float32Array(n * sizeOf(infos[i].outShape)).fill(1), [n, ...infos[i].outShape]);
  }
} else {
  const { index } = findLayer(model, args.layer);
  bytes = buildProjectionGraph(model, infos, index, 'deconvnet', 'gradient', false);
  const shape = [n, ...infos[index].outShape];
  const mask = new Float32Array(sizeOf(shape));
  for (let i = 0; i < n; i++) mask[i * sizeOf(infos[index].outShape)] = 1;
  feeds[SEED_MASK] = new ort.Tensor('float32', mask, shape);
  feeds[SEED_BY_ACTIVATION] = new ort.Tensor('float32', Float32Array.of(1), [1]);
}

const dir = mkdtempSync(join(tmpdir(), 'convscope-profile-'));
const session = await ort.InferenceSession.create(bytes, { ...sessionOptions(availableParallelism()), enableProfiling: true, profileFilePrefix: join(dir, 'profile') });
const minorFaults = () => Number(readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ')[7]);
await session.run(feeds);
const times: number[] = [];
let faults = 0;
for (let r = 0; r < args.runs; r++) {
  const f0 = minorFaults();
  const t0 = performance.now();
  await session.run(feeds);
  times.push(performance.now() - t0);
  faults += minorFaults() - f0;
}
await session.release();
const file = readdirSync(dir).find((f) => f.startsWith('profile'));
if (!file) throw new Error(`onnxruntime wrote no profile in ${dir}`);
const events = JSON.parse(readFileSync(join(dir, file), 'utf8')) as { cat: string; name: string; dur: number; args: { op_name?: string; input_type_shape?: unknown } }[];
rmSync(dir, { recursive: true, force: true });

// The profile holds the untimed first run too: per-node means over all runs.
const calls = args.runs + 1;
const nodes = new Map<string, { op: string; ms: number; shapes: string }>();
for (const e of events) {
  if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
  const node = nodes.get(e.name) ?? { op: e.args.op_name ?? '?', ms: 0, shapes: JSON.stringify(e.args.input_type_shape ?? '') };
  node.ms += e.dur / 1000 / calls;
  nodes.set(e.name, node);
}
const byOp = new Map<string, number>();
for (const node of nodes.values()) byOp.set(node.op, (byOp.get(node.op) ?? 0) + node.ms);
const kernelMs = [...nodes.values()].reduce((s, v) => s + v.ms, 0);
console.log(`${args.model} ${args.graph}${args.graph === 'project' ? ` from ${args.layer}` : ''}, batch ${n}: median ${median(times).toFixed(2)} ms over ${args.runs} runs (min ${Math.min(...times).toFixed(2)}); kernels ${kernelMs.toFixed(2)} ms in ${nodes.size} nodes; ${(faults / args.runs).toFixed(0)} minor page faults a run`);
console.log('\nms per run by op type:');
for (const [op, ms] of [...byOp].sort((a, b) => b[1] - a[1])) if (ms >= 0.01) console.log(`  ${ms.toFixed(2).padStart(8)}  ${op}`);
if (args.top > 0) {
  console.log(`\nslowest ${args.top} nodes (ms per run, op, input shapes):`);
  for (const [name, node] of [...nodes].sort((a, b) => b[1].ms - a[1].ms).slice(0, args.top)) {
    console.log(`  ${node.ms.toFixed(2).padStart(8)}  ${node.op.padEnd(16)} ${node.shapes.slice(0, 110)}${args.names ? `  ${name.replace(/_kernel_time$/, '')}` : ''}`);
  }
}
