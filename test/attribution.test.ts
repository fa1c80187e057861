// Class attributions beyond the paper against Captum 0.7 (../shared/fixtures/attribution): Grad-CAM, Guided
// Grad-CAM, Integrated Gradients under both rules, SmoothGrad and SmoothGrad-Squared with Captum's noise, on the
// small chain model and on the graph model resnet_small.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { gradCam, guidedGradCam } from '../src/analysis/gradcam.js';
import { integratedGradients, integrationPoints } from '../src/analysis/integrated-gradients.js';
import { smoothGrad, smoothGradNoise } from '../src/analysis/smoothgrad.js';
import { Engine } from '../src/engine/engine.js';
import { resolveLayer } from '../src/model/names.js';
import { importOnnx } from '../src/model/onnx-import.js';
import { readSafetensorsModel } from '../src/model/safetensors.js';
import { readNpy, type Tensor } from '../src/tensor.js';
import { assertClose, ROOT } from './helpers.js';

const TOL = 1e-4;
const SHARED = join(ROOT, '..', 'shared', 'fixtures');

function file(...parts: string[]): string {
  const p = join(SHARED, ...parts);
  assert.ok(existsSync(p), `fixture ${p} is missing: tests need ../shared/fixtures beside the project`);
  return p;
}

const CASES = [
  { name: 'small', layer: 'relu5', target: 2, deltas: { riemann_trapezoid: -6.754, gausslegendre: 0.2918 }, engine: () => new Engine(readSafetensorsModel(file('small', 'weights.safetensors'))), input: () => readNpy(file('small', 'input.npy')) },
  { name: 'resnet_small', layer: 'layer3', target: 5, deltas: { riemann_trapezoid: -155.5, gausslegendre: -0.3835 }, engine: () => new Engine(importOnnx(readFileSync(file('graph', 'resnet_small', 'model.onnx')), 'resnet_small.onnx').model), input: () => readNpy(file('graph', 'resnet_small', 'input.npy')) },
] as const;

for (const c of CASES) {
  describe(`attributions of ${c.name} equal Captum's`, () => {
    const engine = c.engine();
    after(() => engine.dispose());
    const input = c.input();
    const ref = (f: string): Tensor => readNpy(file('attribution', c.name, f));
    const layer = resolveLayer(engine.model, c.layer);

    test('Grad-CAM at its layer and upsampled to the input', async () => {
      const cam = await gradCam(engine, input, [c.target], layer);
      assertClose(cam.map, ref('gradcam.npy'), TOL, 'gradcam');
      assertClose(cam.upsampled, ref('gradcam_upsampled.npy'), TOL, 'gradcam upsampled');
    });

    test('Guided Grad-CAM', async () => {
      const { attribution } = await guidedGradCam(engine, input, [c.target], layer);
      assertClose(attribution, ref('guided_gradcam.npy'), TOL, 'guided gradcam');
    });

    for (const rule of ['riemann_trapezoid', 'gausslegendre'] as const) {
      test(`Integrated Gradients, ${rule}, 16 steps, and its convergence delta`, async () => {
        // Batches of 5 do not divide 16: the last batch is short.
        const ig = await integratedGradients(engine, input, c.target, { steps: 16, integration: rule, batch: 5 });
        assertClose(ig.attribution, ref(`ig_${rule}_16.npy`), TOL, rule);
        const expected = c.deltas[rule];
        assert.ok(Math.abs(ig.delta - expected) <= 2e-3 * Math.abs(expected) + 1e-3, `delta ${ig.delta} vs Captum's ${expected}`);
      });
    }

    test('SmoothGrad and SmoothGrad-Squared with the given noise', async () => {
      const noiseTensor = ref('smoothgrad_noise.npy');
      assertClose((await smoothGrad(engine, input, c.target, { noiseTensor, batch: 3 })).attribution, ref('smoothgrad.npy'), TOL, 'smoothgrad');
      assertClose((await smoothGrad(engine, input, c.target, { noiseTensor, squared: true })).attribution, ref('smoothgrad_sq.npy'), TOL, 'smoothgrad squared');
    });
  });
}

describe('integration rules and noise', () => {
  test('Gauss-Legendre integrates polynomials of degree 2n-1 exactly on [0, 1]', () => {
    for (const n of [2, 5, 16, 50]) {
      const { alphas, weights } = integrationPoints('gausslegendre', n);
      for (const degree of [0, 1, 2 * n - 1]) {
        const integral = alphas.reduce((s, a, i) => s + weights[i] * a ** degree, 0);
        assert.ok(Math.abs(integral - 1 / (degree + 1)) < 1e-12, `n ${n} degree ${degree}: ${integral}`);
      }
      assert.ok(alphas.every((a, i) => a > 0 && a < 1 && (i === 0 || a > alphas[i - 1])), 'ascending inside (0, 1)');
    }
  });

  test("Captum's trapezoid: linspace(0, 1, n), weights 1/n halved at the ends", () => {
    const { alphas, weights } = integrationPoints('riemann_trapezoid', 5);
    assert.deepEqual(alphas, [0, 0.25, 0.5, 0.75, 1]);
    assert.deepEqual(weights, [0.1, 0.2, 0.2, 0.2, 0.1]);
    assert.throws(() => integrationPoints('riemann_trapezoid', 1), /steps >= 2/);
  });

  test('the noise is seeded and scaled to the input range', () => {
    const input = { shape: [1, 1, 100, 100], data: new Float32Array(10000).map((_, k) => (k % 2) * 10) };
    const a = smoothGradNoise(input, 4, 0.2, 7);
    assert.equal(a.sigma, 2);
    assert.deepEqual(a.noise.data, smoothGradNoise(input, 4, 0.2, 7).noise.data);
    assert.notDeepEqual(a.noise.data, smoothGradNoise(input, 4, 0.2, 8).noise.data);
    const values = Array.from(a.noise.data);
    const mean = values.reduce((s, v) => s + v, 0) / values.length;
    const sd = Math.sqrt(values.reduce((s, v) => s + (v - mean) ** 2, 0) / values.length);
    assert.ok(Math.abs(mean) < 0.05 && Math.abs(sd - 2) < 0.05, `mean ${mean}, sd ${sd}`);
  });
});
