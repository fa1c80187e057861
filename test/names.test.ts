// Layer names a user can type: module paths read from torch.onnx.export's scopes, module names that stand for the
// module's output, raw ONNX names, `inspect --json`, and one-line errors for names and graphs that do not resolve.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { GraphBuilder } from '../src/onnx/builder.js';
import { modelFromOnnx } from '../src/model/onnx-import.js';
import { modulePath } from '../src/model/onnx-import/names.js';
import { moduleOutput, resolveLayer } from '../src/model/names.js';
import { createZooModel } from '../src/model/zoo.js';
import { errorLines, fixture, ROOT } from './helpers.js';

const GRAPH = join(ROOT, '..', 'shared', 'fixtures', 'graph', 'resnet_small');
const CLI = join(ROOT, 'src', 'cli', 'main.ts');
const run = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, encoding: 'utf8' });

test('module paths from the exporter\'s scopes, as PyTorch spells them', () => {
  assert.equal(modulePath('/layer1/layer1.1/relu_1/Relu'), 'layer1.1.relu_1');
  assert.equal(modulePath('/layer2/layer2.0/downsample/downsample.0/Conv'), 'layer2.0.downsample.0');
  assert.equal(modulePath('/features/features.0/features.0.2/HardSwish'), 'features.0.2');
  assert.equal(modulePath('/features/features.4/block/block.6/fc1/Conv'), 'features.4.block.6.fc1');
  assert.equal(modulePath('/conv1/Conv'), 'conv1');
  assert.equal(modulePath('/Flatten'), undefined);
  assert.equal(modulePath('Conv_0'), undefined);
});

describe('a residual export (resnet_small)', () => {
  const model = modelFromOnnx(readFileSync(join(GRAPH, 'model.onnx')), 'resnet_small.onnx');
  const index = JSON.parse(readFileSync(join(GRAPH, 'index.json'), 'utf8')) as { modules: Record<string, { onnx_output: string }> };

  test('layers are named by module path, unique, and an op directly in a block does not take the block\'s name', () => {
    const names = model.layers.map((l) => l.name);
    assert.equal(new Set(names).size, names.length);
    assert.deepEqual(names.slice(0, 8), ['conv1', 'relu', 'maxpool', 'layer1.0.conv1', 'layer1.0.relu', 'layer1.0.conv2', 'layer1.0.add', 'layer1.0.relu_1']);
    assert.ok(names.includes('layer2.0.downsample.0'));
    assert.deepEqual(names.slice(-3), ['avgpool', 'flatten', 'fc']);
    // The same file gives the same names.
    assert.deepEqual(modelFromOnnx(readFileSync(join(GRAPH, 'model.onnx')), 'again.onnx').layers.map((l) => l.name), names);
  });

  test('every module of index.json resolves to the layer that writes the ONNX tensor it lists', () => {
    for (const [module, { onnx_output }] of Object.entries(index.modules)) {
      const layer = resolveLayer(model, module);
      assert.equal(model.onnxSources?.get(layer)?.output, onnx_output, module);
      // The raw tensor name resolves to the same layer.
      assert.equal(resolveLayer(model, onnx_output), layer, onnx_output);
    }
    // A block's name is its output: the ReLU after the residual add, not the add.
    assert.equal(moduleOutput(model, 'layer1.0'), 'layer1.0.relu_1');
    assert.equal(resolveLayer(model, 'layer3'), 'layer3.0.relu_1');
    assert.equal(resolveLayer(model, '/layer3/layer3.0/Add'), 'layer3.0.add', 'an ONNX node name');
  });

  test('a name that resolves to nothing is one line with the closest names', () => {
    assert.throws(() => resolveLayer(model, 'layer2.0.relu1'), /^Error: unknown layer 'layer2\.0\.relu1'; did you mean layer2\.0\.relu, layer2\.0\.relu_1, .*\(28 layers; convscope inspect lists them\)$/);
    const r = run(['project', '--model', join(GRAPH, 'model.onnx'), '--input-npy', join(GRAPH, 'input.npy'), '--layer', 'layer9', '--feature', '0', '--out', join(ROOT, 'never-written.npy')]);
    assert.equal(r.status, 2);
    assert.equal(errorLines(r.stderr).length, 1);
    assert.match(r.stderr, /unknown layer 'layer9'/);
  });

  test('inspect --json lists every layer in topological order with its ONNX node and tensor, the logits last', () => {
    const r = run(['inspect', '--model', join(GRAPH, 'model.onnx'), '--json']);
    assert.equal(r.status, 0, r.stderr);
    const json = JSON.parse(r.stdout) as { layers: { name: string; op: string; onnxNode: string | null; onnxOutput: string | null; inputs: string[]; shape: number[]; rf: { size: number[] }; params: number; flops: number }[] };
    assert.deepEqual(json.layers.map((l) => l.name), model.layers.map((l) => l.name));
    const seen = new Set(['input']);
    for (const l of json.layers) {
      for (const i of l.inputs) assert.ok(seen.has(i), `${l.name} reads ${i} before it is listed`);
      seen.add(l.name);
    }
    const add = json.layers.find((l) => l.name === 'layer1.0.add')!;
    assert.deepEqual(add.inputs, ['layer1.0.conv2', 'maxpool']);
    assert.equal(add.onnxNode, '/layer1/layer1.0/Add');
    // The add's field is the larger of its two paths: the conv branch's, not the skip's.
    assert.deepEqual(add.rf.size, json.layers.find((l) => l.name === 'layer1.0.conv2')!.rf.size);
    const last = json.layers.at(-1)!;
    assert.deepEqual([last.name, last.op, last.shape, last.onnxOutput], ['fc', 'linear', [10], 'logits']);
    const zoo = JSON.parse(run(['inspect', '--model', 'zfnet-small', '--json']).stdout) as { layers: { onnxNode: null }[] };
    assert.ok(zoo.layers.every((l) => l.onnxNode === null));
  });
});

test('chain exports keep their names; zoo models resolve only their own names', () => {
  const chain = modelFromOnnx(readFileSync(fixture('model.onnx')), 'zf.onnx');
  assert.ok(chain.layers.some((l) => l.name === 'relu5'));
  const zoo = createZooModel('zfnet-small');
  assert.equal(resolveLayer(zoo, 'relu5'), 'relu5');
  assert.throws(() => resolveLayer(zoo, 'relu9'), /^Error: unknown layer 'relu9'; did you mean relu1, relu2/);
});

test('an ONNX graph with a cycle is refused in one line naming the nodes', () => {
  const b = new GraphBuilder();
  const x = b.input('input', ['N', 1, 4, 4]);
  // Node a reads node b's output, which reads a's: the file is not a DAG in the order it lists.
  const a = b.op1('Add', [x, 'loop'], {}, 'a');
  b.op1('Relu', [a], {}, 'loop');
  b.output('loop', ['N', 1, 4, 4]);
  assert.throws(() => modelFromOnnx(b.encode('cycle'), 'cycle.onnx'), /^Error: cycle\.onnx: node '.+' \(Add\) reads 'loop', which node '.+' \(Relu\) writes after it: the graph has a cycle or lists its nodes out of order$/);
});
