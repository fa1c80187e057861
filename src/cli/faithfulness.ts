// `convscope faithfulness`: parse options, call src/analysis/faithfulness.ts on held-out images, print and write the table.
import { checkOutputDir } from '../util/fs.js';
import { ATTRIBUTION_METHODS, type AttributionMethod } from '../analysis/attribution.js';
import { CURVE_STEPS, faithfulness, itemsOf, type FaithfulnessItem } from '../analysis/faithfulness.js';
import { IG_DEFAULTS } from '../analysis/integrated-gradients.js';
import { SMOOTHGRAD_DEFAULTS } from '../analysis/smoothgrad.js';
import { batches, skippedSummary } from '../data/batches.js';
import { Engine } from '../engine/engine.js';
import { faithfulnessFiles } from '../report/faithfulness.js';
import { writeOutputs } from '../report/files.js';
import { UsageError, type Command, type Options } from './args.js';
import { DATA_OPTIONS, layerOption, MODEL_OPTIONS, modelFrom, validationSet } from './options.js';
import { Progress } from './progress.js';
import { notice } from './notices.js';

/** `all` or a comma-separated list of methods, as `attribute --method` takes them. */
export function methodList(o: Options, key: string): AttributionMethod[] {
  const v = o.required(key).trim();
  if (v === 'all') return [...ATTRIBUTION_METHODS];
  const list = v.split(',').map((m) => m.trim());
  for (const m of list) {
    if (!ATTRIBUTION_METHODS.includes(m as AttributionMethod)) throw new UsageError(`--${key}: unknown method '${m}'; use all or a list of ${ATTRIBUTION_METHODS.join(', ')}`);
  }
  if (new Set(list).size !== list.length) throw new UsageError(`--${key} lists a method twice: ${v}`);
  return list as AttributionMethod[];
}

export const faithfulnessCommand: Command = {
  summary: 'ranks attribution methods on your model and data: deletion and insertion AUC, pointing game, speed',
  options: {
    ...MODEL_OPTIONS,
    ...DATA_OPTIONS,
    methods: { value: true, help: `all, or a comma-separated list of ${ATTRIBUTION_METHODS.join(', ')}`, default: 'all' },
    count: { value: true, help: 'held-out images to score', default: 20 },
    steps: { value: true, help: 'points of each deletion and insertion curve (equal shares of the pixels)', default: CURVE_STEPS },
    target: { value: true, help: 'class to explain: label (the true class) or predicted (default: label when the images have labels, else predicted)' },
    layer: { value: true, help: "Grad-CAM's layer (default: the model's deepest rectified feature map)" },
    'ig-steps': { value: true, help: 'Integrated Gradients: points on the path', default: IG_DEFAULTS.steps },
    samples: { value: true, help: 'SmoothGrad: noisy copies', default: SMOOTHGRAD_DEFAULTS.samples },
    out: { value: true, help: 'output folder: faithfulness.md, faithfulness.json, faithfulness.png' },
  },
  async run(o) {
    const dir = o.required('out');
    checkOutputDir(dir);
    const methods = methodList(o, 'methods');
    const count = o.int('count', 1);
    const steps = o.int('steps', 1);
    const given = o.has('target') ? o.choice('target', ['label', 'predicted'] as const) : undefined;
    const model = modelFrom(o);
    const methodOptions = { layer: layerOption(o, model), steps: o.int('ig-steps', 2), samples: o.int('samples', 1) };
    const ds = await validationSet(o);
    const n = Math.min(count, ds.size);
    const items: FaithfulnessItem[] = [];
    const stream = batches(ds, { input: model.input, preprocess: model.preprocess, batchSize: 32, indices: Array.from({ length: n }, (_, i) => i) });
    for await (const b of stream) items.push(...itemsOf(b));
    if (items.length === 0) throw new Error(`${ds.name}: none of the first ${n} images could be read`);
    const target = given ?? (ds.classes.length > 0 ? 'label' : 'predicted');
    if (!given && target === 'predicted') notice(`faithfulness: ${ds.name} has no labels: explaining each image's predicted class`);
    notice(`faithfulness: ${items.length} images x ${methods.length} methods (${methods.join(', ')}), each attribution then ${2 * steps} scored copies (deletion and insertion curves of ${steps} points)`);
    const engine = new Engine(model);
    try {
      const bar = new Progress('faithfulness', methods.length * items.length, 'attributions');
      const rows = await faithfulness(engine, items, methods, { steps, target, methodOptions, onProgress: (done, total) => bar.update(done, total) });
      const { files, markdown } = await faithfulnessFiles({ model: model.name, data: ds.name, images: items.length, steps, target, rows });
      writeOutputs(dir, files);
      const skipped = skippedSummary(stream.skipped);
      process.stdout.write(`${markdown}${skipped ? `${skipped}\n` : ''}wrote ${files.size} files to ${dir}/\n`);
    } finally {
      await engine.dispose();
    }
  },
};
