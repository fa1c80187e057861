// The CLI as a user runs it: a child process per invocation, its exit code, its one-line errors, its files.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, lstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { openShapes } from '../src/data/shapes.js';
import { createZooModel } from '../src/model/zoo.js';
import { encodePng } from '../src/render/figure.js';
import { writeSafetensorsModel } from '../src/model/safetensors.js';
import { encodeNpy, readNpy } from '../src/tensor.js';
import { assertClose, errorLines, fixture, fixtureNpy, ROOT } from './helpers.js';

const CLI = join(ROOT, 'src', 'cli', 'main.ts');

function run(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, encoding: 'utf8' });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'convscope-cli-'));
}

describe('convscope project', () => {
  test('reproduces zf_proj_relu5_f19_lrngrad.npy from model.onnx + input.npy, with a PNG', () => {
    const dir = tmp();
    const out = join(dir, 'p.npy');
    const png = join(dir, 'p.png');
    const r = run(['project', '--model', fixture('model.onnx'), '--input-npy', fixture('input.npy'), '--layer', 'relu5', '--feature', '19', '--out', out, '--png', png]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /relu5 feature 19 at \(1,1\) = 78\.53\d*; deconvnet, LRN gradient, seed activation/);
    assertClose(readNpy(out), fixtureNpy('zf_proj_relu5_f19_lrngrad.npy'), 1e-4, 'CLI projection');
    assert.ok(existsSync(png));
  });

  test('a residual graph model from stock torch.onnx.export projects, and no LRN mode is named where there is no LRN', () => {
    const graph = join(ROOT, '..', 'shared', 'fixtures', 'graph', 'resnet_small');
    const out = join(tmp(), 'g.npy');
    const r = run(['project', '--model', join(graph, 'model.onnx'), '--input-npy', join(graph, 'input.npy'), '--layer', 'relu', '--feature', '2', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^relu feature 2 at \(\d+,\d+\) = [\d.]+; deconvnet, seed activation$/m);
    assert.deepEqual(readNpy(out).shape, [1, 3, 64, 64]);
  });

  test('reads an image, applies --mean, and matches the same input given as .npy', () => {
    const dir = tmp();
    const common = ['--model', fixture('weights.safetensors'), '--layer', 'conv3', '--feature', '5', '--unit', '1,2', '--rule', 'guided', '--lrn', 'identity', '--seed-value', 'one'];
    const a = run(['project', ...common, '--image', fixture('input.png'), '--mean', '123.68,116.78,103.94', '--out', join(dir, 'a.npy')]);
    const b = run(['project', ...common, '--input-npy', fixture('input.npy'), '--out', join(dir, 'b.npy')]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
    assertClose(readNpy(join(dir, 'a.npy')), readNpy(join(dir, 'b.npy')), 0, 'image vs npy input');
  });
});

describe('preprocessing of an ONNX export, and project --png alone', () => {
  const stock = fixture('model_torch_stock.onnx');
  const common = ['project', '--model', stock, '--image', fixture('input.png'), '--layer', 'relu5', '--feature', '19'];

  test('says what an ONNX model is fed; the torchvision preset equals its values in 0..1 and in 0..255 units', () => {
    const dir = tmp();
    const assumed = run([...common, '--out', join(dir, 'assumed.npy')]);
    assert.equal(assumed.code, 0, assumed.stderr);
    assert.match(assumed.stderr, /^preprocessing: mean 123\.68,116\.78,103\.94, std 1,1,1 in 0\.\.255 units \(caffe\), assumed; the file carries none, so this is a guess: give --preprocess torchvision for a torchvision model$/m);
    const preset = run([...common, '--preprocess', 'torchvision', '--out', join(dir, 'preset.npy')]);
    assert.equal(preset.code, 0, preset.stderr);
    assert.match(preset.stderr, /^preprocessing: mean 123\.675,116\.28,103\.53, std 58\.395,57\.12,57\.375 in 0\.\.255 units \(torchvision\), from --preprocess torchvision$/m);
    const unit = run([...common, '--mean', '0.485,0.456,0.406', '--std', '0.229,0.224,0.225', '--out', join(dir, 'unit.npy')]);
    assert.equal(unit.code, 0, unit.stderr);
    assert.match(unit.stderr, /^--mean\/--std read as 0\.\.1 units \(every value is at most 1\): mean 123\.675,116\.28,103\.53, std 58\.395,57\.12,57\.375 in 0\.\.255 units$/m);
    const bytes = run([...common, '--mean', '123.675,116.28,103.53', '--std', '58.395,57.12,57.375', '--out', join(dir, 'bytes.npy')]);
    assert.equal(bytes.code, 0, bytes.stderr);
    assert.doesNotMatch(bytes.stderr, /0\.\.1 units/);
    assertClose(readNpy(join(dir, 'unit.npy')), readNpy(join(dir, 'preset.npy')), 1e-6, '0..1 units vs preset');
    assertClose(readNpy(join(dir, 'bytes.npy')), readNpy(join(dir, 'preset.npy')), 1e-6, '0..255 units vs preset');
    assert.notDeepEqual(readNpy(join(dir, 'assumed.npy')).data, readNpy(join(dir, 'preset.npy')).data, 'the preset changes what the model sees');
    const grey = run(['inspect', '--model', 'zfnet-mnist', '--preprocess', 'torchvision']);
    assert.equal(grey.code, 2);
    assert.match(grey.stderr, /^convscope: --preprocess torchvision is for 3-channel \(RGB\) models; this model takes 1 channels\n$/);
  });

  test('--labels names the classes (a text file or ImageNet-style JSON); --target takes a name; a wrong count is one line', () => {
    const dir = tmp();
    const names = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine'];
    writeFileSync(join(dir, 'labels.txt'), `${names.join('\n')}\n`);
    writeFileSync(join(dir, 'labels.json'), JSON.stringify(Object.fromEntries(names.map((n, i) => [String(i), [`n0${i}`, n]]))));
    const attribute = ['attribute', '--model', stock, '--image', fixture('input.png'), '--method', 'gradcam'];
    const byIndex = run([...attribute, '--target', '7', '--out', join(dir, 'index')]);
    assert.equal(byIndex.code, 0, byIndex.stderr);
    assert.match(byIndex.stdout, /^target class 7 \(predicted class 2\): gradcam/m);
    for (const file of ['labels.txt', 'labels.json']) {
      const r = run([...attribute, '--labels', join(dir, file), '--target', 'seven', '--out', join(dir, `out-${file}`)]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^target seven \(predicted two\): gradcam/m, file);
      assert.ok(readFileSync(join(dir, `out-${file}`, 'gradcam.npy')).equals(readFileSync(join(dir, 'index', 'gradcam.npy'))), 'the same class by name and by index');
    }
    writeFileSync(join(dir, 'short.txt'), 'a\nb\n');
    const short = run([...attribute, '--labels', join(dir, 'short.txt'), '--out', join(dir, 'never')]);
    assert.equal(short.code, 2);
    assert.match(errorLines(short.stderr).join('\n'), /^convscope: labels file .*short\.txt has 2 names; the model has 10 classes$/);
    const unknown = run([...attribute, '--labels', join(dir, 'labels.txt'), '--target', 'zebra', '--out', join(dir, 'never')]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown class 'zebra'; give an index 0\.\.9 or a class name: zero, one, two/);
    assert.ok(!existsSync(join(dir, 'never')));
  });

  test('--png without --out writes the figure only; --out x.png is the figure too', () => {
    const dir = tmp();
    const alone = run([...common, '--png', join(dir, 'a.png')]);
    assert.equal(alone.code, 0, alone.stderr);
    assert.match(alone.stdout, /wrote .*a\.png\n$/);
    const byName = run([...common, '--out', join(dir, 'b.png')]);
    assert.equal(byName.code, 0, byName.stderr);
    for (const f of ['a.png', 'b.png']) assert.ok(readFileSync(join(dir, f)).subarray(1, 4).toString() === 'PNG', `${f} is a PNG`);
    assert.deepEqual(readdirSync(dir).sort(), ['a.png', 'b.png']);
    const neither = run(common);
    assert.equal(neither.code, 2);
    assert.match(neither.stderr, /project needs --out FILE\.npy \(the values\), --png FILE\.png \(the figure\), or both/);
  });
});

describe('bad input: one line, exit code 2, no output file', () => {
  const dir = tmp();
  const garbage = join(dir, 'garbage.onnx');
  writeFileSync(garbage, Buffer.from('this is not a protobuf model at all'));
  const notImage = join(dir, 'photo.jpg');
  writeFileSync(notImage, Buffer.from('not a jpeg'));
  const nanModel = join(dir, 'nan.safetensors');
  const model = createZooModel('zfnet-small');
  model.weights.get('conv2.weight')!.data[17] = NaN;
  writeSafetensorsModel(nanModel, model);

  const base = ['--input-npy', fixture('input.npy'), '--layer', 'relu5', '--feature', '3'];
  const cases: [string, string[], RegExp][] = [
    ['missing model file', ['--model', join(dir, 'nope.onnx'), ...base], /nope\.onnx.*neither a zoo model .* nor an existing file/],
    ['corrupt ONNX file', ['--model', garbage, ...base], /garbage\.onnx/],
    ['missing input', ['--model', 'zfnet-small', '--input-npy', join(dir, 'none.npy'), '--layer', 'relu5', '--feature', '3'], /cannot read .*none\.npy/],
    ['image that does not decode', ['--model', 'zfnet-small', '--image', notImage, '--layer', 'relu5', '--feature', '3'], /cannot decode image .*photo\.jpg/],
    ['unknown layer', ['--model', 'zfnet-small', '--input-npy', fixture('input.npy'), '--layer', 'conv9', '--feature', '3'], /unknown layer 'conv9'/],
    ['feature out of range', ['--model', 'zfnet-small', '--input-npy', fixture('input.npy'), '--layer', 'relu5', '--feature', '64'], /feature 64 is out of range/],
    ['NaN in weights', ['--model', nanModel, ...base], /weight 'conv2\.weight' contains NaN/],
    ['input of the wrong size', ['--model', 'zfnet-mnist', ...base], /input\.npy has shape \[1,3,64,64\], model zfnet-mnist takes \[1,1,28,28\]/],
    ['unknown option', ['--model', 'zfnet-small', ...base, '--colour', 'red'], /unknown option --colour/],
    ['bad rule', ['--model', 'zfnet-small', ...base, '--rule', 'magic'], /--rule must be one of gradient, deconvnet, guided; got 'magic'/],
  ];
  for (const [what, args, message] of cases) {
    test(what, () => {
      const out = join(dir, `${what.replace(/\W+/g, '_')}.npy`);
      const png = join(dir, `${what.replace(/\W+/g, '_')}.png`);
      const r = run(['project', ...args, '--out', out, '--png', png]);
      assert.equal(r.code, 2, `exit code; stderr: ${r.stderr}`);
      const lines = errorLines(r.stderr);
      assert.equal(lines.length, 1, `one line: ${r.stderr}`);
      assert.match(lines[0], /^convscope: /);
      assert.match(lines[0], message);
      assert.ok(!existsSync(out) && !existsSync(png), 'no output written');
    });
  }
  test('no temporary files are left behind', () => {
    assert.deepEqual(readdirSync(dir).filter((f) => f.includes('.tmp-')), []);
  });
});

test('inspect prints receptive fields and totals', () => {
  const r = run(['inspect', '--model', 'zfnet-small']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^conv5 +conv2d +64x4x4 +139 \/16 @-69/m);
  assert.match(r.stdout, /^total +383\.9k/m);
});

test('demo --quick runs every step and writes a report whose figures all exist', () => {
  const dir = tmp();
  const r = run(['demo', '--quick', '--out', dir]);
  assert.equal(r.code, 0, r.stderr.split('\n').slice(-5).join('\n'));
  const html = readFileSync(join(dir, 'report', 'index.html'), 'utf8');
  assert.doesNotMatch(html, /class="missing"/, 'a step left its section empty');
  const sources = [...html.matchAll(/<img src="([^"]+)"/g)].map((m) => m[1]);
  assert.ok(sources.length >= 10, `${sources.length} figures`);
  // The report is one folder: moved away from its run, every figure is still there, with its size in the page.
  const moved = join(tmp(), 'moved-report');
  renameSync(join(dir, 'report'), moved);
  assert.doesNotMatch(html, /(src|href)="[^"#]*\.\./, 'no link leaves the report folder');
  for (const src of sources) assert.ok(readFileSync(join(moved, src)).subarray(1, 4).toString() === 'PNG', `figure ${src} is in the moved report`);
  assert.equal([...html.matchAll(/<img src="[^"]+" alt="[^"]*" width="\d+" height="\d+">/g)].length, sources.length, 'every image has its size');
  for (const id of ['training', 'topk', 'evolution', 'invariance', 'architecture', 'occlusion', 'correspondence', 'transfer', 'attribution']) assert.match(html, new RegExp(`<section id="${id}">`));
  assert.match(html, /trained, \d+\/class/, 'the transfer table');
  assert.match(html, /without-fc6-fc7/, 'the ablation table');
  // The faithfulness table of every method, as the demo printed it.
  const table = readFileSync(join(dir, 'attribution', 'faithfulness.md'), 'utf8');
  assert.equal(table.split('\n').filter((l) => /^\| (Saliency|Deconvnet|Guided|Grad-CAM|Integrated|SmoothGrad|Occlusion)/.test(l)).length, 9);
  assert.ok(r.stderr.includes(table.split('\n')[3]), 'the demo prints the table');
});

test('demo on a residual graph export: every analysis of a model file runs, with defaults found in its graph', () => {
  const dir = tmp();
  const model = join(ROOT, '..', 'shared', 'fixtures', 'graph', 'resnet_small', 'model.onnx');
  const r = run(['demo', '--quick', '--model', model, '--out', dir]);
  assert.equal(r.code, 0, r.stderr.split('\n').slice(-5).join('\n'));
  const html = readFileSync(join(dir, 'report', 'index.html'), 'utf8');
  const sources = [...html.matchAll(/<img src="([^"]+)"/g)].map((m) => m[1]);
  for (const src of sources) assert.ok(existsSync(join(dir, 'report', src)), `missing figure ${src}`);
  // A model file is not trained: training, evolution and the architecture comparison have nothing to show.
  for (const id of ['topk', 'invariance', 'occlusion', 'correspondence', 'attribution']) assert.match(html, new RegExp(`<section id="${id}">`));
  const topk = JSON.parse(readFileSync(join(dir, 'topk', 'index.json'), 'utf8')) as { layers: { layer: string }[] };
  // Five of its nine rectified maps (the stem's ReLU and two per basic block), evenly spread: the first (the
  // invariance layer 1 below) and the deepest (correspondence's layer 5 below).
  assert.equal(topk.layers.length, 5);
  const invariance = JSON.parse(readFileSync(join(dir, 'invariance', 'invariance.json'), 'utf8')) as { layers: string[] };
  const correspondence = JSON.parse(readFileSync(join(dir, 'correspondence', 'correspondence.json'), 'utf8')) as { layers: string[] };
  // Layer 7's counterpart, the classifier's input, is the pooled features in both.
  assert.equal(invariance.layers[1], correspondence.layers[1]);
  assert.equal(invariance.layers[0], topk.layers[0].layer);
  assert.equal(correspondence.layers[0], topk.layers.at(-1)!.layer);
});

test('a full disk behind stdout (inspect > /dev/full) is one line and exit 2, not a stack trace', () => {
  const full = openSync('/dev/full', 'w');
  try {
    const r = spawnSync(process.execPath, ['--import', 'tsx', CLI, 'inspect', '--model', 'zfnet-small'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', full, 'pipe'] });
    assert.equal(r.status, 2);
    assert.equal(r.stderr, 'convscope: cannot write the output: ENOSPC: no space left on device, write\n');
  } finally {
    closeSync(full);
  }
});

test('NaN or infinity anywhere is one line, exit 2 and no output: a zero std, a NaN input, a NaN mean image, an overflowing model', () => {
  const dir = tmp();
  const nanInput = join(dir, 'nan.npy');
  const x = readNpy(fixture('input.npy'));
  x.data[7] = Number.NaN;
  writeFileSync(nanInput, encodeNpy(x));
  const nanMean = join(dir, 'nan-mean.safetensors');
  const zoo = createZooModel('zfnet-small');
  writeSafetensorsModel(nanMean, { ...zoo, preprocess: { ...zoo.preprocess, meanImage: { shape: [3, 64, 64], data: new Float32Array(3 * 64 * 64).fill(Number.NaN) } } });
  const huge = join(dir, 'huge.safetensors');
  const big = createZooModel('zfnet-small', { init: 'kaiming' });
  for (const [key, t] of big.weights) if (key.endsWith('.weight')) t.data.forEach((v, i, a) => (a[i] = v * 1e12));
  writeSafetensorsModel(huge, big);
  const cases: [string, string[], RegExp][] = [
    ['zero std', ['--model', 'zfnet-small', '--std', '0,0,0'], /preprocessing std 0 must be > 0/],
    ['NaN input', ['--model', 'zfnet-small', '--input-npy', nanInput], /nan\.npy contains NaN at index 7/],
    ['NaN mean image', ['--model', nanMean], /preprocessing mean image contains NaN at index 0/],
    ['overflow', ['--model', huge], /the projection of relu5 feature 1 contains (NaN|-?Infinity) at index \d+/],
  ];
  for (const [what, args, message] of cases) {
    const out = join(dir, `${what.replace(/\W/g, '-')}.npy`);
    const input = args.includes('--input-npy') ? [] : ['--input-npy', fixture('input.npy')];
    const r = run(['project', ...args, ...input, '--layer', 'relu5', '--feature', '1', '--out', out]);
    assert.equal(r.code, 2, `${what}: ${r.stderr}`);
    assert.equal(errorLines(r.stderr).length, 1, what);
    assert.match(r.stderr, message, what);
    assert.ok(!existsSync(out), `${what}: no output file`);
  }
});

test('an output that is an input, or another output, however the path is spelled, is refused before anything is written', () => {
  const dir = tmp();
  const model = join(dir, 'm.safetensors');
  writeSafetensorsModel(model, createZooModel('zfnet-small'));
  const before = readFileSync(model);
  symlinkSync(model, join(dir, 'link.safetensors'));
  const base = ['project', '--model', model, '--input-npy', fixture('input.npy'), '--layer', 'relu5', '--feature', '1'];
  const cases: [string[], RegExp][] = [
    [['--out', join(dir, '.', 'm.safetensors')], /output .* would overwrite the input/],
    [['--out', join(dir, 'link.safetensors')], /output .*link\.safetensors would overwrite the input/],
    [['--out', join(dir, 'p.npy'), '--png', join(dir, 'sub', '..', 'p.npy')], /outputs .*p\.npy and .*p\.npy are the same file/],
  ];
  for (const [args, message] of cases) {
    const r = run([...base, ...args]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, message);
  }
  assert.deepEqual(readFileSync(model), before, 'the model is untouched');
  assert.ok(!existsSync(join(dir, 'p.npy')));
});

describe('convscope attribute', () => {
  const graph = join(ROOT, '..', 'shared', 'fixtures', 'graph', 'resnet_small');
  const attribution = join(ROOT, '..', 'shared', 'fixtures', 'attribution', 'resnet_small');

  test("writes every method's map and figures from a stock torch export; Grad-CAM and IG equal Captum's", () => {
    const dir = join(tmp(), 'a');
    const r = run(['attribute', '--model', join(graph, 'model.onnx'), '--input-npy', join(graph, 'input.npy'), '--layer', 'layer3', '--steps', '16', '--integration', 'riemann_trapezoid', '--out', dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^target class 5 \(predicted class 5\): saliency \d+ ms, .*occlusion \d+ ms\nwrote 21 files/);
    assertClose(readNpy(join(dir, 'gradcam.npy')), readNpy(join(attribution, 'gradcam.npy')), 1e-4, 'gradcam');
    assertClose(readNpy(join(dir, 'gradcam_upsampled.npy')), readNpy(join(attribution, 'gradcam_upsampled.npy')), 1e-4, 'gradcam upsampled');
    assertClose(readNpy(join(dir, 'ig.npy')), readNpy(join(attribution, 'ig_riemann_trapezoid_16.npy')), 1e-4, 'ig');
    // Captum's Saliency returns |gradient|.
    const gradient = readNpy(join(graph, 'gradient_target.npy'));
    assertClose(readNpy(join(dir, 'saliency.npy')), { shape: gradient.shape, data: gradient.data.map(Math.abs) }, 1e-4, 'saliency');
    const json = JSON.parse(readFileSync(join(dir, 'attribution.json'), 'utf8'));
    assert.equal(json.methods.length, 9);
    assert.equal(json.methods.find((m: { method: string }) => m.method === 'gradcam').layer, 'layer3.0.relu_1');
    for (const f of ['attributions.png', 'gradcam.png', 'ig.png', 'occlusion.png']) assert.ok(readFileSync(join(dir, f)).subarray(1, 4).toString() === 'PNG', f);
  });

  test('bad input: an unknown method, a layer without maps, a target out of range, a bad baseline: one line, exit 2, no folder', () => {
    const base = ['attribute', '--model', join(graph, 'model.onnx'), '--input-npy', join(graph, 'input.npy')];
    const cases: [string[], RegExp][] = [
      [['--method', 'gradcam,lime'], /unknown method 'lime'/],
      [['--method', 'gradcam', '--layer', 'fc'], /Grad-CAM needs a layer with spatial maps; fc outputs \[10\]/],
      [['--method', 'ig', '--target', '10'], /target class 10 is out of range: model .* has 10 classes/],
      [['--method', 'ig', '--baseline', 'grey'], /--baseline must be zero, blur or a \.npy file/],
      [['--method', 'ig', '--steps', '1'], /--steps must be an integer >= 2/],
      [['--method', 'smoothgrad', '--noise', 'NaN'], /--noise must be a number/],
    ];
    for (const [args, message] of cases) {
      const out = join(tmp(), 'never');
      const r = run([...base, ...args, '--out', out]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
      assert.equal(errorLines(r.stderr).length, 1, r.stderr);
      assert.ok(!existsSync(out), `${args.join(' ')} left ${out}`);
    }
  });
});

describe('convscope faithfulness', () => {
  test('prints the table it writes, one row per method, from the held-out split; bad methods are one line and exit 2', () => {
    const dir = join(tmp(), 'f');
    const r = run(['faithfulness', '--model', 'zfnet-small', '--data', 'shapes:count=64', '--methods', 'gradcam,saliency', '--count', '3', '--steps', '4', '--out', dir]);
    assert.equal(r.code, 0, r.stderr);
    const md = readFileSync(join(dir, 'faithfulness.md'), 'utf8');
    assert.ok(r.stdout.startsWith(md), r.stdout);
    const json = JSON.parse(readFileSync(join(dir, 'faithfulness.json'), 'utf8'));
    assert.equal(json.images, 3);
    assert.deepEqual(json.rows.map((row: { method: string }) => row.method), ['gradcam', 'saliency']);
    for (const row of json.rows) {
      assert.match(md, new RegExp(`\\| ${row.deletionAuc.toFixed(3)} \\| ${row.insertionAuc.toFixed(3)} \\| ${(100 * row.pointing).toFixed(0)}% \\|`));
      assert.equal(row.meanDeletion.length, 5);
    }
    assert.ok(existsSync(join(dir, 'faithfulness.png')));
    const bad = run(['faithfulness', '--model', 'zfnet-small', '--data', 'shapes:count=64', '--methods', 'gradcam,gradcam', '--out', join(dir, 'never')]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--methods lists a method twice/);
    assert.ok(!existsSync(join(dir, 'never')));
  });
});

describe('convscope synthesize and topk --synthesize', () => {
  test('writes one image per feature and the values it printed; topk puts one beside each feature', () => {
    const dir = join(tmp(), 's');
    const r = run(['synthesize', '--model', 'zfnet-small', '--layer', 'relu2', '--features', '3,0-1', '--steps', '4', '--out', dir]);
    assert.equal(r.code, 0, r.stderr);
    const images = readNpy(join(dir, 'synthesis.npy'));
    assert.deepEqual(images.shape, [3, 3, 64, 64]);
    const json = JSON.parse(readFileSync(join(dir, 'synthesis.json'), 'utf8'));
    assert.deepEqual(json.features, [3, 0, 1]);
    assert.equal(json.history[0].length, 4);
    assert.match(r.stdout, new RegExp(`^relu2: #3 ${json.final[0].toPrecision(3).replace('.', '\\.')}, #0 `));
    const bad = run(['synthesize', '--model', 'zfnet-small', '--layer', 'relu2', '--features', '0-64', '--out', join(dir, 'never')]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--features: 64 is out of range 0\.\.63/);
    assert.ok(!existsSync(join(dir, 'never')));

    const topk = join(tmp(), 't');
    const t = run(['topk', '--model', 'zfnet-small', '--data', 'shapes:count=64', '--limit', '20', '--layers', 'relu1', '--synthesize', '--synth-steps', '3', '--per-page', '32', '--out', topk]);
    assert.equal(t.code, 0, t.stderr);
    const index = JSON.parse(readFileSync(join(topk, 'index.json'), 'utf8'));
    const layer = index.layers[0];
    assert.equal(layer.syntheticNpy, 'relu1/synthetic.npy');
    assert.deepEqual(readNpy(join(topk, layer.syntheticNpy)).shape, [32, 1, 3, 64, 64]);
    assert.ok(layer.features.every((f: { synthetic?: number }) => typeof f.synthetic === 'number'));
  });
});

describe('topk progress', () => {
  test('a progress bar per layer, each over its own units (a deeper layer projects more slowly)', () => {
    const out = join(tmp(), 'bars');
    const r = run(['topk', '--model', 'zfnet-small', '--data', 'shapes:count=64', '--limit', '20', '--layers', 'relu1,relu2', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    const index = JSON.parse(readFileSync(join(out, 'index.json'), 'utf8')) as { layers: { layer: string; features: { entries: unknown[] }[] }[] };
    assert.deepEqual(index.layers.map((l) => l.layer), ['relu1', 'relu2']);
    for (const l of index.layers) {
      const n = l.features.reduce((a, f) => a + f.entries.length, 0);
      assert.ok(n > 0);
      assert.match(r.stderr, new RegExp(`topk project ${l.layer} \\[#{24}\\] ${n}/${n} units`), r.stderr);
    }
  });
});

describe('outputs and sizes checked before the work', () => {
  test('a --out under a file is refused at once; a --k whose heaps exceed memory is refused; a k above the candidates draws only what exists', () => {
    const root = tmp();
    const file = join(root, 'afile');
    writeFileSync(file, 'x');
    const scan = ['topk', '--model', 'zfnet-small', '--data', 'shapes:count=64', '--limit', '20', '--layers', 'relu1'];
    const cases: [string[], RegExp][] = [
      [[...scan, '--out', join(file, 'out')], /output folder .*afile\/out: .*afile is a file, not a folder/],
      [['faithfulness', '--model', 'zfnet-small', '--data', 'shapes:count=64', '--out', file], /output folder .*afile: .*afile is a file, not a folder/],
      [['topk', '--model', 'zfnet-small', '--data', 'shapes:count=100000000', '--layers', 'relu1', '--per-image', '9', '--k', '100000000', '--out', join(root, 'k')], /k 100000000 needs \d+\.\d GiB of heaps for 32 feature maps; the limit is 2 GiB/],
    ];
    for (const [args, message] of cases) {
      const r = run(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
      assert.equal(errorLines(r.stderr).length, 1, r.stderr);
    }
    assert.ok(!existsSync(join(root, 'k')), 'a refused scan leaves no folder');
    const many = run([...scan, '--per-image', '2', '--k', '100000000', '--out', join(root, 'many')]);
    assert.equal(many.code, 0, many.stderr);
    const index = JSON.parse(readFileSync(join(root, 'many', 'index.json'), 'utf8'));
    assert.equal(index.k, 100000000);
    assert.ok(index.layers[0].features.every((f: { entries: unknown[] }) => f.entries.length <= 40), 'at most two entries per image');
    assert.deepEqual(index.layers[0].npyShape.slice(0, 2), [32, 40], 'the projections hold the 40 candidates, not k slots');
  });
});

describe('outputs all together or not at all', () => {
  test('project with a folder where --png goes writes nothing, not even the .npy', () => {
    const dir = tmp();
    mkdirSync(join(dir, 'p.png'));
    const r = run(['project', '--model', 'zfnet-small', '--input-npy', fixture('input.npy'), '--layer', 'relu1', '--feature', '0', '--out', join(dir, 'p.npy'), '--png', join(dir, 'p.png')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^convscope: cannot write .*p\.png: a folder of that name is in the way\n$/);
    assert.deepEqual(readdirSync(dir), ['p.png']);
  });

  test('a folder in the way of one output leaves none of the others; temps of killed runs are swept, those of live ones kept', () => {
    const out = tmp();
    mkdirSync(join(out, 'occlusion.json'));
    const args = ['occlude', '--model', fixture('weights.safetensors'), '--input-npy', fixture('input.npy'), '--window', '16', '--stride', '8'];
    const blocked = run([...args, '--out', out]);
    assert.equal(blocked.code, 2, blocked.stderr);
    // The clash is found when the files are written, after the work (its progress line comes first): one error line.
    assert.deepEqual(blocked.stderr.trim().split('\n').filter((l) => l.startsWith('convscope:')).length, 1);
    assert.match(blocked.stderr.trim().split('\n').at(-1)!, /^convscope: cannot write .*occlusion\.json: a folder of that name is in the way$/);
    assert.deepEqual(readdirSync(out), ['occlusion.json'], 'no other output and no temp left');
    const fresh = join(tmp(), 'new');
    writeFileSync(join(out, 'p.npy.tmp-999999999'), 'left by a killed run');
    mkdirSync(join(out, '.convscope-tmp-999999999-x'));
    writeFileSync(join(out, `q.npy.tmp-${process.pid}`), 'a live run');
    const ok = run([...args, '--out', fresh]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.ok(readdirSync(fresh).includes('occlusion.json') && !readdirSync(fresh).some((f) => f.includes('tmp')));
    rmSync(join(out, 'occlusion.json'), { recursive: true });
    const again = run([...args, '--out', out]);
    assert.equal(again.code, 0, again.stderr);
    assert.ok(!readdirSync(out).some((f) => f.includes('999999999')), 'stale temps swept');
    assert.ok(readdirSync(out).includes(`q.npy.tmp-${process.pid}`), 'a live run keeps its temp');
  });
});

test('an --out that is a symbolic link is written through to its target; the link stays', () => {
  const dir = tmp();
  const real = join(dir, 'real.npy');
  writeFileSync(real, 'old');
  symlinkSync(real, join(dir, 'link.npy'));
  const r = run(['project', '--model', fixture('weights.safetensors'), '--input-npy', fixture('input.npy'), '--layer', 'relu5', '--feature', '19', '--out', join(dir, 'link.npy')]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(lstatSync(join(dir, 'link.npy')).isSymbolicLink(), 'still a link');
  assert.deepEqual(readNpy(real).shape, [1, 3, 64, 64], 'the target holds the projection');
  symlinkSync(join(dir, 'nowhere', 'x.npy'), join(dir, 'dangling.npy'));
  const dangling = run(['project', '--model', fixture('weights.safetensors'), '--input-npy', fixture('input.npy'), '--layer', 'relu5', '--feature', '19', '--out', join(dir, 'dangling.npy')]);
  assert.equal(dangling.code, 2);
  assert.match(dangling.stderr, /^convscope: cannot write .*dangling\.npy: it is a link to .*nowhere\/x\.npy, which does not exist\n$/);
});

describe("a user's own folder of images", () => {
  /** 30 shapes images as PNG files: flat, and in class sub-folders (three classes of ten). */
  async function userFolders(): Promise<{ flat: string; classes: string }> {
    const root = tmp();
    const flat = join(root, 'flat');
    const classes = join(root, 'classes');
    const ds = openShapes({ size: 64, count: 30, seed: 5 }, 'train');
    for (let i = 0; i < 30; i++) {
      const item = await ds.item(i);
      const png = await encodePng(item.image);
      mkdirSync(flat, { recursive: true });
      writeFileSync(join(flat, `img-${String(i).padStart(2, '0')}.png`), png);
      const cls = join(classes, ['a', 'b', 'c'][i % 3]);
      mkdirSync(cls, { recursive: true });
      writeFileSync(join(cls, `${i}.png`), png);
    }
    return { flat, classes };
  }

  test('a plain folder is one split: every image scanned; training cuts 20 % out and says so; a flat folder needs no labels but training refuses it', async () => {
    const { flat, classes } = await userFolders();
    const out = tmp();
    for (const data of [flat, classes]) {
      const r = run(['topk', '--model', 'zfnet-small', '--data', data, '--layers', 'relu2', '--out', join(out, data === flat ? 'tf' : 'tc')]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(JSON.parse(readFileSync(join(out, data === flat ? 'tf' : 'tc', 'index.json'), 'utf8')).images, 30, `topk scans all 30 images of ${data}`);
    }
    const trained = run(['train', '--model', 'zfnet-small', '--data', classes, '--epochs', '1', '--out', join(out, 'train')]);
    assert.equal(trained.code, 0, trained.stderr);
    assert.match(trained.stderr, new RegExp(`^${classes} has no train/val/test sub-folders: using 24 images for training, 6 for validation \\(seed 0\\)$`, 'm'));
    const refused = run(['train', '--model', 'zfnet-small', '--data', flat, '--epochs', '1', '--out', join(out, 'never')]);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /^convscope: training needs labelled images, and .*flat has no class sub-folders \(ROOT\/CLASS\/IMAGE\.jpg\)\n$/m);
    assert.ok(!existsSync(join(out, 'never')));
    const probe = run(['probe', '--model', 'zfnet-small', '--train', classes, '--test', classes, '--layers', 'relu2', '--per-class', '2', '--out', join(out, 'probe')]);
    assert.equal(probe.code, 0, probe.stderr);
    assert.match(probe.stderr, /using 24 images for training, 6 for validation \(seed 0\)/);
    assert.match(probe.stderr, /^probe features \[#{24}\] (\d+)\/\1 images [\d.]+\/s in \d+s zfnet-small$/m, 'a bar over the feature extraction');
    const json = JSON.parse(readFileSync(join(out, 'probe', 'probe.json'), 'utf8'));
    assert.equal(json.runs[0].result.testItems, 6, 'the probe tests on the held-out cut only');
    // Without labels, faithfulness explains the predicted class unasked, and says so.
    const faith = run(['faithfulness', '--model', 'zfnet-small', '--data', flat, '--methods', 'saliency', '--count', '2', '--out', join(out, 'faith')]);
    assert.equal(faith.code, 0, faith.stderr);
    assert.match(faith.stderr, /^faithfulness: .*flat.* has no labels: explaining each image's predicted class$/m);
    assert.equal(JSON.parse(readFileSync(join(out, 'faith', 'faithfulness.json'), 'utf8')).target, 'predicted');
  });

  test("demo on a user's ONNX export and flat folder: every step that applies runs, the others say why, in the log and the report", async () => {
    const { flat } = await userFolders();
    const out = join(tmp(), 'run');
    const r = run(['demo', '--model', fixture('model_torch_stock.onnx'), '--preprocess', 'caffe', '--data', flat, '--out', out]);
    assert.equal(r.code, 0, r.stderr.split('\n').slice(-5).join('\n'));
    assert.match(r.stderr, /^preprocessing: mean 123\.68,116\.78,103\.94, std 1,1,1 in 0\.\.255 units \(caffe\), from --preprocess caffe$/m);
    assert.match(r.stderr, /^== training skipped: .*model_torch_stock\.onnx is a model file, analysed as it is/m);
    assert.match(r.stderr, /^localisation score skipped: .*flat records no object boxes/m);
    assert.match(r.stderr, /explaining the predicted class/);
    const skipped = JSON.parse(readFileSync(join(out, 'skipped.json'), 'utf8'));
    assert.deepEqual(Object.keys(skipped).sort(), ['ablate', 'architecture', 'correspondence', 'evolution', 'probe', 'train']);
    assert.equal(JSON.parse(readFileSync(join(out, 'topk', 'index.json'), 'utf8')).images, 30, 'the top-9 scan every image of the folder');
    const html = readFileSync(join(out, 'report', 'index.html'), 'utf8');
    assert.equal(html.match(/Not run: /g)?.length, 5, 'each skipped section says why');
    assert.doesNotMatch(html, /No output: /);
  });
});
