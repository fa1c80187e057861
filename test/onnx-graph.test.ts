// ONNX import of graphs that branch and merge: the stock torch exports of ../shared/fixtures/graph (PyTorch 1.13 +
// Captum 0.7) against their logits, module activations and Captum attributions: a small ResNet (residual adds), a
// MobileNet/EfficientNet-shaped net (depthwise and dilated convs, ReLU6, Hardswish, SiLU, squeeze-excite) and a
// SqueezeNet/DenseNet-shaped one (Fire concats, a dense layer, ceil-mode pools, a zero Pad, LeakyReLU).
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { occlusionMaps } from '../src/analysis/occlusion.js';
import ort from 'onnxruntime-node';
import { Engine } from '../src/engine/engine.js';
import { modelToOnnx } from '../src/engine/onnx-export.js';
import { resolveLayer } from '../src/model/names.js';
import { importOnnx } from '../src/model/onnx-import.js';
import { readNpy, tensor } from '../src/tensor.js';
import { assertClose, ROOT } from './helpers.js';

// The fixtures' README tolerance.
const TOL = 1e-4;

interface Index {
  target: number;
  modules: Record<string, { shape: number[]; onnx_output: string }>;
  neuron: { module: string; feature: number; y: number; x: number; value: number };
}

/** What each fixture must import as, beyond matching PyTorch and Captum. */
const STRUCTURE: Record<string, (types: string[]) => void> = {
  // Two basic blocks in layer1, one in layer2 and layer3.
  resnet_small: (types) => assert.equal(types.filter((t) => t === 'add').length, 4),
  mobile_small: (types) => {
    for (const t of ['clip', 'hardswish', 'hardsigmoid', 'sigmoid', 'mul', 'add']) assert.ok(types.includes(t), `a ${t} layer`);
  },
  fire_small: (types) => {
    // Three concats (two Fire modules and a dense layer), an asymmetric zero pad, a BatchNorm the export cannot fold.
    assert.equal(types.filter((t) => t === 'concat').length, 3);
    for (const t of ['pad', 'leakyrelu', 'batchnorm2d', 'avgpool2d']) assert.ok(types.includes(t), `a ${t} layer`);
  },
};

for (const name of Object.keys(STRUCTURE)) {
  describe(`ONNX import of ${name}`, () => {
    const file = (f: string) => {
      const p = join(ROOT, '..', 'shared', 'fixtures', 'graph', name, f);
      assert.ok(existsSync(p), `fixture ${p} is missing: tests need ../shared/fixtures beside the project`);
      return p;
    };
    const { model } = importOnnx(readFileSync(file('model.onnx')), `${name}.onnx`);
    const index = JSON.parse(readFileSync(file('index.json'), 'utf8')) as Index;
    const input = readNpy(file('input.npy'));
    const engine = new Engine(model);
    after(() => engine.dispose());
    const classes = readNpy(file('logits.npy')).shape[1];

    test('the merges name their producers', () => {
      STRUCTURE[name](model.layers.map((l) => l.type));
      for (const l of model.layers) if (l.type === 'add' || l.type === 'mul') assert.equal(l.inputs?.length, 2, l.name);
    });

    test('logits and every module output equal PyTorch', async () => {
      const modules = Object.entries(index.modules).map(([module, m]) => {
        // A module called twice (a block's `relu`) is two layers, `relu` then `relu_1`; PyTorch's forward hook, which
        // recorded act_<module>.npy, keeps the last call (act_layer2.0.relu.npy equals act_layer2.npy), while the
        // module's name and index.json stand for the first call.
        const lastCall = m.onnx_output.replace(/\/relu\/Relu_output_0$/, '/relu_1/Relu_output_0');
        const layer = resolveLayer(model, lastCall !== m.onnx_output && model.onnxNames?.has(lastCall) ? lastCall : module);
        assert.equal(model.onnxSources?.get(layer)?.output, lastCall !== m.onnx_output && model.onnxNames?.has(lastCall) ? lastCall : m.onnx_output, module);
        return { module, layer };
      });
      const logits = model.layers.at(-1)!.name;
      const { activations } = await engine.forward(input, [logits, ...modules.map((m) => m.layer)]);
      assertClose(activations.get(logits)!, readNpy(file('logits.npy')), TOL, 'logits');
      for (const { module, layer } of modules) assertClose(activations.get(layer)!, readNpy(file(`act_${module}.npy`)), TOL, module);
    });

    for (const [rule, ref] of [['gradient', 'gradient_target'], ['deconvnet', 'deconv_target'], ['guided', 'guided_target']] as const) {
      test(`${rule} of the target logit equals Captum (${ref}.npy)`, async () => {
        const logits = model.layers.at(-1)!.name;
        const mask = tensor([1, classes]);
        mask.data[index.target] = 1;
        const { projection } = await engine.backward(input, { layer: logits, mask, value: 'one' }, { rule, lrn: 'gradient' });
        assertClose(projection, readNpy(file(`${ref}.npy`)), TOL, ref);
      });
    }

    for (const rule of ['gradient', 'deconvnet', 'guided'] as const) {
      test(`${rule} of one inner unit equals Captum's Neuron${rule === 'gradient' ? 'Gradient' : rule === 'deconvnet' ? 'Deconvolution' : 'GuidedBackprop'}`, async () => {
        const { module, feature, y, x, value } = index.neuron;
        const layer = resolveLayer(model, module);
        const [, c, h, w] = index.modules[module].shape;
        const mask = tensor([1, c, h, w]);
        mask.data[(feature * h + y) * w + x] = 1;
        const { projection, activation } = await engine.backward(input, { layer, mask, value: 'one' }, { rule, lrn: 'gradient' });
        assert.ok(Math.abs(activation.data[(feature * h + y) * w + x] - value) <= TOL * Math.abs(value), 'the unit');
        assertClose(projection, readNpy(file(`neuron_${rule}.npy`)), TOL, `neuron_${rule}`);
      });
    }

    test('occlusion (12 px window, stride 6, baseline 0) equals Captum Occlusion (baseline 0 = the mean fill), incremental and in full', async () => {
      for (const incremental of [true, false]) {
        const r = await occlusionMaps(engine, input, { mode: 'attribution', window: 12, stride: 6, target: index.target, fill: 'mean', incremental });
        assert.equal(r.mode, 'attribution');
        if (r.mode === 'attribution') assertClose(r.attribution, readNpy(file('occlusion_w12_s6_target.npy')), TOL, `attribution, incremental ${incremental}`);
      }
    });

    test('the BatchNorm-unfolded export imports to the same logits', async () => {
      const bn = importOnnx(readFileSync(file('model_bn.onnx')), `${name}_bn.onnx`).model;
      assert.ok(bn.layers.some((l) => l.type === 'batchnorm2d'));
      const e = new Engine(bn);
      try {
        const logits = bn.layers.at(-1)!.name;
        assertClose((await e.forward(input, [logits])).activations.get(logits)!, readNpy(file('logits.npy')), TOL, 'logits');
      } finally {
        await e.dispose();
      }
    });

    test('convscope\'s ONNX export of the graph runs in onnxruntime and re-imports to the same graph', async () => {
      const bytes = modelToOnnx(model);
      const back = importOnnx(bytes, 'exported.onnx').model;
      assert.deepEqual(back.layers, model.layers);
      const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, logSeverityLevel: 3 });
      try {
        const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', input.data, input.shape) });
        const logits = out[session.outputNames[0]];
        assertClose({ shape: [...logits.dims], data: logits.data as Float32Array }, readNpy(file('logits.npy')), TOL, 'exported logits');
      } finally {
        await session.release();
      }
    });
  });
}
