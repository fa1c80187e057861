// Each command parses its options and calls the library; no analysis logic lives here.
import { existsSync } from 'node:fs';
import { BACKWARD_RULES, LRN_MODES } from '../engine/compile.js';
import { Engine } from '../engine/engine.js';
import { loadModel } from '../model/load.js';
import { modelTable } from '../model/summary.js';
import { projectUnit } from '../analysis/project.js';
import { loadInput } from '../data/image.js';
import { encodeNpy, readNpy, type Tensor } from '../tensor.js';
import { writeFileAtomic } from '../util/fs.js';
import { projectionFigurePng } from '../render/projection.js';
import { runDemo } from '../pipeline/demo.js';
import { UsageError, type Options, type OptionSpec } from './args.js';
import type { Model } from '../model/layers.js';

export interface Command {
  summary: string;
  options: Record<string, OptionSpec>;
  run(o: Options): Promise<void>;
}

const MODEL_OPTIONS: Record<string, OptionSpec> = {
  model: { value: true, help: 'zoo name (zfnet, alexnet, zfnet-small, alexnet-small, zfnet-mnist), .safetensors or .onnx file' },
  seed: { value: true, help: 'seed of a zoo model\'s initial weights (default 0)' },
  mean: { value: true, help: 'per-channel mean to subtract, 0..255 units, e.g. 123.68,116.78,103.94' },
  std: { value: true, help: 'per-channel divisor, 0..255 units (default 1: the paper\'s raw pixels)' },
};

function modelFrom(o: Options): Model {
  const model = loadModel(o.required('model'), { seed: o.int('seed', 0) });
  const channels = model.input[0];
  for (const key of ['mean', 'std'] as const) {
    const v = o.numbers(key);
    if (!v) continue;
    if (v.length !== channels) throw new UsageError(`--${key} needs ${channels} values for this ${channels}-channel model, got ${v.length}`);
    model.preprocess[key] = v;
    if (key === 'mean') delete model.preprocess.meanImage;
  }
  return model;
}

async function inputFrom(o: Options, model: Model): Promise<Tensor> {
  const image = o.string('image');
  const npy = o.string('input-npy');
  if ((image === undefined) === (npy === undefined)) throw new UsageError('give exactly one of --image and --input-npy');
  if (image !== undefined) return loadInput(image, model);
  const t = readNpy(npy!);
  const shape = t.shape.length === 3 ? [1, ...t.shape] : t.shape;
  const want = [1, ...model.input];
  if (shape.join(',') !== want.join(',')) throw new Error(`${npy} has shape [${t.shape}], model ${model.name} takes [${want}]`);
  return { shape, data: t.data };
}

function refuseOverwriteOfInput(paths: (string | undefined)[], inputs: (string | undefined)[]): void {
  for (const p of paths) if (p && inputs.includes(p)) throw new UsageError(`output ${p} would overwrite an input`);
}

export const COMMANDS: Record<string, Command> = {
  inspect: {
    summary: 'layer table: output shapes, receptive fields, parameters, FLOPs',
    options: { ...MODEL_OPTIONS },
    async run(o) {
      process.stdout.write(`${modelTable(modelFrom(o))}\n`);
    },
  },

  project: {
    summary: 'project one unit back to pixel space (deconvnet, gradient or guided backprop)',
    options: {
      ...MODEL_OPTIONS,
      image: { value: true, help: 'input image (JPEG, PNG, WebP): short side resized, centre-cropped, mean subtracted' },
      'input-npy': { value: true, help: 'a preprocessed NCHW float32 tensor, fed as it is' },
      layer: { value: true, help: 'layer whose unit to project, e.g. relu5' },
      feature: { value: true, help: 'feature map (channel) index' },
      unit: { value: true, help: "'max' (the map's strongest activation, default) or Y,X" },
      rule: { value: true, help: 'ReLU rule on the way down: deconvnet (default), gradient, guided' },
      lrn: { value: true, help: 'LRN on the way down: gradient (true gradient, default) or identity' },
      'seed-value': { value: true, help: 'seed the unit with its activation (default, Zeiler & Fergus) or one (Captum)' },
      out: { value: true, help: 'output .npy of the projection, [1,C,H,W]' },
      png: { value: true, help: 'also write a PNG: input beside the projection' },
    },
    async run(o) {
      const out = o.required('out');
      const png = o.string('png');
      refuseOverwriteOfInput([out, png], [o.string('image'), o.string('input-npy'), o.string('model')]);
      const model = modelFrom(o);
      const layer = o.required('layer');
      const feature = o.int('feature');
      const unitArg = o.string('unit', 'max');
      let position: 'max' | [number, number] = 'max';
      if (unitArg !== 'max') {
        const m = /^(\d+),(\d+)$/.exec(unitArg);
        if (!m) throw new UsageError(`--unit must be 'max' or Y,X; got '${unitArg}'`);
        position = [Number(m[1]), Number(m[2])];
      }
      const settings = {
        rule: o.choice('rule', BACKWARD_RULES, 'deconvnet'),
        lrn: o.choice('lrn', LRN_MODES, 'gradient'),
        seedValue: o.choice('seed-value', ['activation', 'one'] as const, 'activation'),
      };
      const input = await inputFrom(o, model);
      const engine = new Engine(model);
      try {
        const result = await projectUnit(engine, input, layer, feature, position, settings);
        const { unit, value } = result;
        const caption = `${model.name} ${layer} feature ${unit.feature} at (${unit.y},${unit.x}); ${settings.rule}, LRN ${settings.lrn}`;
        // Both files are complete in memory before either is written, so a failure leaves no partial output.
        const figure = png ? await projectionFigurePng(input, result.projection, model.preprocess, caption) : undefined;
        writeFileAtomic(out, encodeNpy(result.projection));
        if (png && figure) writeFileAtomic(png, figure);
        process.stdout.write(
          `${layer} feature ${unit.feature} at (${unit.y},${unit.x}) = ${value.toPrecision(6)}; ${settings.rule}, LRN ${settings.lrn}, seed ${settings.seedValue}\n` +
            `wrote ${out}${png ? ` and ${png}` : ''}\n`,
        );
      } finally {
        await engine.dispose();
      }
    },
  },

  demo: {
    summary: 'the main job on the embedded default: seeded zfnet-small, a test image, projections of conv5 units',
    options: {
      out: { value: true, help: 'output folder (default ./convscope-out)' },
    },
    async run(o) {
      const dir = o.string('out', 'convscope-out');
      if (existsSync(dir) && !o.has('out')) process.stderr.write(`writing into existing ${dir}/\n`);
      await runDemo({ outDir: dir, log: (line: string) => process.stderr.write(`${line}\n`) });
    },
  },
};
