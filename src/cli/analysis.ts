// `convscope invariance` (Fig. 5) and `convscope correspond` (Table 1): parse options, call the analyses, write files.
import { checkOutputDir } from '../util/fs.js';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { correspondence, datasetPartsSet, loadPartsSet, paperLayers57, parseParts, prepareImages, PARTS_SCHEMA, type CorrespondenceImage } from '../analysis/correspondence.js';
import { correspondenceFiles, partsSetFiles } from '../report/correspondence.js';
import { invarianceCurves, meanCurves, paperLayers, paperSweeps, type NamedResult, type Sweep } from '../analysis/invariance.js';
import { invarianceFiles } from '../report/invariance.js';
import { writeOutputs } from '../report/files.js';
import { decodeImage, fitImage, imageToInput } from '../data/image.js';
import { Engine } from '../engine/engine.js';
import { Landmarks } from '../model/landmarks.js';
import type { Model } from '../model/layers.js';
import type { Tensor } from '../tensor.js';
import { UsageError, type Options, type OptionSpec, type Command } from './args.js';
import { classIndex, DATA_OPTIONS, layersOption, MODEL_OPTIONS, modelFrom, validationSet } from './options.js';
import { paperLayerTitles } from './paper-layers.js';
import { notice } from './notices.js';
import { Progress } from './progress.js';


/** "FROM:TO:STEP" (both ends included) or "A,B,C". */
export function parseAmounts(name: string, text: string): number[] {
  const range = /^\s*(-?[\d.]+)\s*:\s*(-?[\d.]+)\s*:\s*([\d.]+)\s*$/.exec(text);
  if (range) {
    const [from, to, step] = range.slice(1).map(Number);
    if (![from, to, step].every(Number.isFinite) || !(step > 0) || to < from) throw new UsageError(`--${name} FROM:TO:STEP needs FROM <= TO and STEP > 0, got '${text}'`);
    const n = Math.floor((to - from) / step + 1e-9) + 1;
    if (n > 1000) throw new UsageError(`--${name} '${text}' gives ${n} amounts; at most 1000`);
    return Array.from({ length: n }, (_, k) => Number((from + k * step).toFixed(10)));
  }
  const values = text.split(',').map((s) => Number(s.trim()));
  if (text.trim() === '' || values.some((v) => !Number.isFinite(v))) throw new UsageError(`--${name} must be FROM:TO:STEP or comma-separated numbers, got '${text}'`);
  return values;
}

interface LabelledInput {
  name: string;
  input: Tensor;
  label?: number;
}

async function invarianceInputs(o: Options, model: Model): Promise<LabelledInput[]> {
  const images = o.string('images');
  if ((images === undefined) === !o.has('data')) throw new UsageError('give exactly one of --images and --data');
  const [C, H, W] = model.input;
  if (C !== 1 && C !== 3) throw new UsageError(`model input has ${C} channels; images give 1 or 3`);
  const toInput = (img: Parameters<typeof fitImage>[0]) => imageToInput(fitImage(img, [H, W], C), model.preprocess);
  if (images !== undefined) {
    const paths = images.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
    if (paths.length === 0) throw new UsageError('--images needs at least one image');
    return Promise.all(paths.map(async (p) => ({ name: p, input: toInput(await decodeImage(p)) })));
  }
  const ds = await validationSet(o);
  const count = Math.min(o.int('count', 1), ds.size);
  return Promise.all(Array.from({ length: count }, async (_, i) => {
    const item = await ds.item(i);
    return { name: item.name, input: toInput(item.image), label: item.label >= 0 ? item.label : undefined };
  }));
}

function sweepsFrom(o: Options, height: number): Sweep[] {
  return paperSweeps(height).map((s) => {
    const text = o.string(s.kind);
    return text === undefined ? s : { kind: s.kind, amounts: parseAmounts(s.kind, text) };
  });
}

