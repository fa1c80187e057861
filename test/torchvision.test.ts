// Stock torch.onnx.export files of the nine torchvision classifiers (seeded random weights, exported by Debian's
// python3-torchvision through bench/tooling/export_torchvision.py into a temporary folder): each imports, and its
// logits equal PyTorch's. At 64 px to keep the suite fast; vgg11_bn exports only at 224 (its 7x7 adaptive pool).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Engine } from '../src/engine/engine.js';
import { loadModel } from '../src/model/load.js';
import { readNpy } from '../src/tensor.js';
import { assertClose, ROOT } from './helpers.js';

const PYTHON = '/usr/bin/python3';
/** Model -> input size. */
const MODELS: Record<string, number> = {
  resnet18: 64, resnet50: 64, vgg11_bn: 224, mobilenet_v2: 64, mobilenet_v3_small: 64, efficientnet_b0: 64, squeezenet1_1: 64, densenet121: 64, googlenet: 64,
};
const TOL = 1e-4;

describe('stock torchvision exports', { timeout: 600_000 }, () => {
  const out = mkdtempSync(join(tmpdir(), 'convscope-torchvision-'));
  after(() => rmSync(out, { recursive: true, force: true }));
  for (const size of new Set(Object.values(MODELS))) {
    const names = Object.keys(MODELS).filter((n) => MODELS[n] === size);
    const r = spawnSync(PYTHON, [join(ROOT, 'bench', 'tooling', 'export_torchvision.py'), out, '--size', String(size), '--models', names.join(',')], { encoding: 'utf8' });
    assert.equal(r.status, 0, `export at ${size} px failed (Debian's python3-torchvision and python3-onnx are needed): ${r.stderr.trim().split('\n').slice(-3).join(' ')}`);
  }

  for (const [name, size] of Object.entries(MODELS)) {
    test(`${name} at ${size} px imports and gives PyTorch's logits`, async () => {
      const dir = join(out, `${name}-${size}`);
      assert.ok(existsSync(join(dir, 'model.onnx')), `no export in ${dir}`);
      const model = loadModel(join(dir, 'model.onnx'));
      const engine = new Engine(model, { threads: 2 });
      try {
        const last = model.layers[model.layers.length - 1].name;
        const ours = (await engine.forward(readNpy(join(dir, 'input.npy')), [last])).activations.get(last)!;
        assertClose(ours, readNpy(join(dir, 'logits.npy')), TOL, `${name} logits`);
      } finally {
        await engine.dispose();
      }
    });
  }
});
