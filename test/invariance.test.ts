// Invariance (Fig. 5): the transforms move pixels where they should, and the curves are what single forwards give.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { softmax } from '../src/analysis/class-target.js';
import { invarianceCurves, paperLayers, paperSweeps, transformFor, type Sweep } from '../src/analysis/invariance.js';
import { parseAmounts } from '../src/cli/analysis.js';
import { renderShape } from '../src/data/shapes.js';
import { imageToInput } from '../src/data/image.js';
import { transformInput, transformPlanes } from '../src/data/transform.js';
import { Engine } from '../src/engine/engine.js';
import type { Preprocess } from '../src/model/layers.js';
import { createZooModel } from '../src/model/zoo.js';
import { tensor, type Tensor } from '../src/tensor.js';
import { Rng } from '../src/util/random.js';
import { errorLines, ROOT } from './helpers.js';

function randomPlanes(C: number, H: number, W: number, seed = 1): Tensor {
  const rng = new Rng(seed);
  const t = tensor([C, H, W]);
  for (let i = 0; i < t.data.length; i++) t.data[i] = rng.normal();
  return t;
}

const at = (t: Tensor, c: number, y: number, x: number) => t.data[(c * t.shape[1] + y) * t.shape[2] + x];

describe('transforms', () => {
  const src = randomPlanes(3, 10, 8);

  test('translating by k rows moves every pixel exactly k rows and fills the uncovered rows', () => {
    for (const k of [3, -2]) {
      const out = transformPlanes(src, { kind: 'translate', dy: k, dx: 0 }, 7);
      for (let c = 0; c < 3; c++) {
        for (let y = 0; y < 10; y++) {
          for (let x = 0; x < 8; x++) {
            const from = y - k;
            assert.equal(at(out, c, y, x), from >= 0 && from < 10 ? at(src, c, from, x) : 7, `k=${k} c=${c} y=${y} x=${x}`);
          }
        }
      }
    }
  });

  test('rotation by 0 and 360 degrees and scale 1 are the identity, exactly', () => {
    for (const t of [{ kind: 'rotate', degrees: 0 }, { kind: 'rotate', degrees: 360 }, { kind: 'scale', factor: 1 }, { kind: 'translate', dy: 0, dx: 0 }] as const) {
      assert.deepEqual(transformPlanes(src, t, 99).data, src.data, JSON.stringify(t));
    }
  });

  test('a quarter turn is counter-clockwise on screen and exact; four of them are the identity', () => {
    const sq = randomPlanes(2, 6, 6, 5);
    const q = transformPlanes(sq, { kind: 'rotate', degrees: 90 }, NaN);
    // Counter-clockwise: the right-hand column becomes the top row, read from the bottom up.
    for (let c = 0; c < 2; c++) for (let y = 0; y < 6; y++) for (let x = 0; x < 6; x++) assert.equal(at(q, c, y, x), at(sq, c, x, 5 - y));
    let r = sq;
    for (let i = 0; i < 4; i++) r = transformPlanes(r, { kind: 'rotate', degrees: 90 }, NaN);
    assert.deepEqual(r.data, sq.data);
  });

  test('scaling about the centre reproduces a linear ramp, and a shrink fills the border', () => {
    const W = 9, H = 5;
    const ramp = tensor([1, H, W]);
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) ramp.data[y * W + x] = x;
    const cx = (W - 1) / 2;
    const zoom = transformPlanes(ramp, { kind: 'scale', factor: 2 }, -1);
    for (let x = 0; x < W; x++) assert.ok(Math.abs(at(zoom, 0, 2, x) - (cx + (x - cx) / 2)) < 1e-6, `zoom x=${x}`);
    const shrink = transformPlanes(ramp, { kind: 'scale', factor: 0.5 }, -1);
    for (let x = 0; x < W; x++) {
      const s = cx + (x - cx) * 2;
      const expected = s < -0.5 || s > W - 0.5 ? -1 : Math.min(W - 1, Math.max(0, s));
      assert.ok(Math.abs(at(shrink, 0, 2, x) - expected) < 1e-6, `shrink x=${x}: ${at(shrink, 0, 2, x)} vs ${expected}`);
    }
  });

  test('with a per-pixel mean image, the picture moves and the uncovered area shows the mean (0 input)', () => {
    const [C, H, W] = [3, 8, 8];
    const raw = randomPlanes(C, H, W, 3);
    const mean = randomPlanes(C, H, W, 4);
    const pre: Preprocess = { mean: [0, 0, 0], std: [2, 2, 2], meanImage: mean };
    const input = tensor([1, C, H, W], raw.data.map((v, i) => (v - mean.data[i]) / 2));
    const out = transformInput(input, { kind: 'translate', dy: 2, dx: 0 }, pre);
    for (let c = 0; c < C; c++) {
      for (let y = 0; y < H; y++) {
        for (let x = 0; x < W; x++) {
          const i = (c * H + y) * W + x;
          if (y < 2) assert.equal(out.data[i], 0);
          else assert.ok(Math.abs(out.data[i] * 2 + mean.data[i] - at(raw, c, y - 2, x)) < 1e-5, `c=${c} y=${y} x=${x}`);
        }
      }
    }
  });
});

