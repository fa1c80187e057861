// `convscope topk`: parses options and calls the top-k scan and its figure writer.
import { checkOutputDir } from '../util/fs.js';
import { join } from 'node:path';
import { SYNTHESIS_DEFAULTS } from '../analysis/synthesize.js';
import { parseQueueUrl } from '../distributed/connection.js';
import { distributedProjector, distributedTopk } from '../distributed/topk.js';
import { resolveTopkLayers, scanTopk, slotsPerFeature } from '../analysis/topk.js';
import { topkFigureViews } from '../analysis/topk-views.js';
import { skippedSummary } from '../data/batches.js';
import { SPLITS, type Dataset, type Split } from '../data/dataset.js';
import { BACKWARD_RULES, LRN_MODES } from '../engine/compile.js';
import { Engine } from '../engine/engine.js';
import { ZF_SETTINGS } from '../analysis/project.js';
import { DATA_OPTIONS, datasetFrom, MODEL_OPTIONS, layersOption, modelFrom, validationSplit } from './options.js';
import { writeTopk } from '../report/topk.js';
import { fileCheckpoint } from '../util/checkpoint.js';
import { Progress } from './progress.js';
import { Landmarks } from '../model/landmarks.js';
import { UsageError, type Options, type Command } from './args.js';
import { notice, say } from './notices.js';

/** The paper's Fig. 2 uses the validation set; IDX data has none, so its test set stands in. */
async function scanSet(o: Options): Promise<{ ds: Dataset; split: Split }> {
  if (!o.has('split')) return validationSplit(o);
  const split = o.choice('split', SPLITS);
  return { ds: await datasetFrom(o, split), split };
}

function firstIndices(ds: Dataset, limit: number | undefined): number[] | undefined {
  if (limit === undefined || limit >= ds.size) return undefined;
  return Array.from({ length: limit }, (_, i) => i);
}

/** Feature orders of the figures: by index, or strongest activation first. */
export const TOPK_ORDERS = ['index', 'max'] as const;

