// Parity of the compiled forward and backward graphs with PyTorch 1.13 / Captum 0.7 (../shared/fixtures/small).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Engine } from '../src/engine/engine.js';
import { decodeSafetensors, readSafetensorsModel } from '../src/model/safetensors.js';
import { maxUnit, projectClass, projectUnit, projectUnits, type Unit } from '../src/analysis/project.js';
import { concatBatch, tensor, type Tensor } from '../src/tensor.js';
import { assertClose, fixture, fixtureEngine, fixtureNpy } from './helpers.js';

// The fixtures' README: a correct float32 implementation meets max|ours - ref| <= 1e-4 * max|ref|.
const TOL = 1e-4;

let engine: Engine;
let input: Tensor;
before(() => {
  ({ engine, input } = fixtureEngine());
});
after(() => engine.dispose());

describe('forward parity', () => {
  test('logits and activations equal PyTorch', async () => {
    const pairs: [string, string][] = [
      ['fc8', 'logits.npy'], ['pool1', 'act_pool1.npy'], ['norm1', 'act_norm1.npy'], ['norm2', 'act_norm2.npy'],
      ['relu5', 'act_relu5.npy'], ['pool5', 'act_pool5.npy'], ['fc6', 'act_fc6.npy'],
    ];
    const { activations } = await engine.forward(input, pairs.map(([l]) => l));
    for (const [layer, file] of pairs) assertClose(activations.get(layer)!, fixtureNpy(file), TOL, layer);
  });

  test('switches are flat indices over the batch tensor and pick each window max', async () => {
    const batch = concatBatch([input, fixtureNpy('train_batch_input.npy')]);
    const { activations, switches } = await engine.forward(batch, ['norm1', 'pool2'], { switches: true });
    const pooled = activations.get('pool2')!;
    const sw = switches.get('pool2')!;
    const { activations: below } = await engine.forward(batch, ['relu2']);
    const relu2 = below.get('relu2')!;
    assert.deepEqual(sw.shape, pooled.shape);
    const perItem = relu2.data.length / batch.shape[0];
    for (let i = 0; i < sw.data.length; i++) {
      const idx = Number(sw.data[i]);
      const item = Math.floor(i / (pooled.data.length / batch.shape[0]));
      assert.ok(idx >= item * perItem && idx < (item + 1) * perItem, `switch ${i} points outside its batch item`);
      assert.equal(relu2.data[idx], pooled.data[i]);
    }
    assert.ok(switches.has('pool1'), 'switches of every max-pool below the requested layers');
  });
});

const units: [number, string][] = [[19, 'f19'], [59, 'f59'], [8, 'f8']];

describe('deconvnet projections (Zeiler & Fergus)', () => {
  for (const [feature, tag] of units) {
    test(`relu5 ${tag}: seeded with the activation, LRN true gradient and LRN identity`, async () => {
      const meta = JSON.parse(await import('node:fs').then((fs) => fs.readFileSync(fixture('index.json'), 'utf8'))).files[`zf_proj_relu5_${tag}_lrngrad.npy`];
      for (const lrn of ['gradient', 'identity'] as const) {
        const p = await projectUnit(engine, input, 'relu5', feature, 'max', { rule: 'deconvnet', lrn, seedValue: 'activation' });
        assert.deepEqual([p.unit.y, p.unit.x], [meta.h, meta.w], 'max position');
        assert.ok(Math.abs(p.value - meta.value) <= 1e-4 * meta.value, `value ${p.value} vs ${meta.value}`);
        assertClose(p.projection, fixtureNpy(`zf_proj_relu5_${tag}_${lrn === 'gradient' ? 'lrngrad' : 'lrnskip'}.npy`), TOL, `${tag} lrn ${lrn}`);
      }
    });
    test(`relu5 ${tag}: seeded with 1 equals Captum Deconvolution`, async () => {
      const p = await projectUnit(engine, input, 'relu5', feature, 'max', { rule: 'deconvnet', lrn: 'gradient', seedValue: 'one' });
      assertClose(p.projection, fixtureNpy(`deconv_captum_relu5_${tag}.npy`), TOL, tag);
    });
  }

  test('projecting a map at its max in one call equals finding the max first, every feature, every rule', async () => {
    // relu2 on a blank image has all-zero maps: there the first position must win, as maxUnit's tie rule says; seeded
    // with 1 and the deconvnet rule, the projection shows which position was seeded.
    const blank = tensor(input.shape);
    let ties = 0;
    for (const [layer, image] of [['relu5', input], ['relu2', input], ['relu2', blank]] as const) {
      const act = (await engine.forward(image, [layer])).activations.get(layer)!;
      for (let feature = 0; feature < act.shape[1]; feature++) {
        const rule = image === blank ? 'deconvnet' : (['deconvnet', 'gradient', 'guided'] as const)[feature % 3];
        const settings = { rule, lrn: 'gradient', seedValue: image === blank ? 'one' : 'activation' } as const;
        if (maxUnit(act, 0, feature).value === 0) ties++;
        const expected = maxUnit(act, 0, feature);
        const [twoStep] = await projectUnits(engine, image, layer, [expected.unit], settings);
        const oneCall = await projectUnit(engine, image, layer, feature, 'max', settings);
        assert.deepEqual(oneCall.unit, expected.unit, `${layer} f${feature} unit`);
        assert.equal(oneCall.value, expected.value, `${layer} f${feature} value`);
        // A map that is zero everywhere seeds its activation, 0: both projections are then exactly zero.
        if (twoStep.projection.data.every((v) => v === 0)) assert.ok(oneCall.projection.data.every((v) => v === 0), `${layer} f${feature} zero`);
        else assertClose(oneCall.projection, twoStep.projection, 1e-6, `${layer} f${feature} projection`);
      }
    }
    assert.ok(ties > 0, 'no all-zero map: the tie rule went untested');
  });

  test('nine units in one batch equal nine single projections', async () => {
    const { activations } = await engine.forward(input, ['conv3']);
    const act = activations.get('conv3')!;
    const nine: Unit[] = [0, 5, 11, 17, 30, 47, 63, 80, 95].map((f) => maxUnit(act, 0, f).unit);
    nine[8] = { ...nine[8], y: 0, x: 3 };
    const batch = concatBatch(nine.map(() => input));
    const together = await projectUnits(engine, batch, 'conv3', nine, { rule: 'deconvnet', lrn: 'gradient', seedValue: 'activation' });
    for (let i = 0; i < nine.length; i++) {
      const [alone] = await projectUnits(engine, input, 'conv3', [nine[i]], { rule: 'deconvnet', lrn: 'gradient', seedValue: 'activation' });
      assertClose(together[i].projection, alone.projection, 1e-6, `unit ${i}`);
      assert.equal(together[i].value, alone.value);
    }
  });
});