describe('paper defaults', () => {
  test("Fig. 5's ranges scale with the input; the identity is in every sweep", () => {
    const [t224, s, r] = paperSweeps(224);
    assert.deepEqual(t224.amounts, [-60, -50, -40, -30, -20, -10, 0, 10, 20, 30, 40, 50, 60]);
    assert.deepEqual(s.amounts, [1, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8]);
    assert.equal(r.amounts[0], 0);
    assert.equal(r.amounts[r.amounts.length - 1], 360);
    const t64 = paperSweeps(64)[0].amounts;
    assert.equal(Math.max(...t64), 17);
    assert.ok(t64.includes(0) && t64.every(Number.isInteger));
  });

  test("the paper's layers 1 and 7 are the rectified conv1 and fc7 outputs", () => {
    assert.deepEqual(paperLayers(createZooModel('zfnet-small')), ['relu1', 'relu7']);
  });

  test('amounts parse as FROM:TO:STEP or a list', () => {
    assert.deepEqual(parseAmounts('scale', '0.6:1.4:0.2'), [0.6, 0.8, 1, 1.2, 1.4]);
    assert.deepEqual(parseAmounts('rotate', '0,90,180'), [0, 90, 180]);
    assert.throws(() => parseAmounts('rotate', '10:0:5'), /FROM <= TO/);
    assert.throws(() => parseAmounts('rotate', 'ten'), /comma-separated/);
  });
});

