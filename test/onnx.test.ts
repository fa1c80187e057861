import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import ort from 'onnxruntime-node';
import { Engine } from '../src/engine/engine.js';
import type { Layer, Model } from '../src/model/layers.js';
import { modelFromOnnx, readOnnxModel } from '../src/model/onnx-import.js';
import { writeOnnxModel } from '../src/engine/onnx-export.js';
import { readSafetensorsModel } from '../src/model/safetensors.js';
import { createZooModel, initWeights } from '../src/model/zoo.js';
import { GraphBuilder } from '../src/onnx/builder.js';
import { DataType, decodeModel, encodeModel, type ModelProto, type NodeProto } from '../src/onnx/proto.js';
import { sizeOf, type Tensor } from '../src/tensor.js';
import { Rng } from '../src/util/random.js';
import { fixture, fixtureNpy, relError } from './helpers.js';

// The fixtures' README tolerance for a correct float32 implementation.
const TOL = 1e-4;

const tmp = mkdtempSync(join(tmpdir(), 'convscope-onnx-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function assertLogitsClose(ours: Tensor, ref: Tensor, what: string, report: (msg: string) => void): void {
  const e = relError(ours, ref);
  report(`${what}: max|ours-ref|/max|ref| = ${e.toExponential(3)}`);
  assert.ok(e <= TOL, `${what}: max|ours-ref|/max|ref| = ${e.toExponential(3)} > ${TOL}`);
}

function assertSameWeights(ours: Model, ref: Model): void {
  assert.deepEqual([...ours.weights.keys()].sort(), [...ref.weights.keys()].sort(), 'weight names');
  for (const [key, t] of ref.weights) {
    const o = ours.weights.get(key)!;
    assert.deepEqual(o.shape, t.shape, `${key} shape`);
    assert.ok(Buffer.from(o.data.buffer, o.data.byteOffset, o.data.byteLength).equals(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)), `${key} differs`);
  }
}

async function logits(model: Model, input: Tensor): Promise<Tensor> {
  const engine = new Engine(model, { threads: 1 });
  try {
    const last = model.layers[model.layers.length - 1].name;
    return (await engine.forward(input, [last])).activations.get(last)!;
  } finally {
    await engine.dispose();
  }
}

/** Runs an ONNX file as it is, outside convscope's engine: the export must stand on its own. */
async function runOnnx(bytes: Uint8Array, input: Tensor, output: string): Promise<Tensor> {
  const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, logSeverityLevel: 3 });
  try {
    const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', input.data, input.shape) });
    const t = out[output];
    return { shape: [...t.dims], data: t.data as Float32Array };
  } finally {
    await session.release();
  }
}

function randomInput(shape: number[], seed: number, scale: number): Tensor {
  const rng = new Rng(seed);
  return { shape, data: Float32Array.from({ length: sizeOf(shape) }, () => rng.normal() * scale) };
}

function withoutDropout(layers: Layer[]): Layer[] {
  return layers.filter((l) => l.type !== 'dropout');
}

function reencode(bytes: Uint8Array, edit: (m: ModelProto) => void): Uint8Array {
  const m = decodeModel(bytes);
  edit(m);
  return encodeModel(m);
}

function importError(bytes: Uint8Array, path: string): string {
  try {
    modelFromOnnx(bytes, path);
  } catch (e) {
    return (e as Error).message;
  }
  assert.fail(`${path} imported without an error`);
}

