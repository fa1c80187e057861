// Each command parses its options and calls the library; no analysis logic lives here.
import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { BACKWARD_RULES, LRN_MODES } from '../engine/compile.js';
import { Engine } from '../engine/engine.js';
import { loadModel } from '../model/load.js';
import { PRESET_NAMES } from '../model/preprocess.js';
import { layerRows, modelTable } from '../model/summary.js';
import { projectUnit, ZF_SETTINGS } from '../analysis/project.js';
import { loadInput } from '../data/image.js';
import { assertFinite, encodeNpy, readNpy, type Tensor } from '../tensor.js';
import { checkOutputDir, checkOutputFiles, writeFileAtomic } from '../util/fs.js';
import { projectionFigurePng } from '../render/projection.js';
import { DEMO_DEFAULTS, DEMO_QUICK, runDemoPipeline } from './demo.js';
import { buildReport } from '../report/report.js';
import { UsageError, type Command } from './args.js';
import { DATA_OPTIONS, INPUT_OPTIONS, inputFrom, layerOption, MODEL_OPTIONS, modelFrom, targetOption } from './options.js';
import { runLocalisationScore } from './occlusion-score.js';
import { occlusionMaps, type Fill, type OcclusionOptions } from '../analysis/occlusion.js';
import { writeOutputs } from '../report/files.js';
import { occlusionFiles } from '../report/occlusion.js';
import { Progress } from './progress.js';
import { evolveCommand, trainCommand } from './training.js';
import { ablateCommand, probeCommand } from './probe.js';
import { topkCommand } from './topk.js';
import { correspondCommand, invarianceCommand } from './analysis.js';
import { compareArchCommand, filtersCommand } from './architecture.js';
import { serveCommand } from './serve.js';
import { attributeCommand } from './attribute.js';
import { faithfulnessCommand } from './faithfulness.js';
import { synthesizeCommand } from './synthesize.js';
import { workerCommand } from './worker.js';
import { say } from './notices.js';

/** A file's identity: its device and inode when it exists (links and ./ spellings agree), else its absolute path. */
function fileIdentity(path: string): string {
  try {
    const s = statSync(path);
    return `${s.dev}:${s.ino}`;
  } catch {
    return resolve(path);
  }
}

/** Refuses outputs that are an input file, or one another, however their paths are spelled. */
function refuseOverwriteOfInput(outputs: (string | undefined)[], inputs: (string | undefined)[]): void {
  const inputIds = new Map(inputs.filter((p): p is string => p !== undefined).map((p) => [fileIdentity(p), p]));
  const seen = new Map<string, string>();
  for (const out of outputs) {
    if (out === undefined) continue;
    const id = fileIdentity(out);
    const input = inputIds.get(id);
    if (input !== undefined) throw new UsageError(`output ${out} would overwrite the input ${input}`);
    const other = seen.get(id);
    if (other !== undefined) throw new UsageError(`outputs ${other} and ${out} are the same file`);
    seen.set(id, out);
  }
}

/** What a projected unit is seeded with (`--seed-value`): its activation (Zeiler & Fergus) or one (Captum). */
export const SEED_VALUES = ['activation', 'one'] as const;

/** What `occlude` computes (`--mode`): the paper's maps, or a Captum-style attribution. */
export const OCCLUSION_MODES = ['paper', 'attribution'] as const;

