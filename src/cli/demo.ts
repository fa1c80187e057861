// `convscope demo`: the whole paper on one dataset, as the library calls a user would make (train, top-9, evolution,
// invariance, the architecture comparison, occlusion and its localisation score, correspondence, and beyond the paper
// every attribution method with its faithfulness), each step's files
// written by its report/ writer into the run folder's layout, then the HTML report over them.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { randomlyInitialised, runAblations } from '../analysis/ablate.js';
import { compareArchitectures } from '../analysis/architecture.js';
import { correspondence, datasetPartsSet, paperLayers57, prepareImages } from '../analysis/correspondence.js';
import { featureEvolution, loadSnapshots } from '../analysis/evolution.js';
import { invarianceCurves, paperLayers, paperSweeps, type NamedResult } from '../analysis/invariance.js';
import { ATTRIBUTION_METHODS, attributeAll } from '../analysis/attribution.js';
import { CURVE_STEPS, faithfulness, itemsOf, type FaithfulnessItem } from '../analysis/faithfulness.js';
import { localisationItems, localisationScore, occlusionMaps } from '../analysis/occlusion.js';
import { runProbe, type LabelledProbe } from '../analysis/probe.js';
import { resolveTopkLayers, scanTopk } from '../analysis/topk.js';
import { topkFigureViews } from '../analysis/topk-views.js';
import { batches } from '../data/batches.js';
import type { Dataset, Item } from '../data/dataset.js';
import type { Model } from '../model/layers.js';
import { filterClasses } from '../data/filter.js';
import { openTrainAndHeldOut, openValidation, type TrainAndHeldOut } from '../data/held-out.js';
import { fitImage, imageToInput, loadInput } from '../data/image.js';
import { Engine } from '../engine/engine.js';
import { loadModel, withPreprocess } from '../model/load.js';
import { describePreprocess, givenPreprocess, type PresetName } from '../model/preprocess.js';
import { Landmarks } from '../model/landmarks.js';
import { isZooName } from '../model/zoo.js';
import { encodePng } from '../render/figure.js';
import { compareArchFiles } from '../report/architecture.js';
import { ablationFiles } from '../report/ablate.js';
import { attributionFiles } from '../report/attribution.js';
import { faithfulnessFiles } from '../report/faithfulness.js';
import { correspondenceFiles, partsSetFiles } from '../report/correspondence.js';
import { writeEvolution } from '../report/evolution.js';
import { writeOutputs } from '../report/files.js';
import { invarianceFiles } from '../report/invariance.js';
import { localisationFiles, occlusionFiles } from '../report/occlusion.js';
import { probeFiles } from '../report/probe.js';
import { buildReport, RUN_LAYOUT, SKIPPED_FILE, type SkippedSteps } from '../report/report.js';
import { writeTopk } from '../report/topk.js';
import { writeTrainingCurves } from '../report/training.js';
import { paperSnapshotEpochs } from '../train/optimizer.js';
import { PAPER_TRAINING, readTrainConfig, train, type TrainConfig } from '../train/trainer.js';
import { writeFileAtomic } from '../util/fs.js';
import { fileCheckpoint } from '../util/checkpoint.js';
import { formatSeconds } from '../util/progress.js';
import { paperLayerTitles } from './paper-layers.js';
import { Progress } from './progress.js';

export interface DemoSettings {
  out: string;
  /** Dataset spec; default the built-in shapes set. */
  data: string;
  /** A zoo name to train, or a trained model file (then training, evolution and the architecture comparison are skipped). */
  model: string;
  epochs: number;
  /** Images scanned by the analyses that sweep a dataset. */
  scan: number;
  /** Images occluded one by one for Fig. 7 (and explained by every attribution method). */
  occlusions: number;
  /** Held-out images the faithfulness table scores every attribution method on. */
  faithfulness: number;
  /** For a given model file: the preprocessing to feed it (default the file's, or caffe for an ONNX file without). */
  preprocess?: PresetName;
}

export const DEMO_DEFAULTS: DemoSettings = { out: 'convscope-out', data: 'shapes', model: 'zfnet-small', epochs: 20, scan: 1000, occlusions: 3, faithfulness: 20 };