describe('class-score backward (Captum)', () => {
  const cases: [('deconvnet' | 'guided' | 'gradient'), string][] = [
    ['deconvnet', 'deconv_captum_target2.npy'], ['guided', 'guided_captum_target.npy'], ['gradient', 'gradient_target.npy'],
  ];
  for (const [rule, file] of cases) {
    test(`${rule} of logit 2`, async () => {
      assertClose(await projectClass(engine, input, 2, { rule, lrn: 'gradient' }), fixtureNpy(file), TOL, rule);
    });
  }
});

describe('bad requests', () => {
  test('feature and unit out of range, unknown layer, wrong input shape', async () => {
    const settings = { rule: 'deconvnet', lrn: 'gradient', seedValue: 'activation' } as const;
    await assert.rejects(projectUnit(engine, input, 'relu5', 64, 'max', settings), /feature 64 is out of range for layer relu5, which has 64/);
    await assert.rejects(projectUnit(engine, input, 'relu5', 0, [4, 0], settings), /outside layer relu5's 4x4 map/);
    await assert.rejects(projectUnit(engine, input, 'conv9', 0, 'max', settings), /unknown layer 'conv9'/);
    await assert.rejects(engine.forward(tensor([1, 3, 32, 32]), ['fc8']), /takes \[N,3,64,64\]/);
  });
});

test('a safetensors header whose offsets, shapes or dtypes are wrong is one line naming the tensor', () => {
  const file = (header: Record<string, unknown>, dataBytes: number) => {
    const json = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    return Buffer.concat([len, json, Buffer.alloc(dataBytes)]);
  };
  const ok = { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } };
  assert.equal(decodeSafetensors(file(ok, 12), 'ok').tensors.size, 2);
  const cases: [string, Record<string, unknown>, number, RegExp][] = [
    ['negative offset (reads the header as weights)', { a: { dtype: 'F32', shape: [32], data_offsets: [-128, 0] } }, 0, /tensor 'a' has data_offsets \[-128,0\]/],
    ['null offsets', { a: { dtype: 'F32', shape: [1], data_offsets: null } }, 4, /tensor 'a' has data_offsets null/],
    ['overlap', { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, 8, /tensor 'b' starts at byte 4 of the data, inside the tensor before it/],
    ['a gap', { a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, 8, /tensor 'a' starts at byte 4 of the data, leaving bytes 0\.\.4 unused/],
    ['trailing bytes', { a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, 12, /the data section has 12 bytes, its tensors cover 4/],
    ['string shape', { a: { dtype: 'F32', shape: '2', data_offsets: [0, 8] } }, 8, /tensor 'a' has shape "2"/],
    ['negative shape', { a: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, 8, /tensor 'a' has shape \[-2\]/],
    ['no dtype', { a: { shape: [2], data_offsets: [0, 8] } }, 8, /tensor 'a' has no dtype/],
  ];
  for (const [what, header, bytes, message] of cases) {
    assert.throws(() => decodeSafetensors(file(header, bytes), 'w.safetensors'), (e: Error) => message.test(e.message) && e.message.startsWith('w.safetensors: ') && !e.message.includes('\n'), what);
  }
});
