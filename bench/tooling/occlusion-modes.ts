// Incremental against full occlusion on exported torchvision models: where auto mode's threshold
// (MIN_INCREMENTAL_SAVING in src/analysis/occlusion.ts) comes from. Per model, the plan's FLOP saving and the
// warm time of Captum-style attribution mode both ways, checked equal.
//
//   node --import tsx bench/tooling/occlusion-modes.ts [--models resnet18-224,mobilenet_v2-224] [--window 50] [--stride 8] [--repeats 3]
//
// Reads .cache/torchvision/<model>/model.onnx and input.npy (`/usr/bin/python3 bench/tooling/export_torchvision.py`).
// One warm-up call each way (it compiles the graphs), then interleaved repeats; medians.
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { occlusionGrid, occlusionMaps, type AttributionMap } from '../../src/analysis/occlusion.js';
import { Engine } from '../../src/engine/engine.js';
import { planIncremental } from '../../src/engine/incremental.js';
import { importOnnx } from '../../src/model/onnx-import.js';
import { median, readNpy } from '../../src/tensor.js';
import { intArg, relError } from '../common.js';

let models = ['resnet18-224', 'mobilenet_v2-224', 'squeezenet1_1-224', 'densenet121-224', 'efficientnet_b0-224'];
let window = 50;
let stride = 8;
let repeats = 3;
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--models') models = (argv[++i] ?? '').split(',').filter(Boolean);
  else if (argv[i] === '--window') window = intArg('--window', argv[++i], 1);
  else if (argv[i] === '--stride') stride = intArg('--stride', argv[++i], 1);
  else if (argv[i] === '--repeats') repeats = intArg('--repeats', argv[++i], 1);
  else throw new Error(`unknown option ${argv[i]}; see the header of bench/tooling/occlusion-modes.ts`);
}

console.log(`| model | FLOP saving (full / incremental) | incremental ms | full ms | full / incremental | max rel. difference |`);
console.log('| --- | --- | --- | --- | --- | --- |');
for (const name of models) {
  const dir = `.cache/torchvision/${name}`;
  const { model } = importOnnx(readFileSync(`${dir}/model.onnx`), `${name}.onnx`);
  const engine = new Engine(model, { threads: 2 });
  try {
    const input = readNpy(`${dir}/input.npy`);
    const [, h, w] = model.input;
    const plan = planIncremental(engine.infos, occlusionGrid([h, w], window, stride).boxes);
    const run = (incremental: boolean) => occlusionMaps(engine, input, { mode: 'attribution', window, stride, target: 0, incremental }) as Promise<AttributionMap>;
    const inc = await run(true);
    const full = await run(false);
    const times: Record<string, number[]> = { inc: [], full: [] };
    for (let r = 0; r < repeats; r++) {
      for (const mode of r % 2 ? ['full', 'inc'] : ['inc', 'full']) {
        const t = performance.now();
        await run(mode === 'inc');
        times[mode].push(performance.now() - t);
      }
    }
    const [ti, tf] = [median(times.inc), median(times.full)];
    const saving = plan.flops.full / plan.flops.incremental;
    console.log(`| ${name} | ${saving.toFixed(2)}x | ${ti.toFixed(0)} | ${tf.toFixed(0)} | ${(tf / ti).toFixed(2)}x | ${relError(inc.attribution, full.attribution).toExponential(1)} |`);
  } finally {
    await engine.dispose();
  }
}
