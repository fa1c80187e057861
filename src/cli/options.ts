// The options several commands share (model, input, data), and how they become a Model, an input tensor, a Dataset.
import type { Dataset, Split } from '../data/dataset.js';
import { openFilteredDataset } from '../data/filter.js';
import { openTrainAndHeldOut, openValidation, type TrainAndHeldOut } from '../data/held-out.js';
import { loadInput } from '../data/image.js';
import type { Model } from '../model/layers.js';
import { loadModel, withPreprocess } from '../model/load.js';
import { readClassNames } from '../model/labels.js';
import { resolveLayer } from '../model/names.js';
import { inferShapes } from '../model/shapes.js';
import { describePreprocess, givenPreprocess, PRESET_NAMES, PREPROCESS_PRESETS } from '../model/preprocess.js';
import { ZOO_NAMES } from '../model/zoo.js';
import { assertFinite, readNpy, type Tensor } from '../tensor.js';
import { UsageError, type Options, type OptionSpec } from './args.js';
import { notice } from './notices.js';

export const MODEL_OPTIONS: Record<string, OptionSpec> = {
  model: { value: true, help: `zoo name (${ZOO_NAMES.join(', ')}), .safetensors or .onnx file` },
  'model-seed': { value: true, help: "seed of a zoo model's initial weights", default: 0 },
  preprocess: { value: true, help: `${PRESET_NAMES.map((n) => `${n}: ${PREPROCESS_PRESETS[n].about}`).join('; ')} (default: the model's; an ONNX file without convscope's metadata is assumed caffe)` },
  mean: { value: true, help: 'per-channel mean to subtract, 0..255 units (123.68,116.78,103.94) or 0..1 units (0.485,0.456,0.406); overrides --preprocess' },
  std: { value: true, help: 'per-channel divisor in the units of --mean (1 is the paper\'s raw pixels); overrides --preprocess' },
  labels: { value: true, help: 'class names: a text file with one per line, a JSON list, or a JSON object from index to name (imagenet_class_index.json)' },
};

export function modelFrom(o: Options): Model {
  const path = o.required('model');
  const model = loadModel(path, { seed: o.int('model-seed') });
  const channels = model.input[0];
  const typed = { mean: o.numbers('mean'), std: o.numbers('std') };
  for (const key of ['mean', 'std'] as const) {
    const v = typed[key];
    if (v && v.length !== channels) throw new UsageError(`--${key} needs ${channels} values for this ${channels}-channel model, got ${v.length}`);
  }
  const preset = o.has('preprocess') ? o.choice('preprocess', PRESET_NAMES) : undefined;
  const given = givenPreprocess(channels, preset, typed);
  for (const note of given.notes) notice(note);
  withPreprocess(model, given);
  const labels = o.string('labels');
  if (labels !== undefined) model.classes = readClassNames(labels, inferShapes(model).at(-1)!.outShape[0]);
  // An ONNX file usually carries no preprocessing: say what the model is fed, so a wrong guess is seen at once.
  if (path.toLowerCase().endsWith('.onnx')) {
    const source = typed.mean || typed.std ? 'from --mean/--std' : preset ? `from --preprocess ${preset}` : model.preprocess.assumed ? 'assumed' : "from the file's convscope metadata";
    notice(describePreprocess(model.preprocess, source));
  }
  return model;
}

/** A class as an index or, where the names are known, a name. */
export function classIndex(text: string, names: string[] | undefined, classes: number): number {
  const byName = names?.indexOf(text) ?? -1;
  if (byName >= 0) return byName;
  const n = Number(text);
  if (text.trim() !== '' && Number.isInteger(n) && n >= 0 && n < classes) return n;
  const known = names ? `: ${names.length > 20 ? `${names.slice(0, 20).join(', ')}, ...` : names.join(', ')}` : '';
  throw new UsageError(`unknown class '${text}'; give an index 0..${classes - 1} or a class name${known}`);
}

/** --target: the class to explain, by index or by a name from the model's classes (or --labels). */
export function targetOption(o: Options, model: Model): number | undefined {
  const v = o.string('target')?.trim();
  if (v === undefined) return undefined;
  const classes = inferShapes(model).at(-1)!.outShape[0];
  if (/^\d+$/.test(v) && Number(v) >= classes) throw new UsageError(`target class ${v} is out of range: model ${model.name} has ${classes} classes (0..${classes - 1})`);
  return classIndex(v, model.classes, classes);
}