describe('ONNX import of the PyTorch fixtures', () => {
  const reference = readSafetensorsModel(fixture('weights.safetensors'));
  const input = fixtureNpy('input.npy');
  const refLogits = fixtureNpy('logits.npy');

  for (const file of ['model.onnx', 'model_torch_stock.onnx']) {
    test(`${file}: layers, weights and logits of the fixture`, async (t) => {
      const model = readOnnxModel(fixture(file));
      // torch.onnx.export in eval mode drops Dropout: the file holds every other layer of the architecture.
      assert.deepEqual(model.layers, withoutDropout(reference.layers));
      assert.deepEqual(model.input, [3, 64, 64]);
      assert.equal(model.name, file.replace(/\.onnx$/, ''));
      assert.deepEqual(model.preprocess, { mean: [123.68, 116.78, 103.94], std: [1, 1, 1], assumed: true }, 'a stock export carries none: the Caffe mean, marked as a guess');
      assertSameWeights(model, reference);
      assertLogitsClose(await logits(model, input), refLogits, `${file} logits`, (m) => t.diagnostic(m));
    });
  }

  test('weights listed as graph inputs, or held by Constant nodes, import the same', () => {
    const bytes = readFileSync(fixture('model_torch_stock.onnx'));
    const asInputs = reencode(bytes, (m) => {
      for (const w of m.graph.initializers) m.graph.inputs.push({ name: w.name, elemType: DataType.FLOAT, shape: w.dims });
    });
    const a = modelFromOnnx(asInputs, 'as_inputs.onnx');
    assert.deepEqual(a.layers, withoutDropout(reference.layers));
    assertSameWeights(a, reference);

    // Constant outputs get torch's anonymous names, so layer names must come from the node scopes instead.
    const asConstants = reencode(bytes, (m) => {
      const renamed = new Map(m.graph.initializers.map((w, i) => [w.name, `onnx::Const_${i}`]));
      const constants: NodeProto[] = m.graph.initializers.map((w, i) => ({
        name: `Constant_w${i}`, opType: 'Constant', domain: '', inputs: [], outputs: [renamed.get(w.name)!],
        attributes: new Map([['value', { kind: 'tensor' as const, value: { ...w, name: '' } }]]),
      }));
      for (const n of m.graph.nodes) n.inputs = n.inputs.map((i) => renamed.get(i) ?? i);
      m.graph.nodes = [...constants, ...m.graph.nodes];
      m.graph.initializers = [];
    });
    const c = modelFromOnnx(asConstants, 'as_constants.onnx');
    assert.deepEqual(c.layers, withoutDropout(reference.layers));
    assertSameWeights(c, reference);
  });

  test('an export with symbolic height and width asks for a fixed-size export', () => {
    const bytes = reencode(readFileSync(fixture('model.onnx')), (m) => {
      m.graph.inputs[0].shape = ['batch', 3, 'height', 'width'];
    });
    const msg = importError(bytes, 'dynamic.onnx');
    assert.match(msg, /^dynamic\.onnx: /);
    assert.match(msg, /fixed height and width/);
  });
});

