// `convscope attribute`: parse options, call src/analysis/attribution.ts, write the maps and figures.
import { checkOutputDir } from '../util/fs.js';
import { ATTRIBUTION_METHODS, attribute, type Baseline } from '../analysis/attribution.js';
import { IG_DEFAULTS, INTEGRATION_RULES } from '../analysis/integrated-gradients.js';
import { SMOOTHGRAD_DEFAULTS } from '../analysis/smoothgrad.js';
import { Engine } from '../engine/engine.js';
import { attributionFiles } from '../report/attribution.js';
import { writeOutputs } from '../report/files.js';
import { assertFinite, readNpy } from '../tensor.js';
import { UsageError, type Command, type Options } from './args.js';
import { INPUT_OPTIONS, inputFrom, layerOption, MODEL_OPTIONS, modelFrom, targetOption } from './options.js';
import { Progress } from './progress.js';
import { methodList } from './faithfulness.js';

function baselineOption(o: Options, shape: number[]): Baseline {
  const v = o.required('baseline');
  if (v === 'zero' || v === 'blur') return v;
  if (!v.endsWith('.npy')) throw new UsageError(`--baseline must be zero, blur or a .npy file; got '${v}'`);
  const t = readNpy(v);
  assertFinite(t.data, v);
  const want = shape.slice(1).join(',');
  if (t.shape.slice(t.shape.length === 4 ? 1 : 0).join(',') !== want || (t.shape.length === 4 && t.shape[0] !== 1)) {
    throw new Error(`${v} has shape [${t.shape}], the input is [${shape}]`);
  }
  return { shape: [...shape], data: t.data };
}

export const attributeCommand: Command = {
  summary: 'class attributions: saliency, deconvnet, guided backprop, Grad-CAM, Guided Grad-CAM, Integrated Gradients, SmoothGrad, occlusion',
  options: {
    ...MODEL_OPTIONS,
    ...INPUT_OPTIONS,
    method: { value: true, help: `all, or a comma-separated list of ${ATTRIBUTION_METHODS.join(', ')}`, default: 'all' },
    target: { value: true, help: 'class to explain (default: the predicted class)' },
    layer: { value: true, help: "Grad-CAM's layer, any layer with spatial maps (default: the model's deepest rectified feature map)" },
    steps: { value: true, help: 'Integrated Gradients: points on the path', default: IG_DEFAULTS.steps },
    integration: { value: true, help: `Integrated Gradients: ${INTEGRATION_RULES.join(', ')}`, default: IG_DEFAULTS.integration },
    baseline: { value: true, help: 'Integrated Gradients: zero (the mean image after mean subtraction), blur (the image blurred, sigma = side/16) or a .npy of the input\'s shape', default: 'zero' },
    samples: { value: true, help: 'SmoothGrad: noisy copies', default: SMOOTHGRAD_DEFAULTS.samples },
    noise: { value: true, help: "SmoothGrad: noise standard deviation as a fraction of the input's range", default: SMOOTHGRAD_DEFAULTS.noise },
    seed: { value: true, help: 'SmoothGrad: seed of the noise', default: SMOOTHGRAD_DEFAULTS.seed },
    window: { value: true, help: 'occlusion: side of the square (default as occlude)' },
    stride: { value: true, help: 'occlusion: step between positions (default as occlude)' },
    batch: { value: true, help: 'images per engine call for Integrated Gradients and SmoothGrad', default: IG_DEFAULTS.batch },
    out: { value: true, help: 'output folder: METHOD.npy, METHOD.png, attributions.png, attribution.json' },
  },
  async run(o) {
    const dir = o.required('out');
    checkOutputDir(dir);
    const methods = methodList(o, 'method');
    const model = modelFrom(o);
    const noise = o.number('noise');
    if (!(noise >= 0)) throw new UsageError(`--noise must be >= 0, got ${noise}`);
    const options = {
      target: targetOption(o, model),
      layer: layerOption(o, model),
      steps: o.int('steps', 2),
      integration: o.choice('integration', INTEGRATION_RULES),
      samples: o.int('samples', 1),
      noise,
      seed: o.int('seed'),
      window: o.has('window') ? o.int('window', 1) : undefined,
      stride: o.has('stride') ? o.int('stride', 1) : undefined,
      batch: o.int('batch', 1),
    };
    const input = await inputFrom(o, model);
    const baseline = baselineOption(o, input.shape);
    const engine = new Engine(model);
    try {
      const results = [];
      for (const method of methods) {
        const bar = new Progress(method, 0, method === 'occlusion' ? 'positions' : 'images');
        results.push(await attribute(engine, input, method, { ...options, baseline, onProgress: (done, total) => bar.update(done, total) }));
      }
      const { files, summary } = await attributionFiles(model, input, results);
      writeOutputs(dir, files);
      process.stdout.write(`${summary}\nwrote ${files.size} files to ${dir}/\n`);
    } finally {
      await engine.dispose();
    }
  },
};
