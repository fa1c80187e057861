// The train step on graph models with BatchNorm in training mode, against PyTorch 1.13 (../shared/fixtures/graph/*:
// model_bn.onnx keeps every BatchNormalization; train_batch_* is one batch of 8 in train mode): the loss, every
// parameter's gradient, the input's, and the running statistics after the step (momentum 0.1, unbiased variance).
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Engine } from '../src/engine/engine.js';
import { trainedWeights } from '../src/model/layers.js';
import { importOnnx } from '../src/model/onnx-import.js';
import { readNpy } from '../src/tensor.js';
import { openShapes } from '../src/data/shapes.js';
import { resolveLayer } from '../src/model/names.js';
import { createZooModel } from '../src/model/zoo.js';
import { Sgd } from '../src/train/optimizer.js';
import { PAPER_TRAINING, train, type TrainConfig } from '../src/train/trainer.js';
import { assertClose, ROOT } from './helpers.js';

const TOL = 1e-4;
/** Per fixture, the batch-norm biases whose gradient is 0 (see below): the last one of each inverted residual block. */
const ZERO_GRADIENTS: Record<string, number> = { resnet_small: 0, mobile_small: 5, fire_small: 0 };

for (const name of ['resnet_small', 'mobile_small', 'fire_small']) {
  describe(`train step of ${name} (BatchNorm in training mode)`, () => {
    const dir = join(ROOT, '..', 'shared', 'fixtures', 'graph', name);
    const file = (f: string) => {
      const p = join(dir, f);
      assert.ok(existsSync(p), `fixture ${p} is missing`);
      return p;
    };
    const { model } = importOnnx(readFileSync(file('model_bn.onnx')), `${name}_bn.onnx`);
    const engine = new Engine(model);
    after(() => engine.dispose());
    const input = readNpy(file('train_batch_input.npy'));
    const labels = Int32Array.from(readNpy(file('train_batch_labels.npy')).data);

    test('loss, every parameter gradient, the input gradient and the updated running statistics equal PyTorch', async () => {
      const before = new Map([...model.weights].map(([k, t]) => [k, t.data.slice()]));
      const step = await engine.trainStep(input, labels, model.weights, { inputGradient: true });
      assertClose(step.inputGradient!, readNpy(file('train_batch_grad_input.npy')), TOL, 'input');
      assert.ok(Math.abs(step.loss - readNpy(file('train_batch_loss.npy')).data[0]) <= TOL * Math.abs(step.loss), `loss ${step.loss}`);
      const gradFiles = readdirSync(dir).filter((f) => f.startsWith('train_batch_grad_') && f !== 'train_batch_grad_input.npy');
      const trained = trainedWeights(model.layers);
      // PyTorch's parameters are exactly the weights convscope trains: every one has its gradient, no more.
      assert.deepEqual(new Set(gradFiles.map((f) => f.slice('train_batch_grad_'.length, -'.npy'.length))), trained);
      assert.deepEqual(new Set(step.grads.keys()), trained);
      const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      let zeros = 0;
      for (const f of gradFiles) {
        const key = f.slice('train_batch_grad_'.length, -'.npy'.length);
        const ref = readNpy(file(f));
        const ours = step.grads.get(key)!;
        // The bias of a batch norm whose output reaches the loss only through a 1x1 conv and another training-mode
        // batch norm (MobileNet's linear bottleneck) has a gradient of exactly 0: the next batch norm subtracts any
        // per-channel shift. PyTorch's values there are float32 cancellation noise (below 2e-8, where the layer's
        // weight gradient is 1e-2), which no float32 sum reproduces to 1e-4 of itself. Such a gradient is checked
        // against the layer's gradient scale instead: |ours| <= 1e-4 max|weight gradient|.
        const scale = key.endsWith('.bias') ? maxAbs(step.grads.get(key.replace(/bias$/, 'weight')) ?? []) : 0;
        if (maxAbs(ref.data) < 1e-6 * scale) {
          zeros++;
          assert.ok(maxAbs(ours) <= TOL * scale, `${key}: a zero gradient, ours up to ${maxAbs(ours)}, the layer's scale ${scale}`);
          continue;
        }
        assertClose({ shape: ref.shape, data: ours }, ref, TOL, key);
      }
      assert.equal(zeros, ZERO_GRADIENTS[name], 'gradients that are exactly zero by the math');
      const statFiles = readdirSync(dir).filter((f) => f.startsWith('train_batch_after_'));
      assert.ok(statFiles.length > 0);
      assert.equal(step.statistics.size, statFiles.length);
      for (const f of statFiles) {
        const key = f.slice('train_batch_after_'.length, -'.npy'.length);
        const ref = readNpy(file(f));
        assertClose({ shape: ref.shape, data: step.statistics.get(key)! }, ref, TOL, key);
      }
      // The step reads the weights and changes none of them; the trainer applies the statistics and SGD.
      for (const [k, t] of model.weights) assert.deepEqual(t.data, before.get(k), k);
      assert.equal(new Sgd(model.weights, trained).velocity.size, trained.size);
    });
  });
}

describe('the zoo\'s resnet-small', () => {
  test('is torchvision\'s BasicBlock shape, named as an import of its export would be', () => {
    const model = createZooModel('resnet-small', { init: 'kaiming' });
    const names = model.layers.map((l) => l.name);
    for (const n of ['conv1', 'bn1', 'maxpool', 'layer1.0.conv1', 'layer1.0.add', 'layer1.0.relu_1', 'layer2.0.downsample.0', 'layer2.0.downsample.1', 'layer3.1.relu_1', 'fc']) assert.ok(names.includes(n), n);
    assert.equal(resolveLayer(model, 'layer2'), 'layer2.1.relu_1');
    assert.equal(model.layers.filter((l) => l.type === 'add').length, 6);
  });

  test('learns with batch norm in training mode: the loss falls, the running statistics follow the data, and resume is exact', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'convscope-resnet-'));
    const config: TrainConfig = { ...PAPER_TRAINING, epochs: 3, batchSize: 16, snapshotEpochs: [3], checkpointEvery: 5, augment: { flip: false, randomCrop: 0 } };
    const data = () => [openShapes({ count: 96 }, 'train'), openShapes({ count: 32 }, 'val')] as const;
    const fresh = () => createZooModel('resnet-small', { seed: 1, init: 'kaiming' });
    const full = await train(fresh(), ...data(), config, { outDir: join(dir, 'full') });
    const losses = full.history.map((h) => h.trainLoss);
    assert.ok(losses[2] < 0.8 * losses[0], `loss ${losses.map((l) => l.toFixed(3)).join(' -> ')}`);
    const mean = full.model.weights.get('bn1.running_mean')!.data;
    assert.ok(mean.some((v) => v !== 0), 'running means moved from their zero start');
    // Stopped after 7 batches and resumed: the same weights, running statistics included.
    await train(fresh(), ...data(), config, { outDir: join(dir, 'cut'), stopAfterBatches: 7 });
    const resumed = await train(fresh(), ...data(), config, { outDir: join(dir, 'cut'), resume: true });
    for (const [key, t] of full.model.weights) assert.deepEqual(resumed.model.weights.get(key)!.data, t.data, key);
  });
});