describe('ONNX export and re-import', () => {
  async function roundTrip(model: Model, input: Tensor, report: (m: string) => void): Promise<void> {
    const path = join(tmp, `${model.name}.onnx`);
    writeOnnxModel(path, model);
    const back = readOnnxModel(path);
    assert.deepEqual(back.layers, model.layers);
    assert.deepEqual(back.input, model.input);
    assert.deepEqual(back.preprocess, model.preprocess);
    assert.deepEqual(back.classes, model.classes);
    assertSameWeights(back, model);
    const ref = await logits(model, input);
    assertLogitsClose(await logits(back, input), ref, `${model.name} re-imported`, report);
    // The file alone, in plain onnxruntime, computes the same function.
    const bytes = readFileSync(path);
    const outName = model.layers[model.layers.length - 1].type === 'linear' ? 'logits' : 'output';
    assertLogitsClose(await runOnnx(bytes, input, outName), ref, `${model.name} file run by onnxruntime`, report);
    // Without convscope's metadata the graph itself must still read back: same layers bar Dropout (exported as Identity).
    const bare = modelFromOnnx(reencode(bytes, (m) => (m.metadataProps = [])), `${model.name}.onnx`);
    assert.deepEqual(bare.layers, withoutDropout(model.layers));
    assertSameWeights(bare, model);
    assertLogitsClose(await logits(bare, input), ref, `${model.name} re-imported without metadata`, report);
  }

  test('zfnet-small round-trips: layers, weights, preprocess, classes, logits', async (t) => {
    const model = createZooModel('zfnet-small', { seed: 7, init: 'kaiming' });
    model.classes = Array.from({ length: 10 }, (_, i) => `class ${i}`);
    model.preprocess = {
      mean: [120.5, 115.25, 100],
      std: [58.4, 57.1, 57.4],
      meanImage: randomInput([3, 64, 64], 3, 30),
    };
    await roundTrip(model, randomInput([2, 3, 64, 64], 11, 60), (m) => t.diagnostic(m));
  });

  test('a model with batchnorm, avgpool, even LRN, adaptive pool and softmax round-trips', async (t) => {
    const layers: Layer[] = [
      { type: 'conv2d', name: 'features.0', inChannels: 1, outChannels: 8, kernel: [3, 3], stride: [1, 1], padding: [1, 1], bias: false },
      { type: 'batchnorm2d', name: 'features.1', channels: 8, eps: 1e-3 },
      { type: 'relu', name: 'features.2' },
      { type: 'avgpool2d', name: 'features.3', kernel: [3, 3], stride: [2, 2], padding: [1, 1], ceilMode: true, countIncludePad: false },
      { type: 'lrn', name: 'features.4', size: 4, alpha: 1e-3, beta: 0.75, k: 1 },
      { type: 'conv2d', name: 'features.5', inChannels: 8, outChannels: 12, kernel: [3, 5], stride: [1, 2], padding: [0, 2], bias: true },
      { type: 'relu', name: 'features.6' },
      { type: 'maxpool2d', name: 'features.7', kernel: [2, 2], stride: [2, 2], padding: [0, 0], ceilMode: true },
      { type: 'adaptiveavgpool2d', name: 'avgpool', output: [1, 1] },
      { type: 'flatten', name: 'flatten' },
      { type: 'linear', name: 'classifier.0', inFeatures: 12, outFeatures: 16, bias: true },
      { type: 'relu', name: 'classifier.1' },
      { type: 'dropout', name: 'classifier.2', p: 0.3 },
      { type: 'linear', name: 'classifier.3', inFeatures: 16, outFeatures: 5, bias: false },
      { type: 'softmax', name: 'probs' },
    ];
    const weights = initWeights(layers, 'kaiming', 5);
    // Batch-norm statistics away from the identity, so that a mix-up of its four tensors would show in the output.
    const rng = new Rng(9);
    for (const p of ['weight', 'bias', 'running_mean', 'running_var']) {
      weights.get(`features.1.${p}`)!.data.forEach((_, i, a) => (a[i] = p === 'running_var' ? 0.5 + rng.next() : rng.normal()));
    }
    const model: Model = { name: 'handmade', input: [1, 21, 19], layers, weights, preprocess: { mean: [33], std: [2] } };
    await roundTrip(model, randomInput([3, 1, 21, 19], 4, 1), (m) => t.diagnostic(m));
  });
});