export const invarianceCommand: Command = {
  summary: 'invariance (Fig. 5): feature distance and p(true class) under vertical translation, scale and rotation',
  options: {
    ...MODEL_OPTIONS,
    images: { value: true, help: 'comma-separated image files (JPEG, PNG, WebP)' },
    ...DATA_OPTIONS,
    count: { value: true, help: 'with --data: the first N images of the held-out split', default: 10 },
    layers: { value: true, help: "layers to compare (default: the paper's layers 1 and 7, e.g. relu1,relu7)" },
    'true-class': { value: true, help: 'class name or index, one for all images or one per image (default: the dataset label, else the predicted class)' },
    translate: { value: true, help: 'vertical shifts in input pixels, FROM:TO:STEP or a list (default: the paper\'s -60..60 of 224, scaled)' },
    scale: { value: true, help: 'scale ratios (default 1:1.8:0.1, the paper\'s axis)' },
    rotate: { value: true, help: 'rotations in degrees, counter-clockwise (default 0:360:10)' },
    batch: { value: true, help: 'images per engine call', default: 64 },
    out: { value: true, help: 'output folder: invariance.png, invariance.csv, invariance.json' },
  },
  async run(o) {
    const dir = o.required('out');
    checkOutputDir(dir);
    const model = modelFrom(o);
    const paper = paperLayerTitles(model, paperLayers, ['layer 1', 'layer 7']);
    const layers = layersOption(o, model) ?? paper.layers ?? [];
    if (layers.length === 0) throw new UsageError(`model ${model.name}: give --layers (no conv + two linear layers to pick the paper's layers from)`);
    const sweeps = sweepsFrom(o, model.input[1]);
    const batch = o.int('batch', 1);
    const inputs = await invarianceInputs(o, model);
    const engine = new Engine(model);
    try {
      const classes = engine.unitsPerItem(new Landmarks(model).output().name);
      const given = o.string('true-class')?.split(',').map((s) => classIndex(s.trim(), model.classes, classes));
      if (given && given.length !== 1 && given.length !== inputs.length) throw new UsageError(`--true-class gives ${given.length} classes for ${inputs.length} images; give 1 or ${inputs.length}`);
      const results: NamedResult[] = [];
      const sources: string[] = [];
      const copies = sweeps.reduce((a, s) => a + s.amounts.length, 0);
      notice(`invariance: ${inputs.length} images x ${copies} transformed copies (${sweeps.map((s) => `${s.kind} ${s.amounts.length}`).join(', ')}), layers ${layers.join(', ')}`);
      const bar = new Progress('invariance', inputs.length, 'images');
      for (const [i, { name, input, label }] of inputs.entries()) {
        const trueClass = given ? given[given.length === 1 ? 0 : i] : label;
        sources.push(given ? 'given' : label !== undefined ? 'dataset label' : 'predicted');
        results.push({ name, result: await invarianceCurves(engine, input, trueClass, { layers, sweeps, batch }) });
        bar.update(i + 1);
      }
      const mean = meanCurves(results.map((r) => r.result));
      writeOutputs(dir, await invarianceFiles({ model, layers, sweeps, results, classSources: sources, exampleInput: inputs[0].input, layerTitle: paper.title }));
      const summary = mean.map((c) => {
        const range = `${c.kind} ${c.amounts[0]}..${c.amounts[c.amounts.length - 1]}`;
        const distances = layers.map((l) => `${l} ${Math.max(...c.distance[l]).toFixed(3)}`).join(', ');
        return `${range}: max relative distance ${distances}; p(true class) ${Math.min(...c.probability).toFixed(3)}..${Math.max(...c.probability).toFixed(3)}`;
      });
      process.stdout.write(`${summary.join('\n')}\nmean of ${results.length} image${results.length === 1 ? '' : 's'}; wrote invariance.png, invariance.csv, invariance.json to ${dir}/\n`);
    } finally {
      await engine.dispose();
    }
  },
};

