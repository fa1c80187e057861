// The trainer: SGD arithmetic, renormalisation, schedules, and resume-to-identical-weights after a kill.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { filterClasses } from '../src/data/filter.js';
import { openShapes } from '../src/data/shapes.js';
import type { Layer } from '../src/model/layers.js';
import { decodeSafetensors, readSafetensorsModel } from '../src/model/safetensors.js';
import { createZooModel } from '../src/model/zoo.js';
import { learningRate, paperSnapshotEpochs, parseSchedule, renormalizeFilters, Sgd } from '../src/train/optimizer.js';
import { PAPER_TRAINING, train, type TrainConfig, type TrainRunOptions } from '../src/train/trainer.js';
import type { Tensor } from '../src/tensor.js';
import { ROOT } from './helpers.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'convscope-train-'));

describe('optimizer', () => {
  test('SGD with momentum and weight decay matches the update rule by hand', () => {
    const w: Tensor = { shape: [2], data: Float32Array.of(1, -2) };
    const b: Tensor = { shape: [1], data: Float32Array.of(0.5) };
    const weights = new Map([['fc.weight', w], ['fc.bias', b]]);
    const sgd = new Sgd(weights);
    const grads = new Map([['fc.weight', Float32Array.of(0.1, 0.2)], ['fc.bias', Float32Array.of(-1)]]);
    const s = { lr: 0.1, momentum: 0.9, weightDecay: 0.01 };
    sgd.step(weights, grads, s);
    // v1 = g + wd*w; w1 = w - lr*v1 (bias: no decay)
    const v1 = [0.1 + 0.01 * 1, 0.2 + 0.01 * -2];
    const w1 = [1 - 0.1 * v1[0], -2 - 0.1 * v1[1]];
    assert.ok(Math.abs(w.data[0] - w1[0]) < 1e-6 && Math.abs(w.data[1] - w1[1]) < 1e-6);
    assert.ok(Math.abs(b.data[0] - (0.5 + 0.1)) < 1e-6);
    sgd.step(weights, grads, s);
    const v2 = [0.9 * v1[0] + 0.1 + 0.01 * w1[0], 0.9 * v1[1] + 0.2 + 0.01 * w1[1]];
    assert.ok(Math.abs(w.data[0] - (w1[0] - 0.1 * v2[0])) < 1e-6);
    assert.ok(Math.abs(b.data[0] - (0.6 + 0.1 * (0.9 + 1))) < 1e-6);
  });

  test('renormalisation scales exactly the filters whose RMS exceeds the cap', () => {
    const layers: Layer[] = [{ type: 'conv2d', name: 'c', inChannels: 1, outChannels: 3, kernel: [1, 2], stride: [1, 1], padding: [0, 0], bias: false }];
    const w: Tensor = { shape: [3, 1, 1, 2], data: Float32Array.of(0.3, 0.4, 0.05, -0.05, -3, 4) };
    assert.equal(renormalizeFilters(layers, new Map([['c.weight', w]]), 0.1), 2);
    const rms = (i: number) => Math.sqrt((w.data[2 * i] ** 2 + w.data[2 * i + 1] ** 2) / 2);
    assert.ok(Math.abs(rms(0) - 0.1) < 1e-7 && Math.abs(rms(2) - 0.1) < 1e-7);
    assert.deepEqual(Array.from(w.data.slice(2, 4)), [Math.fround(0.05), Math.fround(-0.05)]);
    assert.ok(w.data[0] / w.data[1] - 0.75 < 1e-6, 'direction kept');
  });

  test('schedules and the paper\'s snapshot epochs', () => {
    assert.equal(learningRate(0.01, parseSchedule('step:3:0.1'), 3), 0.01);
    assert.ok(Math.abs(learningRate(0.01, parseSchedule('step:3:0.1'), 4) - 0.001) < 1e-12);
    assert.equal(learningRate(0.01, parseSchedule('manual:5=0.001,9=0.0001'), 7), 0.001);
    assert.equal(learningRate(0.01, parseSchedule('manual:5=0.001,9=0.0001'), 2), 0.01);
    assert.throws(() => parseSchedule('cosine'), /unknown learning-rate schedule 'cosine'/);
    assert.deepEqual(paperSnapshotEpochs(64), [1, 2, 5, 10, 20, 30, 40, 64]);
    assert.deepEqual(paperSnapshotEpochs(10), [1, 2, 4, 5, 7, 10]);
  });
});

const SMALL: TrainConfig = { ...PAPER_TRAINING, epochs: 2, batchSize: 16, snapshotEpochs: [1, 2], checkpointEvery: 2, augment: { flip: true, randomCrop: 4 } };

async function runTraining(outDir: string, stopAfterBatches?: number, resume = false, hooks: Pick<TrainRunOptions, 'onEpoch' | 'onProgress'> = {}) {
  const model = createZooModel('zfnet-small', { seed: 3, init: 'kaiming' });
  return train(model, openShapes({ count: 80 }, 'train'), openShapes({ count: 32 }, 'val'), SMALL, { outDir, resume, stopAfterBatches, ...hooks });
}