describe('ONNX graphs torch may emit', () => {
  test('Dropout, Identity, a Reshape to [N, -1] from a Shape chain, MatMul + Add, Gemm (transB 0) and Softmax', async (t) => {
    const b = new GraphBuilder();
    const x = b.input('x', ['batch', 2, 4, 4]);
    const rng = new Rng(2);
    const rand = (n: number) => Float32Array.from({ length: n }, () => rng.normal());
    const conv = b.op1('Conv', [x, b.floatTensor('body.conv.weight', [3, 2, 3, 3], rand(54))], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] });
    const relu = b.op1('Relu', [conv]);
    const dropped = b.op1('Identity', [b.op1('Dropout', [relu, b.floats([0.25], [])])]);
    const batch = b.op1('Unsqueeze', [b.op1('Gather', [b.op1('Shape', [dropped]), b.int64s([0], [])], { axis: 0 }), b.int64s([0])]);
    const flat = b.op1('Reshape', [dropped, b.op1('Concat', [batch, b.int64s([-1])], { axis: 0 })]);
    const mm = b.op1('MatMul', [flat, b.floatTensor('onnx::MatMul_9', [48, 6], rand(288))]);
    const head = b.op1('Add', [b.floatTensor('head.bias', [6], rand(6)), mm]);
    const gemm = b.op1('Gemm', [head, b.floatTensor('onnx::Gemm_12', [6, 4], rand(24)), b.floatTensor('onnx::Gemm_13', [4], rand(4))], { transB: 0 });
    b.op1('Softmax', [gemm], {}, 'y');
    b.output('y', ['batch', 4]);
    const bytes = b.encode('torchish');
    const model = modelFromOnnx(bytes, 'torchish.onnx');
    // Layers without PyTorch-named weights or scoped node names are named by their op (numbered where ops repeat).
    assert.deepEqual(model.layers, [
      { type: 'conv2d', name: 'body.conv', inChannels: 2, outChannels: 3, kernel: [3, 3], stride: [1, 1], padding: [1, 1], bias: false },
      { type: 'relu', name: 'relu' },
      { type: 'dropout', name: 'dropout', p: 0.25 },
      { type: 'flatten', name: 'reshape' },
      { type: 'linear', name: 'head', inFeatures: 48, outFeatures: 6, bias: true },
      { type: 'linear', name: 'gemm', inFeatures: 6, outFeatures: 4, bias: true },
      { type: 'softmax', name: 'softmax' },
    ]);
    const input = randomInput([2, 2, 4, 4], 1, 1);
    assertLogitsClose(await logits(model, input), await runOnnx(bytes, input, 'y'), 'torch-style graph', (m) => t.diagnostic(m));
  });

  test('a softmax over channels of a 4-D tensor is refused, naming the node', () => {
    const b = new GraphBuilder();
    const x = b.input('input', ['N', 3, 8, 8]);
    b.op1('Softmax', [b.op1('Relu', [x])], { axis: 1 }, 'out');
    b.output('out', ['N', 3, 8, 8]);
    const bytes = b.encode('softmax4d');
    const node = decodeModel(bytes).graph.nodes.find((n) => n.opType === 'Softmax')!;
    assert.match(importError(bytes, 'softmax4d.onnx'), new RegExp(`^softmax4d\\.onnx: Softmax node '${node.name}': `));
  });

  test('an unsupported op is named with its node', () => {
    const b = new GraphBuilder();
    const x = b.input('input', ['N', 3, 8, 8]);
    const conv = b.op1('Conv', [x, b.floatTensor('features.0.weight', [4, 3, 3, 3], new Float32Array(108))], { kernel_shape: [3, 3] });
    b.op1('Erf', [conv], {}, 'out');
    b.output('out', ['N', 4, 6, 6]);
    const bytes = b.encode('erf');
    const node = decodeModel(bytes).graph.nodes.find((n) => n.opType === 'Erf')!;
    const msg = importError(bytes, 'erf.onnx');
    assert.equal(msg, `erf.onnx: unsupported ONNX op 'Erf' at node '${node.name}'`);
  });

  test('an op of a foreign domain and an LRN with an empty window are refused in one line', () => {
    const b = new GraphBuilder();
    const x = b.input('input', ['N', 3, 8, 8]);
    const conv = b.op1('Conv', [x, b.floatTensor('features.0.weight', [4, 3, 3, 3], new Float32Array(108))], { kernel_shape: [3, 3] });
    b.op1('Relu', [conv], {}, 'out');
    b.output('out', ['N', 4, 6, 6]);
    const proto = decodeModel(b.encode('evil'));
    const relu = proto.graph.nodes.find((n) => n.opType === 'Relu')!;
    relu.domain = 'com.evil';
    assert.equal(importError(encodeModel(proto), 'evil.onnx'), `evil.onnx: unsupported ONNX op 'com.evil.Relu' at node '${relu.name}': only the standard domain's ops are read`);
    const zoo = createZooModel('zfnet-small');
    const broken = { ...zoo, layers: zoo.layers.map((l) => (l.type === 'lrn' ? { ...l, size: 0 } : l)) };
    assert.throws(() => new Engine(broken), /^Error: layer 'norm1' \(lrn\): size 0: the window must hold at least one channel$/);
  });

  test('a branching graph (a residual Add) imports as a graph that computes what the file computes', async (t) => {
    const b = new GraphBuilder();
    const rng = new Rng(4);
    const x = b.input('input', ['N', 3, 8, 8]);
    const w = (name: string, cin: number) => b.floatTensor(name, [3, cin, 3, 3], Float32Array.from({ length: 3 * cin * 9 }, () => rng.normal() * 0.3));
    const relu = b.op1('Relu', [b.op1('Conv', [x, w('conv1.weight', 3)], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] })]);
    const conv2 = b.op1('Conv', [relu, w('conv2.weight', 3)], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] });
    b.op1('Add', [relu, conv2], {}, 'out');
    b.output('out', ['N', 3, 8, 8]);
    const bytes = b.encode('residual');
    const model = modelFromOnnx(bytes, 'residual.onnx');
    const add = model.layers.at(-1)!;
    assert.equal(add.type, 'add');
    assert.deepEqual(add.inputs, [model.layers[1].name, 'conv2']);
    const input = randomInput([2, 3, 8, 8], 5, 1);
    assertLogitsClose(await logits(model, input), await runOnnx(bytes, input, 'out'), 'residual graph', (m) => t.diagnostic(m));
  });

  test("TensorFlow's SAME padding (asymmetric Conv pads) and ReduceMean over H, W import and compute what the file computes", async (t) => {
    const rng = new Rng(7);
    const w = (b: GraphBuilder, name: string, cout: number, cin: number, k: number) => b.floatTensor(name, [cout, cin, k, k], Float32Array.from({ length: cout * cin * k * k }, () => rng.normal() * 0.3));
    // A chain: a stride-2 SAME conv (pads [0, 0, 1, 1]), a SAME 3x3 conv with more pad after than before, then the mean
    // over H, W without keepdims feeding a Gemm.
    const chain = new GraphBuilder();
    const x = chain.input('input', ['N', 3, 9, 9]);
    const c1 = chain.op1('Relu', [chain.op1('Conv', [x, w(chain, 'stem.weight', 4, 3, 3)], { kernel_shape: [3, 3], strides: [2, 2], pads: [0, 0, 1, 1] })]);
    const c2 = chain.op1('Relu', [chain.op1('Conv', [c1, w(chain, 'block.weight', 5, 4, 4)], { kernel_shape: [4, 4], pads: [1, 2, 2, 1] })]);
    const mean = chain.op1('ReduceMean', [c2], { axes: [-1, -2], keepdims: 0 });
    chain.op1('Gemm', [mean, chain.floatTensor('head.weight', [3, 5], Float32Array.from({ length: 15 }, () => rng.normal())), chain.floatTensor('head.bias', [3], new Float32Array(3))], { transB: 1 }, 'out');
    chain.output('out', ['N', 3]);
    const chainProto = decodeModel(chain.encode('same'));
    chainProto.opsetVersion = 17; // ReduceMean's axes are an attribute up to opset 17
    const chainBytes = encodeModel(chainProto);
    const chainModel = modelFromOnnx(chainBytes, 'same.onnx');
    assert.deepEqual(chainModel.layers.map((l) => [l.name, l.type, 'padding' in l ? l.padding : 'pads' in l ? l.pads : '']), [
      ['stem.pad', 'pad', [0, 0, 1, 1]], ['stem', 'conv2d', [0, 0]], ['relu.relu', 'relu', ''],
      ['block.pad', 'pad', [0, 1, 1, 0]], ['block', 'conv2d', [1, 1]], ['relu', 'relu', ''],
      ['reducemean.adaptiveavgpool2d', 'adaptiveavgpool2d', ''], ['reducemean', 'flatten', ''], ['head', 'linear', ''],
    ]);
    const input = randomInput([2, 3, 9, 9], 8, 1);
    assertLogitsClose(await logits(chainModel, input), await runOnnx(chainBytes, input, 'out'), 'SAME-padded chain', (m) => t.diagnostic(m));

    // In a graph (a residual Add), keepdims 1 and axes given as an input (opset 18, the builder's).
    const g = new GraphBuilder();
    const gx = g.input('input', ['N', 3, 8, 8]);
    const a = g.op1('Relu', [g.op1('Conv', [gx, w(g, 'a.weight', 3, 3, 2)], { kernel_shape: [2, 2], pads: [0, 0, 1, 1] })]);
    const sum = g.op1('Add', [a, gx]);
    g.op1('Flatten', [g.op1('ReduceMean', [sum, g.int64s([2, 3])], { keepdims: 1 })], { axis: 1 }, 'out');
    g.output('out', ['N', 3]);
    const graphBytes = g.encode('same-graph');
    const graphModel = modelFromOnnx(graphBytes, 'same-graph.onnx');
    assert.deepEqual(graphModel.layers.map((l) => l.type), ['pad', 'conv2d', 'relu', 'add', 'adaptiveavgpool2d', 'flatten']);
    const input2 = randomInput([2, 3, 8, 8], 9, 1);
    assertLogitsClose(await logits(graphModel, input2), await runOnnx(graphBytes, input2, 'out'), 'SAME-padded graph, ReduceMean axes input', (m) => t.diagnostic(m));

    // A mean over channels is no global pooling: refused, naming the node.
    const c = new GraphBuilder();
    const cx = c.input('input', ['N', 3, 8, 8]);
    c.op1('ReduceMean', [c.op1('Relu', [cx]), c.int64s([1])], { keepdims: 0 }, 'out');
    c.output('out', ['N', 8, 8]);
    const node = decodeModel(c.encode('cmean')).graph.nodes.find((n) => n.opType === 'ReduceMean')!;
    assert.equal(importError(c.encode('cmean'), 'cmean.onnx'), `cmean.onnx: ReduceMean node '${node.name}': axes [1] of a rank-4 tensor: only the mean over H and W (axes 2, 3 of N, C, H, W) is supported`);
  });

  test('a branch that never merges back is refused in one line', () => {
    const b = new GraphBuilder();
    const x = b.input('input', ['N', 3, 8, 8]);
    const w = (name: string) => b.floatTensor(name, [3, 3, 3, 3], new Float32Array(81));
    const relu = b.op1('Relu', [b.op1('Conv', [x, w('conv1.weight')], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] })]);
    b.op1('Relu', [relu]);
    const conv2 = b.op1('Conv', [relu, w('conv2.weight')], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] });
    b.op1('Add', [relu, conv2], {}, 'out');
    b.output('out', ['N', 3, 8, 8]);
    const msg = importError(b.encode('dangling'), 'dangling.onnx');
    assert.match(msg, /^dangling\.onnx: the model has 2 outputs \('.+', '.+'\); it must end in exactly one layer$/);
  });

  test('truncated, garbage, empty and non-ONNX files give a one-line error naming the file', () => {
    const good = readFileSync(fixture('model.onnx'));
    const rng = new Rng(1);
    const cases: [string, Uint8Array][] = [
      ['truncated.onnx', good.subarray(0, 5000)],
      ['cut-in-weights.onnx', good.subarray(0, good.length - 100)],
      ['garbage.onnx', Uint8Array.from({ length: 4096 }, () => rng.int(256))],
      ['empty.onnx', new Uint8Array(0)],
      ['text.onnx', new TextEncoder().encode('this is not a model\n')],
    ];
    for (const [name, bytes] of cases) {
      const path = join(tmp, name);
      writeFileSync(path, bytes);
      let msg = '';
      assert.throws(() => readOnnxModel(path), (e: Error) => ((msg = e.message), true));
      assert.ok(msg.startsWith(`${path}: `), `${name}: ${msg}`);
      assert.ok(!msg.includes('\n'), `${name}: ${msg}`);
    }
  });
});