describe('invariance curves', () => {
  const model = createZooModel('zfnet-small', { seed: 3 });
  const engine = new Engine(model, { threads: 2 });
  after(() => engine.dispose());
  const input = imageToInput(renderShape(0, 'val', 7).image, model.preprocess);
  const sweeps: Sweep[] = [
    { kind: 'translate', amounts: [-5, 0, 4] },
    { kind: 'scale', amounts: [1, 1.3, 0.7] },
    { kind: 'rotate', amounts: [0, 45, 360] },
  ];
  const layers = ['relu1', 'relu7'];

  test('batched curves equal single forwards per transformed image; the identity has distance 0', async () => {
    // batch 4 splits the 10 images over three engine calls, so chunking is exercised too.
    const r = await invarianceCurves(engine, input, 2, { layers, sweeps, batch: 4 });
    assert.equal(r.trueClass, 2);
    const ref = (await engine.forward(input, layers)).activations;
    const norm = (v: Float32Array) => Math.hypot(...v);
    for (const [si, s] of sweeps.entries()) {
      for (const [ai, a] of s.amounts.entries()) {
        const one = await engine.forward(transformInput(input, transformFor(s.kind, a), model.preprocess), [...layers, 'fc8']);
        for (const l of layers) {
          const f = one.activations.get(l)!.data, g = ref.get(l)!.data;
          const expected = Math.hypot(...f.map((v, i) => v - g[i])) / norm(g);
          const got = r.curves[si].distance[l][ai];
          assert.ok(Math.abs(got - expected) <= 1e-5 * Math.max(1, expected), `${s.kind} ${a} ${l}: ${got} vs ${expected}`);
        }
        const p = softmax(one.activations.get('fc8')!.data)[2];
        assert.ok(Math.abs(r.curves[si].probability[ai] - p) < 1e-6, `${s.kind} ${a} p: ${r.curves[si].probability[ai]} vs ${p}`);
      }
    }
    for (const [si, ai] of [[0, 1], [1, 0], [2, 0], [2, 2]]) {
      for (const l of layers) assert.ok(r.curves[si].distance[l][ai] < 1e-6, `identity ${sweeps[si].kind} ${sweeps[si].amounts[ai]} ${l}`);
    }
    assert.ok(r.curves[0].distance.relu1[0] > 0.05, 'a 5 px shift changes layer 1');
  });

  test('without a true class the predicted class is tracked', async () => {
    const r = await invarianceCurves(engine, input, undefined, { layers: ['relu1'], sweeps: [{ kind: 'rotate', amounts: [0] }] });
    assert.equal(r.trueClass, r.predicted);
    const p = softmax((await engine.forward(input, ['fc8'])).activations.get('fc8')!.data);
    assert.ok(Math.abs(r.curves[0].probability[0] - Math.max(...p)) < 1e-6);
  });
});

describe('convscope invariance', () => {
  const CLI = join(ROOT, 'src', 'cli', 'main.ts');
  const run = (args: string[]) => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', CLI, 'invariance', ...args], { cwd: ROOT, encoding: 'utf8' });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  };
  const small = ['--model', 'zfnet-small', '--translate', '-4,0,4', '--scale', '1,1.2', '--rotate', '0:90:45'];

  test('writes the figure, the CSV (per image and mean) and the JSON', () => {
    const dir = mkdtempSync(join(tmpdir(), 'convscope-inv-'));
    const r = run([...small, '--data', 'shapes', '--count', '2', '--out', dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readdirSync(dir).sort(), ['invariance.csv', 'invariance.json', 'invariance.png']);
    const rows = readFileSync(join(dir, 'invariance.csv'), 'utf8').trim().split('\n');
    assert.equal(rows[0], 'image,true_class,transform,amount,relu1_distance,relu7_distance,p_true_class');
    // 3 + 2 + 3 amounts for each of 2 images and the mean.
    assert.equal(rows.length, 1 + 3 * 8);
    assert.match(rows[1], /^val\/0,0,translate,-4,/);
    assert.ok(rows.some((l) => l.startsWith('mean,,rotate,0,0,0,')), 'mean at rotation 0 has distance 0');
  });

  const bad: [string, string[], RegExp][] = [
    ['missing image', ['--images', '/nonexistent/a.png'], /cannot read \/nonexistent\/a\.png: no such file/],
    ['unknown layer', ['--data', 'shapes', '--count', '1', '--layers', 'relu1,nope'], /unknown layer 'nope'/],
    ['bad range', ['--data', 'shapes', '--rotate', '0:x:5'], /--rotate must be FROM:TO:STEP or comma-separated numbers/],
    ['class count', ['--data', 'shapes', '--count', '3', '--true-class', '1,2'], /--true-class gives 2 classes for 3 images/],
    ['no source', [], /give exactly one of --images and --data/],
  ];
  for (const [what, args, message] of bad) {
    test(`bad input (${what}): one line, exit 2, no output`, () => {
      const dir = join(mkdtempSync(join(tmpdir(), 'convscope-inv-')), 'out');
      const r = run([...small, ...args, '--out', dir]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
      assert.equal(errorLines(r.stderr).length, 1, r.stderr);
      assert.ok(!existsSync(dir), 'no output folder');
    });
  }
});