/** A layer option as the user typed it (a layer, a module or an ONNX name), resolved against the model. */
export function layerOption(o: Options, model: Model, key = 'layer'): string | undefined {
  const v = o.string(key);
  return v === undefined ? undefined : resolveLayer(model, v.trim());
}

/** A comma-separated list of layers, each resolved as layerOption does; undefined when the option is absent. */
export function layersOption(o: Options, model: Model, key = 'layers'): string[] | undefined {
  const v = o.string(key);
  if (v === undefined) return undefined;
  const names = v.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  if (names.length === 0) throw new UsageError(`--${key} needs at least one layer name`);
  return names.map((n) => resolveLayer(model, n));
}

export const INPUT_OPTIONS: Record<string, OptionSpec> = {
  image: { value: true, help: 'input image (JPEG, PNG, WebP): short side resized, centre-cropped, mean subtracted' },
  'input-npy': { value: true, help: 'a preprocessed NCHW float32 tensor, fed as it is' },
};

export async function inputFrom(o: Options, model: Model): Promise<Tensor> {
  const image = o.string('image');
  const npy = o.string('input-npy');
  if ((image === undefined) === (npy === undefined)) throw new UsageError('give exactly one of --image and --input-npy');
  if (image !== undefined) return loadInput(image, model);
  const t = readNpy(npy!);
  assertFinite(t.data, npy!);
  const shape = t.shape.length === 3 ? [1, ...t.shape] : t.shape;
  const want = [1, ...model.input];
  if (shape.join(',') !== want.join(',')) throw new Error(`${npy} has shape [${t.shape}], model ${model.name} takes [${want}]`);
  return { shape, data: t.data };
}

export const DATA_OPTIONS: Record<string, OptionSpec> = {
  data: { value: true, help: "dataset: 'shapes' (built-in, e.g. shapes:count=5000), 'fashion-mnist', a folder of images (class sub-folders give labels; train/val/test sub-folders are its splits, else it is one split: every image), or IDX files; ':classes=0-5' keeps some classes" },
  'data-path': { value: true, help: "where a named dataset's files are (default for fashion-mnist: /usr/share/datasets/fashion-mnist)" },
};

const dataPathOf = (o: Options) => (o.string('data-path') ? { data: o.string('data-path') } : {});

export async function datasetFrom(o: Options, split: Split, key = 'data') {
  return openFilteredDataset(o.required(key), { split, ...dataPathOf(o) });
}

/** The training and held-out sets of a command that fits something; the cut of a one-split folder is printed. */
export async function trainAndHeldOut(o: Options, key = 'data'): Promise<TrainAndHeldOut> {
  const sets = await openTrainAndHeldOut(o.required(key), dataPathOf(o));
  if (sets.note) notice(sets.note);
  return sets;
}

/** The held-out split used for validation: `val` where the dataset has one, else `test` (IDX sets have no val). */
export function validationSplit(o: Options): Promise<{ ds: Dataset; split: 'val' | 'test' }> {
  return openValidation(o.required('data'), dataPathOf(o));
}

export async function validationSet(o: Options) {
  return (await validationSplit(o)).ds;
}

/** Indices from `all` or a list such as `0-7,12` (in the order given), each below `count`. */
export function indexList(text: string, count: number, what: string): number[] {
  if (text.trim() === 'all') return Array.from({ length: count }, (_, i) => i);
  const out: number[] = [];
  for (const part of text.split(',').map((s) => s.trim())) {
    const range = /^(\d+)-(\d+)$/.exec(part);
    if (range && Number(range[1]) <= Number(range[2])) for (let i = Number(range[1]); i <= Number(range[2]); i++) out.push(i);
    else if (/^\d+$/.test(part)) out.push(Number(part));
    else throw new UsageError(`${what}: '${part}' is not an index or a range a-b`);
  }
  for (const i of out) if (i >= count) throw new UsageError(`${what}: ${i} is out of range 0..${count - 1}`);
  if (new Set(out).size !== out.length) throw new UsageError(`${what} lists an index twice: ${text}`);
  return out;
}
