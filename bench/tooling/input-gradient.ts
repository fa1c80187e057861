// How convscope lowers a convolution's input gradient (src/model/ops/emit/conv.ts) against the alternatives that
// onnxruntime offers, on the shapes that matter: each lowering as a one-node-chain graph, checked equal to the
// others, timed as the median of interleaved runs.
//
//   node --import tsx bench/tooling/input-gradient.ts [--batch 16] [--repeats 9]
//
// Lowerings: `convscope` (what the engine emits: one flipped Conv at stride 1, MatMul + Col2Im when strided),
// `ConvTranspose` (onnxruntime's own op), `Col2Im` (MatMul + Col2Im at every stride) and `Conv` (at stride 1 only:
// the flipped kernel).
import { availableParallelism } from 'node:os';
import ort from 'onnxruntime-node';
import { sessionOptions } from '../../src/engine/engine.js';
import type { Layer } from '../../src/model/layers.js';
import { convInputGradient, symmetricPads } from '../../src/model/ops/emit/conv.js';
import { GraphBuilder } from '../../src/onnx/builder.js';
import { median } from '../../src/tensor.js';
import { intArg } from '../common.js';

type Conv2d = Extract<Layer, { type: 'conv2d' }>;
/** [name, in channels, out channels, kernel, stride, padding, input side] */
type Shape = [string, number, number, number, number, number, number];

const SHAPES: Shape[] = [
  ['ZFNet conv1', 3, 96, 7, 2, 1, 224],
  ['ZFNet conv2', 96, 256, 5, 2, 0, 55],
  ['ZFNet conv3', 256, 384, 3, 1, 1, 13],
  ['ResNet-18 conv1', 3, 64, 7, 2, 3, 224],
  ['ResNet-18 layer1 3x3', 64, 64, 3, 1, 1, 56],
  ['ResNet-18 layer2.0.conv1', 64, 128, 3, 2, 1, 56],
  ['ResNet-18 layer2.0.downsample', 64, 128, 1, 2, 0, 56],
  ['ResNet-18 layer4.0.conv1', 256, 512, 3, 2, 1, 14],
  ['ResNet-18 layer4 3x3', 512, 512, 3, 1, 1, 7],
];

let batch = 16;
let repeats = 9;
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--batch') batch = intArg('--batch', argv[++i], 1);
  else if (argv[i] === '--repeats') repeats = intArg('--repeats', argv[++i], 1);
  else throw new Error(`unknown option ${argv[i]}; see the header of bench/tooling/input-gradient.ts`);
}

function graph(kind: string, layer: Conv2d, side: number, out: number, weights: Float32Array): Uint8Array {
  const b = new GraphBuilder();
  const { inChannels: c, outChannels: o, kernel: [k], stride: [s], padding } = layer;
  const g = b.input('g', ['N', o, out, out]);
  const w = b.floatTensor('w', [o, c, k, k], weights);
  let y: string;
  if (kind === 'convscope') {
    y = convInputGradient(b, g, w, layer, { inShape: [c, side, side], outShape: [o, out, out], inputs: [-1] } as never, false);
  } else if (kind === 'ConvTranspose') {
    const extra = (side + 2 * padding[0] - k) % s;
    y = b.op1('ConvTranspose', [g, w], { kernel_shape: [k, k], strides: [s, s], pads: symmetricPads(padding), output_padding: [extra, extra] });
  } else if (kind === 'Col2Im') {
    const wt = b.op1('Transpose', [b.op1('Reshape', [w, b.int64s([o, -1])])], { perm: [1, 0] });
    const cols = b.op1('MatMul', [wt, b.op1('Reshape', [g, b.int64s([0, o, -1])])]);
    y = b.op1('Col2Im', [cols, b.int64s([side, side]), b.int64s([k, k])], { strides: [s, s], pads: symmetricPads(padding) });
  } else {
    throw new Error(kind);
  }
  b.op1('Identity', [y], {}, 'dx');
  b.output('dx', ['N', c, side, side]);
  return b.encode(`input_gradient_${kind}`);
}

let state = 7;
const random = (n: number) => Float32Array.from({ length: n }, () => ((state = (state * 16807) % 2147483647) / 2147483647) - 0.5);

console.log(`input gradient of one convolution, batch ${batch}, ${availableParallelism()} threads: median ms of ${repeats} interleaved runs (max|difference| to convscope's / max|convscope's|)\n`);
console.log('| convolution | convscope | ConvTranspose | Col2Im at every stride |');
console.log('| --- | --- | --- | --- |');
for (const [name, c, o, k, s, p, side] of SHAPES) {
  const layer: Conv2d = { type: 'conv2d', name, inChannels: c, outChannels: o, kernel: [k, k], stride: [s, s], padding: [p, p], bias: false };
  const out = Math.floor((side + 2 * p - k) / s) + 1;
  const weights = random(o * c * k * k);
  const feeds = { g: new ort.Tensor('float32', random(batch * o * out * out), [batch, o, out, out]) };
  const kinds = ['convscope', 'ConvTranspose', 'Col2Im'];
  const sessions = await Promise.all(kinds.map((kind) => ort.InferenceSession.create(graph(kind, layer, side, out, weights), sessionOptions(availableParallelism()))));
  const results = await Promise.all(sessions.map(async (session) => (await session.run(feeds)).dx.data as Float32Array));
  const scale = results[0].reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const diffs = results.map((r) => r.reduce((m, v, i) => Math.max(m, Math.abs(v - results[0][i])), 0) / scale);
  const times: number[][] = kinds.map(() => []);
  for (let r = 0; r < repeats; r++) {
    for (const [i, session] of sessions.entries()) {
      const t0 = performance.now();
      await session.run(feeds);
      times[i].push(performance.now() - t0);
    }
  }
  for (const session of sessions) await session.release();
  const cell = (i: number) => `${median(times[i]).toFixed(1)}${i > 0 ? ` (${diffs[i].toExponential(0)})` : ''}`;
  console.log(`| ${name}: ${c}->${o}, ${k}x${k} stride ${s}, ${side} px | ${kinds.map((_, i) => cell(i)).join(' | ')} |`);
}