/** Small enough for a test: a few hundred images, two epochs. */
export const DEMO_QUICK: Partial<DemoSettings> = { data: 'shapes:count=192', epochs: 2, scan: 64, occlusions: 1, faithfulness: 2 };

/** What `convscope train` does with its defaults: the paper's recipe, batch 32, snapshots at the paper's epochs. */
function demoTraining(epochs: number): TrainConfig {
  return {
    ...PAPER_TRAINING, epochs, batchSize: 32, snapshotEpochs: paperSnapshotEpochs(epochs),
    augment: { randomCrop: 0, cropMode: 'scale', flip: true },
  };
}

const firstN = (n: number, size: number) => Array.from({ length: Math.min(n, size) }, (_, i) => i);
/** The demo's probes: the paper's Caltech-101 sizes, three draws, a test subset that keeps the step short. */
const DEMO_PROBE = { perClass: [15, 30], splits: 3, seed: 0, pool: 4, l2: 1, maxTest: 400, batchSize: 64 };
/** The paper's ablations (Table 3), as zoo layer names, and how the demo fine-tunes each model. */
const PAPER_ABLATIONS = [['fc7'], ['fc6', 'fc7'], ['conv3', 'conv4']];
const DEMO_ABLATION = { start: 'trained' as const, lr: 0.01, schedule: { kind: 'constant' as const }, batchSize: 64, seed: 0 };
/** The class an item is explained for: its label, or (unlabelled data) the predicted class. */
const labelOf = (item: Item): number | undefined => (item.label >= 0 ? item.label : undefined);
/** Whether a dataset records object boxes (the localisation score and correspondence need them). */
const hasBoxes = async (ds: Dataset): Promise<boolean> => ds.size > 0 && (await ds.item(0).then((i) => i.box !== undefined, () => false));