describe('trainer', () => {
  test('a run stopped mid-epoch and resumed ends with the same weights, log and snapshots', async () => {
    const straight = tmp();
    const epochs: number[][] = [];
    const progress: [number, number][] = [];
    const full = await runTraining(straight, undefined, false, {
      onEpoch: (entry, history) => { epochs.push(history.map((h) => h.epoch)); assert.equal(entry, history[history.length - 1]); },
      onProgress: (done, total) => progress.push([done, total]),
    });
    assert.deepEqual(epochs, [[1], [1, 2]], 'onEpoch after each epoch with the history so far');
    // 80 images in batches of 16: 5 a epoch, 10 in the run, each reported once.
    assert.deepEqual(progress, Array.from({ length: 10 }, (_, i) => [i + 1, 10]));
    assert.equal(full.history.length, 2);
    assert.ok(full.history.every((h) => Number.isFinite(h.trainLoss) && h.valAccuracy !== undefined));
    const resumed = tmp();
    const partial = await runTraining(resumed, 3);
    assert.equal(partial.history.length, 0, 'stopped inside epoch 1');
    const rest = await runTraining(resumed, undefined, true);
    for (const [key, w] of full.model.weights) assert.deepEqual(rest.model.weights.get(key)!.data, w.data, key);
    const strip = (path: string) => readFileSync(path, 'utf8').split('\n').filter(Boolean).map((l) => { const { seconds: _s, ...rest } = JSON.parse(l); return rest; });
    assert.deepEqual(strip(join(resumed, 'log.jsonl')), strip(join(straight, 'log.jsonl')));
    for (const f of ['epoch-001.safetensors', 'epoch-002.safetensors', 'model.safetensors']) {
      const dir = f.startsWith('epoch') ? 'snapshots' : '';
      const a = decodeSafetensors(readFileSync(join(straight, dir, f)), f).tensors;
      const b = decodeSafetensors(readFileSync(join(resumed, dir, f)), f).tensors;
      for (const [k, t] of a) assert.deepEqual(b.get(k)!.data, t.data, `${f} ${k}`);
    }
  });

  test('the snapshot carries the preprocessing it was trained with', async () => {
    const dir = tmp();
    await runTraining(dir);
    const snap = readSafetensorsModel(join(dir, 'snapshots', 'epoch-002.safetensors'));
    assert.ok(snap.preprocess.meanImage, 'mean image');
    assert.deepEqual(snap.preprocess.meanImage!.shape, [3, 64, 64]);
    assert.ok(snap.preprocess.std.every((s) => s > 10 && s < 128), `std ${snap.preprocess.std}`);
    assert.equal(snap.classes?.length, 10);
  });

  test('the checkpoint is one file: a stale or missing checkpoint.json (a kill between the writes) resumes the same', async () => {
    const straight = tmp();
    const full = await runTraining(straight);
    const dir = tmp();
    await runTraining(dir, 4);
    const json = join(dir, 'checkpoint.json');
    // What a kill after the weights' rename and before the JSON's leaves: a JSON one checkpoint behind.
    writeFileSync(json, JSON.stringify({ ...JSON.parse(readFileSync(json, 'utf8')), batch: 2, step: '1:2' }));
    const rest = await runTraining(dir, undefined, true);
    for (const [key, w] of full.model.weights) assert.deepEqual(rest.model.weights.get(key)!.data, w.data, key);
    const gone = tmp();
    await runTraining(gone, 3);
    rmSync(join(gone, 'checkpoint.json'));
    const again = await runTraining(gone, undefined, true);
    for (const [key, w] of full.model.weights) assert.deepEqual(again.model.weights.get(key)!.data, w.data, key);
  });

  test('--resume before the first checkpoint starts over with a notice; checkpoints come by time as well as by batches', async () => {
    const full = await runTraining(tmp());
    const empty = tmp();
    const lines: string[] = [];
    const model = createZooModel('zfnet-small', { seed: 3, init: 'kaiming' });
    const fresh = await train(model, openShapes({ count: 80 }, 'train'), openShapes({ count: 32 }, 'val'), SMALL, { outDir: empty, resume: true, log: (l) => lines.push(l) });
    assert.equal(lines[0], `no checkpoint in ${empty} yet: starting from the beginning`);
    for (const [key, w] of full.model.weights) assert.deepEqual(fresh.model.weights.get(key)!.data, w.data, key);
    // Batch checkpoints never fall due (every 1000 batches); with a 0 s interval every batch is saved by time, so a
    // kill (an exception from the progress hook) after batch 3 leaves batch 3's checkpoint.
    const timed = tmp();
    const rare = { ...SMALL, checkpointEvery: 1000 };
    const kill = (done: number) => {
      if (done === 4) throw new Error('killed');
    };
    await assert.rejects(train(createZooModel('zfnet-small', { seed: 3, init: 'kaiming' }), openShapes({ count: 80 }, 'train'), openShapes({ count: 32 }, 'val'), rare, { outDir: timed, checkpointSeconds: 0, onProgress: kill }), /killed/);
    assert.equal(JSON.parse(readFileSync(join(timed, 'checkpoint.json'), 'utf8')).batch, 3);
    const resumed = await train(createZooModel('zfnet-small', { seed: 3, init: 'kaiming' }), openShapes({ count: 80 }, 'train'), openShapes({ count: 32 }, 'val'), rare, { outDir: timed, resume: true });
    for (const [key, w] of full.model.weights) assert.deepEqual(resumed.model.weights.get(key)!.data, w.data, key);
  });

  test('stopped after any batch and resumed, training ends with the same weights', async () => {
    const tiny: TrainConfig = { ...SMALL, snapshotEpochs: [], checkpointEvery: 1000 };
    const run = (outDir: string, opts: Partial<TrainRunOptions> = {}) =>
      train(createZooModel('zfnet-small', { seed: 3, init: 'kaiming' }), openShapes({ count: 48 }, 'train'), undefined, tiny, { outDir, ...opts });
    const full = await run(tmp());
    // 48 images in batches of 16, two epochs: six batches; a stop after each of the first five, then --resume.
    for (let stopAt = 1; stopAt < 6; stopAt++) {
      const dir = tmp();
      await run(dir, { stopAfterBatches: stopAt });
      const rest = await run(dir, { resume: true });
      for (const [key, w] of full.model.weights) assert.deepEqual(rest.model.weights.get(key)!.data, w.data, `stopped after batch ${stopAt}: ${key}`);
    }
  });

  test('training learns: on two distinct classes the loss falls and the accuracy rises within six epochs', async () => {
    const keep = [0, 6]; // disc and horizontal stripes
    const trainSet = filterClasses(openShapes({ count: 1000 }, 'train'), keep);
    const valSet = filterClasses(openShapes({ count: 200 }, 'val'), keep);
    const model = createZooModel('zfnet-small', { classes: 2, init: 'kaiming', seed: 0 });
    const { history } = await train(model, trainSet, valSet, { ...PAPER_TRAINING, epochs: 6, batchSize: 16, snapshotEpochs: [] }, { outDir: tmp() });
    const [first, last] = [history[0], history[history.length - 1]];
    assert.ok(last.trainLoss < 0.5 * first.trainLoss, `loss ${first.trainLoss} -> ${last.trainLoss}`);
    assert.ok(last.trainAccuracy > first.trainAccuracy + 0.3, `train accuracy ${first.trainAccuracy} -> ${last.trainAccuracy}`);
    assert.ok(last.valAccuracy! >= 0.75, `validation accuracy ${last.valAccuracy} (chance 0.5)`);
  });

  test('resume with other settings is refused', async () => {
    const dir = tmp();
    await runTraining(dir, 2);
    const model = createZooModel('zfnet-small', { seed: 3, init: 'kaiming' });
    await assert.rejects(
      train(model, openShapes({ count: 80 }, 'train'), undefined, { ...SMALL, lr: 0.5 }, { outDir: dir, resume: true }),
      /made with other settings/,
    );
  });
});