export const COMMANDS: Record<string, Command> = {
  train: trainCommand,
  evolve: evolveCommand,
  attribute: attributeCommand,
  faithfulness: faithfulnessCommand,
  synthesize: synthesizeCommand,
  probe: probeCommand,
  ablate: ablateCommand,
  topk: topkCommand,
  invariance: invarianceCommand,
  correspond: correspondCommand,
  filters: filtersCommand,
  'compare-arch': compareArchCommand,
  serve: serveCommand,
  worker: workerCommand,
  inspect: {
    summary: 'layer table: output shapes, receptive fields, parameters, FLOPs',
    options: {
      ...MODEL_OPTIONS,
      json: { value: false, help: 'write the table as JSON: {"layers": [{"name", "op", "onnxNode", "onnxOutput", "inputs", "shape", "rf", "params", "flops"}]}, in topological order' },
    },
    async run(o) {
      const model = modelFrom(o);
      process.stdout.write(o.flag('json') ? `${JSON.stringify({ model: model.name, input: model.input, layers: layerRows(model) })}\n` : `${modelTable(model)}\n`);
    },
  },

  project: {
    summary: 'project one unit back to pixel space (deconvnet, gradient or guided backprop)',
    options: {
      ...MODEL_OPTIONS,
      ...INPUT_OPTIONS,
      layer: { value: true, help: "layer whose unit to project: a layer name as `convscope inspect` lists them (relu5, layer3.1.relu_1), a module's name for its output (layer3), or an ONNX node or tensor name" },
      feature: { value: true, help: 'feature map (channel) index' },
      unit: { value: true, help: "'max' (the map's strongest activation) or Y,X", default: 'max' },
      rule: { value: true, help: 'ReLU rule on the way down: deconvnet, gradient or guided', default: ZF_SETTINGS.rule },
      lrn: { value: true, help: 'LRN on the way down: gradient (true gradient) or identity', default: ZF_SETTINGS.lrn },
      'seed-value': { value: true, help: 'seed the unit with its activation (Zeiler & Fergus) or one (Captum)', default: ZF_SETTINGS.seedValue },
      out: { value: true, help: 'output .npy of the projection, [1,C,H,W] (a name ending in .png writes the figure instead)' },
      png: { value: true, help: 'write a PNG: input beside the projection (with or without --out)' },
    },
    async run(o) {
      // The output kind follows the extension: --out p.png is the figure, as --png is.
      let out = o.string('out');
      let png = o.string('png');
      if (out !== undefined && out.toLowerCase().endsWith('.png')) {
        if (png !== undefined) throw new UsageError(`--out ${out} is a PNG and --png is given too: give --out FILE.npy for the projection's values`);
        [png, out] = [out, undefined];
      }
      if (out === undefined && png === undefined) throw new UsageError('project needs --out FILE.npy (the values), --png FILE.png (the figure), or both');
      checkOutputFiles([out, png]);
      refuseOverwriteOfInput([out, png], [o.string('image'), o.string('input-npy'), o.string('model')]);
      const model = modelFrom(o);
      const layer = layerOption(o, model) ?? o.required('layer');
      const feature = o.int('feature');
      const unitArg = o.required('unit');
      let position: 'max' | [number, number] = 'max';
      if (unitArg !== 'max') {
        const m = /^(\d+),(\d+)$/.exec(unitArg);
        if (!m) throw new UsageError(`--unit must be 'max' or Y,X; got '${unitArg}'`);
        position = [Number(m[1]), Number(m[2])];
      }
      const settings = {
        rule: o.choice('rule', BACKWARD_RULES),
        lrn: o.choice('lrn', LRN_MODES),
        seedValue: o.choice('seed-value', SEED_VALUES),
      };
      const input = await inputFrom(o, model);
      const engine = new Engine(model);
      try {
        const result = await projectUnit(engine, input, layer, feature, position, settings);
        // A model that overflows (huge weights or inputs) must not leave a NaN image behind an exit code 0.
        assertFinite(result.projection.data, `the projection of ${layer} feature ${feature}`);
        const { unit, value } = result;
        // The LRN mode changes nothing in a model without LRN: say it only where it applies.
        const how = `${settings.rule}${model.layers.some((l) => l.type === 'lrn') ? `, LRN ${settings.lrn}` : ''}`;
        const caption = `${model.name} ${layer} feature ${unit.feature} at (${unit.y},${unit.x}); ${how}`;
        // Both files are complete in memory before either is written, so a failure leaves no partial output.
        const figure = png ? await projectionFigurePng(input, result.projection, model.preprocess, caption) : undefined;
        if (out) writeFileAtomic(out, encodeNpy(result.projection));
        if (png && figure) writeFileAtomic(png, figure);
        process.stdout.write(
          `${layer} feature ${unit.feature} at (${unit.y},${unit.x}) = ${value.toPrecision(6)}; ${how}, seed ${settings.seedValue}\n` +
            `wrote ${[out, png].filter(Boolean).join(' and ')}\n`,
        );
      } finally {
        await engine.dispose();
      }
    },
  },

  demo: {
    summary: 'the main job: train zfnet-small on the built-in shapes set, run every analysis, write convscope-out/report/index.html',
    options: {
      out: { value: true, help: 'run folder', default: DEMO_DEFAULTS.out },
      data: { value: true, help: 'dataset: shapes (generated on the fly), fashion-mnist or a folder of images (class sub-folders to train; a plain folder is one split, 20% of it held out to validate training)', default: DEMO_DEFAULTS.data },
      model: { value: true, help: 'zoo model to train, or a trained .onnx/.safetensors to analyse as it is', default: DEMO_DEFAULTS.model },
      epochs: { value: true, help: 'training epochs', default: DEMO_DEFAULTS.epochs },
      scan: { value: true, help: 'images the sweeps (top-9, evolution, activity) scan', default: DEMO_DEFAULTS.scan },
      preprocess: { value: true, help: `for a model file: ${PRESET_NAMES.join(', ')} (see convscope project --help; default the file's, caffe for an ONNX file without)` },
      quick: { value: false, help: `a tiny run to check the pipeline (--data ${DEMO_QUICK.data}, ${DEMO_QUICK.epochs} epochs)` },
    },
    async run(o) {
      const base = { ...DEMO_DEFAULTS, ...(o.flag('quick') ? DEMO_QUICK : {}) };
      const settings = {
        ...base,
        // --quick changes some defaults, so an option not given takes base's value rather than its spec's.
        out: o.has('out') ? o.required('out') : base.out,
        data: o.has('data') ? o.required('data') : base.data,
        model: o.has('model') ? o.required('model') : base.model,
        epochs: o.has('epochs') ? o.int('epochs', 1) : base.epochs,
        scan: o.has('scan') ? o.int('scan', 1) : base.scan,
        ...(o.has('preprocess') ? { preprocess: o.choice('preprocess', PRESET_NAMES) } : {}),
      };
      const report = await runDemoPipeline(settings, say);
      process.stdout.write(`report: ${report}\n`);
    },
  },

  report: {
    summary: 'rebuild the HTML report of an earlier run folder (of convscope demo, or commands writing the same layout)',
    options: {
      run: { value: true, help: 'run folder', default: 'convscope-out' },
    },
    async run(o) {
      process.stdout.write(`report: ${buildReport(o.required('run'))}\n`);
    },
  },

  occlude: {
    summary: 'occlusion sensitivity (Fig. 7): a grey square slides over the image; maps of a feature, p(class), top class',
    options: {
      ...MODEL_OPTIONS,
      ...INPUT_OPTIONS,
      target: { value: true, help: 'class to track (default: the class predicted for the unoccluded image)' },
      window: { value: true, help: 'side of the square in pixels (default round(0.223 x input side): 50 at 224, 14 at 64)' },
      stride: { value: true, help: 'step between positions (default round(window / 6): 8 at 224, 2 at 64); last position clipped' },
      fill: { value: true, help: 'square colour: mean (the dataset mean, 0 after mean subtraction), zero (black), or a grey level 0..255', default: 'mean' },
      layer: { value: true, help: 'layer whose strongest feature map (b, c) tracks (default: the model\'s deepest rectified feature map, relu5 on ZFNet as the paper)' },
      mode: { value: true, help: 'paper (maps b-e and projections c) or attribution (Captum Occlusion, [1,C,H,W])', default: 'paper' },
      full: { value: false, help: 'recompute every occluded image in full (default: incremental, only what the square changes, where that needs 1.4x fewer FLOPs)' },
      batch: { value: true, help: 'occluded images per engine call (default 128 incremental, 32 with --full)' },
      out: { value: true, help: 'output folder for .npy maps, PNG figures and occlusion.json' },
      ...DATA_OPTIONS,
      score: { value: false, help: 'with --data: the localisation score (is p(correct) lowest when the square covers the object box?)' },
      count: { value: true, help: 'with --score: images of the held-out split', default: 50 },
      queue: { value: true, help: 'with --score: occlude on workers (convscope worker) through Redis, an image per job' },
      resume: { value: false, help: 'with --score --queue: reuse the images workers finished' },
    },
    async run(o) {
      if (o.flag('score')) return runLocalisationScore(o);
      const dir = o.required('out');
      checkOutputDir(dir);
      const model = modelFrom(o);
      const fillArg = o.required('fill');
      const grey = Number(fillArg);
      if (fillArg !== 'mean' && fillArg !== 'zero' && !(fillArg.trim() !== '' && grey >= 0 && grey <= 255)) {
        throw new UsageError(`--fill must be mean, zero or a grey level 0..255; got '${fillArg}'`);
      }
      const fill: Fill = fillArg === 'mean' || fillArg === 'zero' ? fillArg : grey;
      const mode = o.choice('mode', OCCLUSION_MODES);
      const started = performance.now();
      const bar = new Progress('occlude', 0, 'positions');
      const options: OcclusionOptions = {
        fill,
        target: targetOption(o, model),
        window: o.has('window') ? o.int('window', 1) : undefined,
        stride: o.has('stride') ? o.int('stride', 1) : undefined,
        layer: layerOption(o, model),
        incremental: o.flag('full') ? false : 'auto',
        batch: o.has('batch') ? o.int('batch', 1) : undefined,
        onProgress: bar.report,
      };
      const input = await inputFrom(o, model);
      const engine = new Engine(model);
      try {
        const r = await occlusionMaps(engine, input, { ...options, mode });
        const seconds = (performance.now() - started) / 1000;
        const { files, summary } = await occlusionFiles(model, input, r, seconds);
        writeOutputs(dir, files);
        const g = r.grid;
        const saving = r.flops.incremental ? `incremental, ${(r.flops.full / r.flops.incremental).toFixed(2)}x fewer FLOPs than full` : 'full recomputation';
        process.stdout.write(`${summary}\n${g.ys.length}x${g.xs.length} positions in ${seconds.toFixed(2)} s (${saving}); wrote ${files.size} files to ${dir}/\n`);
      } finally {
        await engine.dispose();
      }
    },
  },
};