export async function runDemoPipeline(s: DemoSettings, log: (line: string) => void): Promise<string> {
  const at = (step: keyof typeof RUN_LAYOUT) => join(s.out, RUN_LAYOUT[step]);
  const started = Date.now();
  const step = async (name: string, body: () => Promise<void>) => {
    log(`\n== ${name}`);
    const t = Date.now();
    await body();
    log(`== ${name} done in ${formatSeconds((Date.now() - t) / 1000)}`);
  };
  const training = isZooName(s.model);
  if (training && s.preprocess) throw new Error(`--preprocess is for a model file: ${s.model} is trained here and records its own`);
  // Training needs a held-out set (a one-split folder is cut, once, and says so); a given model is analysed on all
  // of a one-split folder. IDX data has no validation split: its test split stands in, as in every command.
  let sets: Promise<TrainAndHeldOut> | undefined;
  const trainAndHeld = () =>
    (sets ??= openTrainAndHeldOut(s.data).then((r) => {
      if (r.note) log(r.note);
      return r;
    }));
  const validation = async (): Promise<Dataset> => (training ? (await trainAndHeld()).heldOut : (await openValidation(s.data)).ds);
  const modelFile = training ? join(at('train'), 'model.safetensors') : s.model;
  // Steps left out on purpose are said as they come and recorded, so the report says why, not "run it".
  const skipped: SkippedSteps = {};
  const skip = (key: keyof SkippedSteps, name: string, reason: string) => {
    log(`\n== ${name} skipped: ${reason}`);
    skipped[key] = reason;
  };
  const given = `${s.model} is a model file, analysed as it is (the demo trains only a zoo model)`;
  if (!training) skip('train', 'training', given);

  if (training) {
    await step(`train ${s.model} on ${s.data}, ${s.epochs} epochs`, async () => {
      const model = loadModel(s.model, { seed: 0, init: 'kaiming' });
      const { train: trainSet, heldOut: valSet } = await trainAndHeld();
      log(`training ${model.name} on ${trainSet.name} (${trainSet.size} images, ${trainSet.classes.length} classes), validating on ${valSet.name}`);
      await train(model, trainSet, valSet, demoTraining(s.epochs), {
        outDir: at('train'), log, onProgress: new Progress('train', 0, 'batches').report,
        onEpoch: (_, history) => writeTrainingCurves(at('train'), `${model.name} on ${trainSet.name}`, history),
      });
    });
  } else if (!existsSync(s.model)) throw new Error(`model ${s.model} is neither a zoo name nor a file`);

  /**
   * Sec. 5 and Table 3. Transfer: a model of the same architecture trained on the first 60 % of the classes, its
   * frozen features probed on the others beside random-init ones (a given model is probed on the data's own classes).
   * Ablation: the paper's (fc7; fc6 and fc7; conv3 and conv4) where the model has those layers, fine-tuned briefly.
   */
  const transferAndAblation = async () => {
    const sets = await trainAndHeld().catch((e: Error) => e);
    if (sets instanceof Error) {
      skip('probe', 'transfer (Sec. 5)', `it needs labelled data: ${sets.message}`);
      skip('ablate', 'ablation (Table 3)', 'it retrains on labelled data');
      return;
    }
    const { train: trainSet, heldOut } = sets;
    const n = trainSet.classes.length;
    if (training && n < 4) skip('probe', 'transfer (Sec. 5)', `it holds classes out of training and needs at least 4; ${trainSet.name} has ${n}`);
    else {
      await step(training ? 'transfer (Sec. 5): features learnt on some classes, probed on the others' : 'linear probes of every level (Sec. 5)', async () => {
        let probed: Model = model;
        let [probeTrain, probeTest] = [trainSet, heldOut];
        if (training) {
          const cut = Math.ceil(0.6 * n);
          const [source, target] = [Array.from({ length: cut }, (_, c) => c), Array.from({ length: n - cut }, (_, c) => cut + c)];
          const outDir = join(at('probe'), 'source-model');
          log(`training ${s.model} on classes ${source.map((c) => trainSet.classes[c]).join(', ')}; probing on ${target.map((c) => trainSet.classes[c]).join(', ')}, which it never sees`);
          await train(loadModel(s.model, { seed: 0, init: 'kaiming', classes: cut }), filterClasses(trainSet, source), filterClasses(heldOut, source), demoTraining(Math.max(1, Math.round(s.epochs / 2))), {
            outDir, log, onProgress: new Progress('train', 0, 'batches').report,
          });
          probed = loadModel(join(outDir, 'model.safetensors'));
          [probeTrain, probeTest] = [filterClasses(trainSet, target), filterClasses(heldOut, target)];
        }
        // A small set (demo --quick, a user's folder) has fewer than 30 images of some class: probe with what it has.
        const perClassCount = new Array<number>(probeTrain.classes.length).fill(0);
        for (let i = 0; i < probeTrain.size; i++) perClassCount[probeTrain.label(i)]++;
        const fewest = Math.min(...perClassCount);
        const perClass = DEMO_PROBE.perClass.filter((k) => k <= fewest);
        const options = { ...DEMO_PROBE, layers: new Landmarks(probed).levels(), perClass: perClass.length > 0 ? perClass : [Math.max(1, fewest)], log };
        const bar = () => ({ onProgress: new Progress('probe features', 0, 'images').report });
        const runs: LabelledProbe[] = [{ label: 'trained', result: await runProbe(probed, probeTrain, probeTest, { ...options, ...bar() }) }];
        runs.push({ label: 'random init', result: await runProbe(randomlyInitialised(probed, DEMO_PROBE.seed), probeTrain, probeTest, { ...options, ...bar() }) });
        const { files, markdown } = await probeFiles(runs, `Linear probes: ${probed.name} -> ${probeTest.name}`);
        writeOutputs(at('probe'), files);
        log(markdown);
      });
    }
    const ablations = PAPER_ABLATIONS.filter((a) => a.every((name) => model.layers.some((l) => l.name === name)));
    if (ablations.length === 0) {
      skip('ablate', 'ablation (Table 3)', `the paper's ablations remove ${[...new Set(PAPER_ABLATIONS.flat())].join(', ')}, which ${model.name} does not have: run convscope ablate --remove with its layer names`);
      return;
    }
    await step(`ablation (Table 3): ${ablations.map((a) => `without ${a.join(' and ')}`).join('; ')}`, async () => {
      const result = await runAblations(model, trainSet, heldOut, { ...DEMO_ABLATION, ablations, epochs: s.epochs >= 10 ? 2 : 1 }, {
        outDir: at('ablate'), log,
        onRun: (name) => ({ onProgress: new Progress(`retrain ${name}`, 0, 'batches').report }),
      });
      const { files, markdown } = ablationFiles(result);
      writeOutputs(at('ablate'), files);
      log(markdown);
    });
  };

  const model = loadModel(modelFile, { seed: 0 });
  if (!training) {
    withPreprocess(model, givenPreprocess(model.input[0], s.preprocess, {}));
    log(describePreprocess(model.preprocess, s.preprocess ? `from --preprocess ${s.preprocess}` : model.preprocess.assumed ? 'assumed' : 'from the model file'));
  }
  const engine = new Engine(model);
  try {
    await step('top-9 per feature map (Fig. 2)', async () => {
      const ds = await validation();
      const indices = firstN(s.scan, ds.size);
      const result = await scanTopk(engine, ds, {
        layers: resolveTopkLayers(engine), indices, checkpoint: fileCheckpoint(join(at('topk'), 'checkpoint.json')),
        onProgress: new Progress('topk scan', indices.length, 'images').report,
      });
      await writeTopk(topkFigureViews(engine, ds, result, { onProgress: new Progress('topk project', 0, 'units').report }), at('topk'));
    });

    if (!training) skip('evolution', 'feature evolution (Fig. 4)', `it follows the snapshots of a training run; ${given}`);
    else {
      await step('feature evolution (Fig. 4)', async () => {
        const data = (await trainAndHeld()).train;
        const result = await featureEvolution(loadSnapshots(join(at('train'), 'snapshots')), data, {
          features: 6, seed: 0, indices: firstN(s.scan, data.size), onProgress: (_d, _t, note) => note && log(note),
        });
        await writeEvolution(result, at('evolution'));
      });
    }

    await step('invariance (Fig. 5)', async () => {
      const ds = await validation();
      const [C, H, W] = model.input;
      const layers = paperLayers(model);
      const sweeps = paperSweeps(H);
      const results: NamedResult[] = [];
      let exampleInput;
      for (const i of firstN(Math.min(10, s.scan), ds.size)) {
        const item = await ds.item(i);
        const input = imageToInput(fitImage(item.image, [H, W], C === 1 ? 1 : 3), model.preprocess);
        exampleInput ??= input;
        results.push({ name: item.name, result: await invarianceCurves(engine, input, labelOf(item), { layers, sweeps, batch: 64 }) });
      }
      if (!exampleInput) throw new Error(`${ds.name}: no images for the invariance curves`);
      writeOutputs(at('invariance'), await invarianceFiles({
        model, layers, sweeps, results, classSources: results.map((r) => (r.result.trueClass === undefined ? 'none (unlabelled)' : 'dataset label')), exampleInput,
        layerTitle: paperLayerTitles(model, paperLayers, ['layer 1', 'layer 7']).title,
      }));
    });

    if (!(training && s.model === 'zfnet-small')) {
      skip('architecture', 'architecture selection (Fig. 6)', training ? `it sets alexnet-small beside a zfnet-small run, and this run trains ${s.model}` : `it trains two zoo architectures; ${given}`);
    } else {
      await step('architecture selection (Fig. 6): alexnet-small beside zfnet-small', async () => {
        const { train: trainSet, heldOut: valSet } = await trainAndHeld();
        const results = await compareArchitectures(trainSet, valSet, readTrainConfig(at('train')), at('architecture'), {
          log, activityIndices: firstN(s.scan, valSet.size), runs: { 'zfnet-small': at('train') },
          onRun: (name, dir) => ({
            onProgress: new Progress(`training ${name}`, 0, 'batches').report,
            onEpoch: (_, history) => writeTrainingCurves(dir, `${name} on ${trainSet.name}`, history),
            onActivityProgress: new Progress('activity', Math.min(s.scan, valSet.size), 'images').report,
          }),
        });
        writeOutputs(at('architecture'), (await compareArchFiles(results)).files);
      });
    }

    await transferAndAblation();

    await step('occlusion (Fig. 7) and its localisation score', async () => {
      // The held-out images are written as files first and read back as a user's images would be.
      const held = await validation();
      for (const i of firstN(s.occlusions, held.size)) {
        const item = await held.item(i);
        const file = join(at('occlusion'), 'inputs', `${String(i).padStart(2, '0')}-${(held.classes[item.label] ?? 'unlabelled').replace(/\W+/g, '-')}.png`);
        writeFileAtomic(file, await encodePng(item.image));
        const input = await loadInput(file, model);
        const t = performance.now();
        const maps = await occlusionMaps(engine, input, { target: labelOf(item), mode: 'paper', onProgress: new Progress('occlude', 0, 'positions').report });
        const { files, summary } = await occlusionFiles(model, input, maps, (performance.now() - t) / 1000);
        writeOutputs(join(at('occlusion'), `image-${String(i).padStart(2, '0')}`), files);
        log(summary);
      }
      if (!(await hasBoxes(held))) {
        log(`localisation score skipped: ${held.name} records no object boxes (the built-in shapes set does)`);
        return;
      }
      const items = await localisationItems(held, model, Math.min(50, s.scan));
      const score = await localisationScore(engine, items, { onProgress: new Progress('score', items.length, 'images').report });
      const { files, summary } = localisationFiles(model, held.name, score);
      writeOutputs(at('occlusion'), files);
      log(summary);
    });

    await step('beyond the paper: every attribution method and its faithfulness', async () => {
      const held = await validation();
      for (const i of firstN(s.occlusions, held.size)) {
        const item = await held.item(i);
        const input = imageToInput(fitImage(item.image, [model.input[1], model.input[2]], model.input[0] === 1 ? 1 : 3), model.preprocess);
        const results = await attributeAll(engine, input, ATTRIBUTION_METHODS, { target: labelOf(item) });
        writeOutputs(join(at('attribution'), `image-${String(i).padStart(2, '0')}`), (await attributionFiles(model, input, results)).files);
      }
      const items: FaithfulnessItem[] = [];
      for await (const b of batches(held, { input: model.input, preprocess: model.preprocess, batchSize: 32, indices: firstN(s.faithfulness, held.size) })) items.push(...itemsOf(b));
      const target = held.classes.length > 0 ? 'label' : 'predicted';
      const rows = await faithfulness(engine, items, ATTRIBUTION_METHODS, { target, onProgress: new Progress('faithfulness', 0, 'attributions').report });
      const { files, markdown } = await faithfulnessFiles({ model: model.name, data: held.name, images: items.length, steps: CURVE_STEPS, target, rows });
      writeOutputs(at('attribution'), files);
      log(markdown);
    });

    await step('correspondence (Table 1)', async () => {
      const ds = await validation();
      if (ds.classes.length === 0 || !(await hasBoxes(ds))) {
        skipped.correspondence = `it needs labelled images with object boxes, which ${ds.name} does not record (the built-in shapes set does)`;
        log(`correspondence skipped: ${skipped.correspondence}`);
        return;
      }
      const items = await datasetPartsSet(ds, 0, 5, 0.5);
      const images = prepareImages(items, 'image', model);
      const result = await correspondence(engine, images, { layers: paperLayers57(model), draws: 10, seed: 0, batch: 64 });
      const { files } = await correspondenceFiles(model, images, result, paperLayerTitles(model, paperLayers57, ['layer 5', 'layer 7']).title);
      writeOutputs(at('correspondence'), new Map([...(await partsSetFiles(items)), ...files]));
    });
  } finally {
    await engine.dispose();
  }
  writeFileAtomic(join(s.out, SKIPPED_FILE), `${JSON.stringify(skipped, null, 1)}\n`);
  const report = buildReport(s.out, `convscope report: ${training ? `${s.model} trained on` : s.model + ','} ${s.data}`);
  log(`\nall steps done in ${formatSeconds((Date.now() - started) / 1000)}; open ${report}`);
  return report;
}