test('CLI: a training process killed mid-run resumes with --resume to the same model', async () => {
  const cli = join(ROOT, 'src', 'cli', 'main.ts');
  const args = (out: string) => ['--import', 'tsx', cli, 'train', '--data', 'shapes:count=96', '--epochs', '2', '--batch-size', '16', '--checkpoint-every', '1', '--out', out];
  const straight = tmp();
  const r = spawnSync(process.execPath, args(straight), { cwd: ROOT, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const killed = tmp();
  const child = spawn(process.execPath, args(killed), { cwd: ROOT, stdio: 'ignore' });
  // Kill it once a mid-epoch checkpoint exists.
  await new Promise<void>((resolve, reject) => {
    const timer = setInterval(() => {
      const p = join(killed, 'checkpoint.json');
      if (existsSync(p) && JSON.parse(readFileSync(p, 'utf8')).batch >= 2) {
        clearInterval(timer);
        child.kill('SIGKILL');
        resolve();
      }
    }, 20);
    child.on('exit', () => {
      clearInterval(timer);
      reject(new Error('the training finished before it could be killed'));
    });
  });
  const again = spawnSync(process.execPath, [...args(killed), '--resume'], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(again.status, 0, again.stderr);
  assert.match(again.stderr, /resuming at epoch 1, batch \d/);
  const a = decodeSafetensors(readFileSync(join(straight, 'model.safetensors')), 'a').tensors;
  const b = decodeSafetensors(readFileSync(join(killed, 'model.safetensors')), 'b').tensors;
  for (const [k, t] of a) assert.deepEqual(b.get(k)!.data, t.data, k);
});