export const topkCommand: Command = {
  summary: 'top-k activations of every feature map over a dataset, projected and beside their image patches (Fig. 2)',
  options: {
    ...MODEL_OPTIONS,
    ...DATA_OPTIONS,
    split: { value: true, help: 'train, val or test (default: val, or test where the data has no val, as the paper)' },
    limit: { value: true, help: 'scan only the first N images of the split' },
    layers: { value: true, help: "comma-separated layers (default: five of the model's rectified feature maps, evenly spread over its depth: relu1..relu5 on ZFNet)" },
    k: { value: true, help: 'activations kept per feature map', default: 9 },
    'per-image': { value: true, help: 'positions one image may give a feature map; 1 is its maximum, the paper\'s choice', default: 1 },
    order: { value: true, help: 'feature order in the figures: index or max (strongest activation first)', default: 'index' },
    'per-page': { value: true, help: 'features per PNG page', default: 16 },
    'batch-size': { value: true, help: 'images per forward pass', default: 64 },
    'project-batch': { value: true, help: 'units per projection call', default: 48 },
    rule: { value: true, help: 'ReLU rule of the projections: deconvnet, gradient or guided', default: ZF_SETTINGS.rule },
    lrn: { value: true, help: 'LRN on the way down: gradient or identity', default: ZF_SETTINGS.lrn },
    'checkpoint-every': { value: true, help: 'batches between checkpoints of the scan', default: 20 },
    synthesize: { value: false, help: 'beside each feature, a synthetic image that maximises its map (activation maximisation, see `convscope synthesize`)' },
    'synth-steps': { value: true, help: 'with --synthesize: gradient-ascent steps', default: SYNTHESIS_DEFAULTS.steps },
    resume: { value: false, help: 'continue the scan from OUT/checkpoint.json (same model, data and options); with --queue, reuse the shards workers finished' },
    queue: { value: true, help: 'scan on workers (convscope worker) through Redis: redis://[:password@]HOST:PORT[/DB]; the result is the local one' },
    'shard-size': { value: true, help: 'with --queue: images per job', default: 1000 },
    out: { value: true, help: 'output folder: index.json, LAYER/page-NN.png, LAYER/projections.npy, checkpoint.json' },
  },
  async run(o) {
    const out = o.required('out');
    checkOutputDir(out);
    const k = o.int('k', 1);
    const perImage = o.int('per-image', 1);
    const perPage = o.int('per-page', 1);
    const batchSize = o.int('batch-size', 1);
    const batchUnits = o.int('project-batch', 1);
    const every = o.int('checkpoint-every', 1);
    const limit = o.has('limit') ? o.int('limit', 1) : undefined;
    const order = o.choice('order', TOPK_ORDERS);
    const synthSteps = o.int('synth-steps', 1);
    const settings = { rule: o.choice('rule', BACKWARD_RULES), lrn: o.choice('lrn', LRN_MODES), seedValue: 'activation' as const };
    // Everything that can be wrong with the input is checked before the first file is written.
    const model = modelFrom(o);
    const requested = layersOption(o, model);
    const engine = new Engine(model);
    try {
      const layers = resolveTopkLayers(engine, requested);
      const maps = new Landmarks(model, engine.infos).featureMaps().length;
      if (!requested && maps > layers.length) notice(`topk: ${layers.length} of the model's ${maps} feature maps, evenly spread over its depth; --layers picks others (convscope inspect lists them)`);
      const { ds, split } = await scanSet(o);
      const indices = firstIndices(ds, limit);
      const total = indices?.length ?? ds.size;
      if (total === 0) throw new Error(`${ds.name} has no images to scan`);
      // What the run will cost, before it starts: the scan's images, then up to features x k projections.
      const features = layers.reduce((a, l) => a + engine.info(l).outShape[0], 0);
      const slots = slotsPerFeature({ k, images: total, perImage });
      notice(
        `topk: ${model.name} on ${ds.name}, ${total} images, layers ${layers.join(', ')}; k ${k}, at most ${perImage} per image; ` +
          `then up to ${features * slots} projections (${features} feature maps x ${slots})`,
      );
      const result = o.has('queue')
        ? await distributedTopk({
            address: parseQueueUrl(o.required('queue')),
            model: { path: o.required('model'), seed: o.int('model-seed'), mean: o.numbers('mean'), std: o.numbers('std') },
            data: { spec: o.required('data'), split, ...(o.string('data-path') ? { dataPath: o.string('data-path') } : {}) },
            layers, k, perImage, batchSize,
            indices: indices ?? Array.from({ length: ds.size }, (_, i) => i),
            shardSize: o.int('shard-size', 1),
            resume: o.flag('resume'),
            onProgress: ((bar) => (done: number, all: number, note: string) => bar.update(done, all, note))(new Progress('topk shards', 0, 'shards')),
          })
        : await (async () => {
            const scanBar = new Progress('topk scan', total, 'images');
            return scanTopk(engine, ds, {
              layers, k, perImage, batchSize, indices,
              checkpoint: fileCheckpoint(join(out, 'checkpoint.json')), checkpointEvery: every, resume: o.flag('resume'),
              onProgress: (done) => scanBar.update(done),
            });
          })();
      const reused = 'resumedShards' in result ? Number(result.resumedShards) : 0;
      if (reused > 0) say(`topk: reused ${reused} shards finished before`);
      if (result.resumedAt !== undefined) say(`topk: resumed the scan at batch ${result.resumedAt}`);
      if (result.skipped.length > 0) say(`topk: ${skippedSummary(result.skipped)}`);
      if (result.images === 0) throw new Error(`${ds.name}: no readable images to scan`);
      // A bar per layer: a deeper layer's projections cost more, so one estimate from the first layer's rate misled.
      const layerUnits = result.layers.map((l) => l.features.reduce((b, es) => b + es.length, 0));
      const ends = layerUnits.map((_, k) => layerUnits.slice(0, k + 1).reduce((a, n) => a + n, 0));
      const projectBars = new Map<number, Progress>();
      const barOf = (k: number) => {
        let bar = projectBars.get(k);
        if (!bar) projectBars.set(k, (bar = new Progress(`topk project ${result.layers[k].layer}`, layerUnits[k], 'units')));
        return bar;
      };
      const nextLayer = (k: number) => layerUnits.findIndex((n, j) => j > k && n > 0);
      if (nextLayer(-1) >= 0) barOf(nextLayer(-1));
      const projected = (done: number) => {
        const k = ends.findIndex((end, j) => layerUnits[j] > 0 && done <= end);
        barOf(k).update(done - (ends[k] - layerUnits[k]));
        // The next layer's clock starts when this one ends, so its first batch counts in its rate.
        if (done === ends[k] && nextLayer(k) >= 0) barOf(nextLayer(k));
      };
      const modelRef = { path: o.required('model'), seed: o.int('model-seed'), mean: o.numbers('mean'), std: o.numbers('std') };
      const dataRef = { spec: o.required('data'), split, ...(o.string('data-path') ? { dataPath: o.string('data-path') } : {}) };
      const figure = topkFigureViews(engine, ds, result, {
        perPage, order, settings, batchUnits,
        // On the queue the kept units are projected on the workers too; the pages are drawn here.
        ...(o.has('queue') ? { project: distributedProjector(parseQueueUrl(o.required('queue')), { model: modelRef, data: dataRef }, settings, batchUnits) } : {}),
        ...(o.flag('synthesize') ? { synthesize: { steps: synthSteps } } : {}),
        onProgress: projected,
      });
      const index = await writeTopk(figure, out);
      const pages = index.layers.reduce((a, l) => a + l.pages.length, 0);
      process.stdout.write(
        `top ${k} of ${result.images} images for ${index.layers.map((l) => `${l.layer} (${l.features.length})`).join(', ')}; ` +
          `wrote ${pages} pages, ${index.layers.length} projections .npy and index.json to ${out}/\n`,
      );
    } finally {
      await engine.dispose();
    }
  },
};
