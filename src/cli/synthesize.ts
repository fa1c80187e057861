// `convscope synthesize`: parse options, call src/analysis/synthesize.ts, write the images, their figure and values.
import { checkOutputDir } from '../util/fs.js';
import { synthesize, SYNTHESIS_DEFAULTS, type Parameterization } from '../analysis/synthesize.js';
import { inputToImage } from '../data/image.js';
import { Engine } from '../engine/engine.js';
import { Landmarks } from '../model/landmarks.js';
import { encodePng } from '../render/figure.js';
import { synthesisFigure } from '../render/synthesize.js';
import { writeOutputs } from '../report/files.js';
import { batchItem, encodeNpy } from '../tensor.js';
import { compactJson } from '../util/json.js';
import { UsageError, type Command } from './args.js';
import { indexList, layerOption, MODEL_OPTIONS, modelFrom } from './options.js';
import { Progress } from './progress.js';

export const synthesizeCommand: Command = {
  summary: 'activation maximisation: synthetic images that drive feature maps (DeepVis regularisers or a decorrelated Fourier image)',
  options: {
    ...MODEL_OPTIONS,
    layer: { value: true, help: "layer whose features to drive (default: the model's deepest rectified feature map)" },
    features: { value: true, help: "feature maps (or units of a vector layer): all, or a list such as 0-7,12", default: '0-7' },
    objective: { value: true, help: 'map (the map\'s mean) or unit (its centre unit)', default: 'map' },
    parameterization: { value: true, help: 'pixel (gradient ascent on pixels with the regularisers below) or fourier (Olah et al.)', default: 'pixel' },
    steps: { value: true, help: 'gradient-ascent steps', default: SYNTHESIS_DEFAULTS.steps },
    lr: { value: true, help: `step length (rms of an update): pixel units for pixel, about pre-tanh units for fourier (default ${SYNTHESIS_DEFAULTS.pixelLr} / ${SYNTHESIS_DEFAULTS.fourierLr})` },
    decay: { value: true, help: 'pixel: L2 decay per step', default: SYNTHESIS_DEFAULTS.decay },
    blur: { value: true, help: 'pixel: Gaussian blur sigma in pixels, 0 for none', default: SYNTHESIS_DEFAULTS.blurSigma },
    'blur-every': { value: true, help: 'pixel: steps between blurs', default: SYNTHESIS_DEFAULTS.blurEvery },
    jitter: { value: true, help: 'random shift per step in pixels (default: 1/32 of the input side)' },
    'norm-percentile': { value: true, help: 'pixel: zero the pixels whose norm is below this percentile', default: 0 },
    'contribution-percentile': { value: true, help: 'pixel: zero the pixels whose contribution |x . gradient| is below this percentile', default: 0 },
    seed: { value: true, help: 'seed of the start and the jitter', default: 0 },
    batch: { value: true, help: 'features per engine call', default: SYNTHESIS_DEFAULTS.batch },
    out: { value: true, help: 'output folder: synthesis.npy [F,C,H,W], synthesis.png, synthesis.json' },
  },
  async run(o) {
    const dir = o.required('out');
    checkOutputDir(dir);
    const model = modelFrom(o);
    const engine = new Engine(model);
    try {
      const layer = layerOption(o, model) ?? new Landmarks(model, engine.infos).lastFeatureMap();
      const features = indexList(o.required('features'), engine.info(layer).outShape[0], '--features');
      const objective = o.choice('objective', ['map', 'unit'] as const);
      const parameterization = o.choice('parameterization', ['pixel', 'fourier'] as const) as Parameterization;
      const fraction = (key: string) => {
        const v = o.number(key);
        if (!(v >= 0 && v <= 100)) throw new UsageError(`--${key} must be in 0..100, got ${v}`);
        return v;
      };
      const steps = o.int('steps', 1);
      const bar = new Progress('synthesize', features.length * steps, 'steps');
      const started = performance.now();
      const s = await synthesize(engine, layer, features, {
        objective, parameterization, steps,
        lr: o.has('lr') ? o.number('lr') : undefined,
        decay: o.number('decay'),
        blurSigma: o.number('blur'),
        blurEvery: o.int('blur-every', 1),
        jitter: o.has('jitter') ? o.int('jitter', 0) : undefined,
        normPercentile: fraction('norm-percentile'),
        contributionPercentile: fraction('contribution-percentile'),
        seed: o.int('seed'),
        batch: o.int('batch', 1),
        onProgress: (done, total) => bar.update(done, total),
      });
      const seconds = (performance.now() - started) / 1000;
      const images = features.map((_, i) => inputToImage(batchItem(s.images, i), model.preprocess));
      const caption = `${model.name} ${layer}: ${objective === 'map' ? 'map means' : 'centre units'} driven by ${parameterization} ascent, ${steps} steps`;
      const files = new Map<string, Uint8Array | string>([
        ['synthesis.npy', encodeNpy(s.images)],
        ['synthesis.png', await encodePng(await synthesisFigure(images, s, caption))],
        ['synthesis.json', compactJson({ model: model.name, layer, features, objective, parameterization, steps, seconds, final: s.final, history: s.history.map((h) => Array.from(h)) })],
      ]);
      writeOutputs(dir, files);
      process.stdout.write(`${layer}: ${features.map((f, i) => `#${f} ${s.final[i].toPrecision(3)}`).join(', ')} in ${seconds.toFixed(1)} s; wrote ${files.size} files to ${dir}/\n`);
    } finally {
      await engine.dispose();
    }
  },
};