async function correspondenceImages(o: Options, model: Model): Promise<{ images: CorrespondenceImage[]; set?: Map<string, Uint8Array | string> }> {
  const dirArg = o.string('images');
  const partsArg = o.string('parts');
  if (o.has('data')) {
    if (dirArg !== undefined || partsArg !== undefined) throw new UsageError('give either --data or --images with --parts');
    const ds = await validationSet(o);
    const cls = classIndex(o.required('class'), ds.classes, ds.classes.length);
    const maxBox = o.number('max-box');
    if (!(maxBox > 0 && maxBox <= 1)) throw new UsageError(`--max-box must be in (0, 1], got ${maxBox}`);
    const items = await datasetPartsSet(ds, cls, o.int('count', 2), maxBox);
    // The set is written out in the parts.json form, so it can be rerun with --images and --parts.
    const set = await partsSetFiles(items);
    return { images: prepareImages(items, 'image', model), set };
  }
  if (dirArg === undefined || partsArg === undefined) throw new UsageError('give --images DIR and --parts parts.json, or --data');
  let isDir = false;
  try {
    isDir = statSync(dirArg).isDirectory();
  } catch {
    throw new UsageError(`--images ${dirArg}: no such folder`);
  }
  if (!isDir) throw new UsageError(`--images ${dirArg} is not a folder`);
  let text: string;
  try {
    text = readFileSync(partsArg, 'utf8');
  } catch {
    throw new UsageError(`cannot read ${partsArg}: no such file (expected ${PARTS_SCHEMA})`);
  }
  return { images: await loadPartsSet(dirArg, parseParts(text, partsArg), model) };
}

export const correspondCommand: Command = {
  summary: 'correspondence (Table 1): how consistently occluding the same part changes features, vs random regions',
  options: {
    ...MODEL_OPTIONS,
    images: { value: true, help: 'folder of the images named in --parts' },
    parts: { value: true, help: `rectangles per image per part: ${PARTS_SCHEMA}` },
    ...DATA_OPTIONS,
    class: { value: true, help: 'with --data: class (name or index) whose images to use, the part being the object box', default: 0 },
    count: { value: true, help: 'with --data: number of images; the default is the paper\'s', default: 5 },
    'max-box': { value: true, help: 'with --data: skip objects larger than this fraction of the image side', default: 0.5 },
    layers: { value: true, help: "layers (default: the paper's layers 5 and 7, e.g. relu5,relu7)" },
    random: { value: true, help: 'random draws for the random rows', default: 10 },
    seed: { value: true, help: 'seed of the random regions', default: 0 },
    batch: { value: true, help: 'images per engine call', default: 64 },
    out: { value: true, help: 'output folder: correspondence.md, correspondence.json, correspondence.png (and set/ with --data)' },
  },
  async run(o) {
    const dir = o.required('out');
    checkOutputDir(dir);
    const model = modelFrom(o);
    const paper = paperLayerTitles(model, paperLayers57, ['layer 5', 'layer 7']);
    const layers = layersOption(o, model) ?? paper.layers ?? [];
    if (layers.length === 0) throw new UsageError(`model ${model.name}: give --layers (fewer than 5 conv or 2 linear layers to pick the paper's layers from)`);
    const draws = o.int('random', 1);
    const seed = o.int('seed');
    const batch = o.int('batch', 1);
    const { images, set } = await correspondenceImages(o, model);
    const engine = new Engine(model);
    try {
      const result = await correspondence(engine, images, { layers, draws, seed, batch });
      const { files, markdown } = await correspondenceFiles(model, images, result, paper.title);
      writeOutputs(dir, new Map([...(set ?? []), ...files]));
      process.stdout.write(`${markdown}wrote correspondence.md, correspondence.json, correspondence.png${set ? ' and set/' : ''} to ${dir}/\n`);
    } finally {
      await engine.dispose();
    }
  },
};
