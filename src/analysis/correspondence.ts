// Correspondence analysis (Zeiler & Fergus 2014, Sec. 4.2, Table 1): does occluding the same part in different
// images change the representation in the same way?
//
// For image i and an occluded region, ε_i = f(x_i) − f(x̃_i) at layer l (x̃_i: the region filled with the dataset
// mean, 0 input). Δ_l is the Hamming distance between sign(ε_i) and sign(ε_j), as a fraction of the feature length,
// averaged over the n(n−1)/2 image pairs. The paper writes Σ_{i≠j} without saying how H is normalised; its values
// (0.067..0.107) only make sense as such an average of normalised distances (averaging over ordered pairs i≠j gives
// the same number, as H is symmetric). Signs are −1, 0, +1: a unit that the occluder leaves unchanged in both images
// agrees. Lower Δ = the part moves features the same way in every image; random regions of the same size are the
// baseline.
import { join } from 'node:path';
import type { Engine } from '../engine/engine.js';
import { decodeImage, fitImage, imageToInput, type RgbImage } from '../data/image.js';
import type { Dataset } from '../data/dataset.js';
import { Landmarks } from '../model/landmarks.js';
import { findLayer, type Model } from '../model/layers.js';
import { sizeOf, tensor, type Tensor } from '../tensor.js';
import { Rng } from '../util/random.js';
import type { Rect } from '../util/rect.js';


/** Where parts.json's rectangles live: the original image's pixels (mapped through the fit) or the model input's. */
export type Coordinates = 'image' | 'input';

export interface PartsSpec {
  coordinates: Coordinates;
  /** In the file's order; every image has every part. */
  images: { file: string; parts: Record<string, Rect> }[];
  parts: string[];
}

export const PARTS_SCHEMA =
  '{"coordinates": "image" | "input" (optional, default "image"), "images": {"FILE": {"PART": [y0, x0, y1, x1], ...}, ...}}';

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkRect(v: unknown, what: string): Rect {
  if (!Array.isArray(v) || v.length !== 4 || !v.every((n) => Number.isInteger(n) && n >= 0)) {
    throw new Error(`${what} must be [y0, x0, y1, x1] with non-negative integers, got ${JSON.stringify(v)}`);
  }
  const [y0, x0, y1, x1] = v as number[];
  if (!(y1 > y0 && x1 > x0)) throw new Error(`${what} is empty: [${v.join(', ')}] needs y1 > y0 and x1 > x0`);
  return [y0, x0, y1, x1];
}

/** Reads and validates parts.json (schema: PARTS_SCHEMA); every image must list the same parts. */
export function parseParts(text: string, what = 'parts file'): PartsSpec {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new Error(`${what} is not valid JSON: ${(e as Error).message}`);
  }
  if (!isRecord(doc) || !isRecord(doc.images)) throw new Error(`${what} must look like ${PARTS_SCHEMA}`);
  const unknown = Object.keys(doc).filter((k) => k !== 'images' && k !== 'coordinates');
  if (unknown.length) throw new Error(`${what}: unknown key '${unknown[0]}'; expected ${PARTS_SCHEMA}`);
  const coordinates = doc.coordinates ?? 'image';
  if (coordinates !== 'image' && coordinates !== 'input') throw new Error(`${what}: coordinates must be "image" or "input", got ${JSON.stringify(coordinates)}`);
  const entries = Object.entries(doc.images);
  if (entries.length < 2) throw new Error(`${what}: correspondence needs at least 2 images, got ${entries.length}`);
  const images = entries.map(([file, parts]) => {
    if (!isRecord(parts) || Object.keys(parts).length === 0) throw new Error(`${what}: image '${file}' must map part names to rectangles`);
    return { file, parts: Object.fromEntries(Object.entries(parts).map(([p, r]) => [p, checkRect(r, `${what}: ${file} '${p}'`)])) };
  });
  const names = Object.keys(images[0].parts);
  for (const { file, parts } of images) {
    const missing = names.find((p) => !(p in parts)) ?? Object.keys(parts).find((p) => !names.includes(p));
    if (missing !== undefined) throw new Error(`${what}: every image must list the same parts; '${missing}' is in one of ${images[0].file} and ${file} only`);
  }
  return { coordinates, images, parts: names };
}

/**
 * A rectangle in original pixels -> model-input pixels through fitImage's geometry (scale so the short side fits,
 * centre crop), rounded to whole pixels and clipped to the crop. It must lie inside the original image, and some of it
 * inside the crop.
 */
export function mapRect(rect: Rect, image: [number, number], input: [number, number], what = 'rectangle'): Rect {
  const [H, W] = image, [h, w] = input;
  const [y0, x0, y1, x1] = rect;
  if (y1 > H || x1 > W) throw new Error(`${what} [${rect.join(', ')}] lies outside the ${W}x${H} image`);
  // The same arithmetic as fitImage, so that the rectangle lands on the pixels the network sees.
  const scale = Math.max(h / H, w / W);
  const rh = Math.max(h, Math.round(H * scale)), rw = Math.max(w, Math.round(W * scale));
  const top = Math.round((rh - h) / 2), left = Math.round((rw - w) / 2);
  const fy = (y: number) => Math.round((y * rh) / H) - top, fx = (x: number) => Math.round((x * rw) / W) - left;
  const a = fy(y0), b = fx(x0);
  // A part smaller than a pixel after shrinking still covers the pixel it falls in.
  const out: Rect = [Math.max(0, a), Math.max(0, b), Math.min(h, Math.max(fy(y1), a + 1)), Math.min(w, Math.max(fx(x1), b + 1))];
  if (!(out[2] > out[0] && out[3] > out[1])) throw new Error(`${what} [${rect.join(', ')}] falls outside the centre crop the model sees`);
  return out;
}

function checkInside(rect: Rect, size: [number, number], what: string): Rect {
  if (rect[2] > size[0] || rect[3] > size[1]) throw new Error(`${what} [${rect.join(', ')}] lies outside the ${size[1]}x${size[0]} model input`);
  return rect;
}

/** One image prepared for the analysis: its network input and its parts in input pixels. */
export interface CorrespondenceImage {
  name: string;
  input: Tensor;
  parts: Record<string, Rect>;
}

/** Fits each image to the model and places its parts in input pixels. */
export function prepareImages(items: { name: string; image: RgbImage; parts: Record<string, Rect> }[], coordinates: Coordinates, model: Pick<Model, 'input' | 'preprocess'>): CorrespondenceImage[] {
  const [C, H, W] = model.input;
  if (C !== 1 && C !== 3) throw new Error(`model input has ${C} channels; images give 1 or 3`);
  return items.map(({ name, image, parts }) => ({
    name,
    input: imageToInput(fitImage(image, [H, W], C), model.preprocess),
    parts: Object.fromEntries(Object.entries(parts).map(([p, r]) => {
      const what = `${name} '${p}'`;
      return [p, coordinates === 'image' ? mapRect(r, [image.height, image.width], [H, W], what) : checkInside(r, [H, W], what)];
    })),
  }));
}

/** The images of parts.json, read from `dir` (paths relative to it). */
export async function loadPartsSet(dir: string, spec: PartsSpec, model: Pick<Model, 'input' | 'preprocess'>): Promise<CorrespondenceImage[]> {
  const items = await Promise.all(spec.images.map(async ({ file, parts }) => ({ name: file, image: await decodeImage(join(dir, file)), parts })));
  return prepareImages(items, spec.coordinates, model);
}

/**
 * A demo set from a labelled dataset with object boxes (the shapes set): `count` images of one class, the part being
 * the object's box. Objects wider or taller than `maxBox` of the image are skipped, so that random regions of the
 * same size can land mostly off the object. The images are returned too, so the set can be written out and rerun.
 */
export async function datasetPartsSet(ds: Dataset, cls: number, count: number, maxBox = 0.5): Promise<{ name: string; image: RgbImage; parts: Record<string, Rect> }[]> {
  const out: { name: string; image: RgbImage; parts: Record<string, Rect> }[] = [];
  for (let i = 0; i < ds.size && out.length < count; i++) {
    if (ds.label(i) !== cls) continue;
    const item = await ds.item(i);
    if (!item.box) throw new Error(`${ds.name} has no object boxes; give the parts in a parts file`);
    const [y0, x0, y1, x1] = item.box;
    if (y1 - y0 > maxBox * item.image.height || x1 - x0 > maxBox * item.image.width) continue;
    out.push({ name: item.name, image: item.image, parts: { object: item.box } });
  }
  if (out.length < 2) throw new Error(`${ds.name}: fewer than 2 images of class ${ds.classes[cls] ?? cls} with an object box at most ${maxBox} of the image`);
  return out;
}

// ---------------------------------------------------------------- Δ arithmetic

/** The fraction of positions where sign(a) and sign(b) differ (signs −1, 0, +1). */
export function signHamming(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`sign vectors differ in length: ${a.length} vs ${b.length}`);
  if (a.length === 0) throw new Error('sign vectors are empty');
  let differ = 0;
  for (let i = 0; i < a.length; i++) if (Math.sign(a[i]) !== Math.sign(b[i])) differ++;
  return differ / a.length;
}

/** signHamming over the unordered pairs i < j, in the order (0,1), (0,2), ..., (1,2), ... */
export function pairwiseHamming(eps: ArrayLike<number>[]): number[] {
  if (eps.length < 2) throw new Error(`Δ needs at least 2 images, got ${eps.length}`);
  const out: number[] = [];
  for (let i = 0; i < eps.length; i++) for (let j = i + 1; j < eps.length; j++) out.push(signHamming(eps[i], eps[j]));
  return out;
}

export function mean(v: number[]): number {
  return v.reduce((a, b) => a + b, 0) / v.length;
}

/** Population standard deviation (÷ n): a spread, also defined for a single value. */
export function std(v: number[]): number {
  const m = mean(v);
  return Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / v.length);
}

/** Δ: the mean of the pairwise normalised Hamming distances, and their spread over the pairs. */
export function delta(eps: ArrayLike<number>[]): { delta: number; pairStd: number; pairs: number[] } {
  const pairs = pairwiseHamming(eps);
  return { delta: mean(pairs), pairStd: std(pairs), pairs };
}

// ---------------------------------------------------------------- the experiment

export interface CorrespondenceOptions {
  layers: string[];
  /** Random draws per random row (each draw places one region in every image). */
  draws: number;
  seed: number;
  /** Most images per engine call; default 64. */
  batch?: number;
}

export interface LayerDelta {
  /** Part: Δ. Random: the mean of Δ over draws. */
  delta: number;
  /** Spread of the pair distances (pooled over draws for random rows). */
  pairStd: number;
  /** Random rows: Δ of each draw and their spread. */
  draws?: number[];
  drawStd?: number;
}

export interface CorrespondenceRow {
  name: string;
  kind: 'part' | 'random';
  /** Random rows: the parts whose region sizes they copy. */
  sizeOf?: string[];
  /** The occluded rectangle of each image (input pixels); random rows: [draw][image]. */
  rects: Rect[][];
  layers: Record<string, LayerDelta>;
}

export interface CorrespondenceResult {
  images: string[];
  layers: string[];
  draws: number;
  seed: number;
  rows: CorrespondenceRow[];
}

/** The paper's layers 5 and 7: the deepest rectified feature map and the features the classifier reads. */
export function paperLayers57(model: Model): [string, string] {
  const marks = new Landmarks(model);
  return [marks.lastFeatureMap(), marks.classifierInput()];
}

/** Parts with identical region sizes in every image share one random baseline. */
function sizeGroups(images: CorrespondenceImage[], parts: string[]): string[][] {
  const groups = new Map<string, string[]>();
  for (const p of parts) {
    const key = images.map((im) => `${im.parts[p][2] - im.parts[p][0]}x${im.parts[p][3] - im.parts[p][1]}`).join('|');
    groups.set(key, [...(groups.get(key) ?? []), p]);
  }
  return [...groups.values()];
}

function randomRect(rng: Rng, like: Rect, size: [number, number]): Rect {
  const h = like[2] - like[0], w = like[3] - like[1];
  const y = rng.int(size[0] - h + 1), x = rng.int(size[1] - w + 1);
  return [y, x, y + h, x + w];
}

/** The input with a rectangle set to 0 (the dataset mean), written into `out` at `offset`. */
export function occludeInto(input: Float32Array, shape: readonly number[], rect: Rect, out: Float32Array, offset: number): void {
  const [C, H, W] = shape;
  out.set(input, offset);
  for (let c = 0; c < C; c++) {
    for (let y = rect[0]; y < rect[2]; y++) out.fill(0, offset + (c * H + y) * W + rect[1], offset + (c * H + y) * W + rect[3]);
  }
}

/** ε = f(x) − f(occluded x) of one image at each layer, for each rectangle; one engine call per `batch` images. */
async function featureChanges(engine: Engine, input: Tensor, rects: Rect[], layers: string[], batch: number): Promise<Map<string, Float32Array[]>> {
  const shape = engine.model.input;
  const per = sizeOf(shape);
  const eps = new Map<string, Float32Array[]>(layers.map((l) => [l, []]));
  let original: Map<string, Float32Array> | undefined;
  // Slot 0 of the first call is the unoccluded image.
  for (let start = -1; start < rects.length; start += batch) {
    const chunk = rects.slice(Math.max(0, start), start + batch);
    const first = start < 0 ? 1 : 0;
    const images = tensor([chunk.length + first, ...shape]);
    if (first) images.data.set(input.data, 0);
    chunk.forEach((r, k) => occludeInto(input.data, shape, r, images.data, (k + first) * per));
    const { activations } = await engine.forward(images, layers);
    const item = (l: string, i: number) => {
      const t = activations.get(l)!;
      const size = sizeOf(t.shape.slice(1));
      return t.data.subarray(i * size, (i + 1) * size);
    };
    if (!original) original = new Map(layers.map((l) => [l, item(l, 0).slice()]));
    for (const l of layers) {
      const base = original.get(l)!;
      chunk.forEach((_, k) => {
        const f = item(l, k + first);
        eps.get(l)!.push(Float32Array.from(base, (v, u) => v - f[u]));
      });
    }
  }
  return eps;
}

/**
 * Table 1 for a set of images with named parts: one row per part, and random rows (regions of the parts' sizes at
 * seeded uniform positions, `draws` times) as the baseline.
 */
export async function correspondence(engine: Engine, images: CorrespondenceImage[], options: CorrespondenceOptions): Promise<CorrespondenceResult> {
  if (images.length < 2) throw new Error(`correspondence needs at least 2 images, got ${images.length}`);
  if (!(Number.isInteger(options.draws) && options.draws >= 1)) throw new Error(`draws must be a positive integer, got ${options.draws}`);
  for (const l of options.layers) findLayer(engine.model, l);
  const [, H, W] = engine.model.input;
  const parts = Object.keys(images[0].parts);
  for (const im of images) {
    for (const p of parts) if (!im.parts[p]) throw new Error(`image ${im.name} has no part '${p}'`);
  }
  const groups = sizeGroups(images, parts);
  const rng = new Rng(options.seed);
  // rects[row][draw][image]: parts first, then the random rows, drawn in this fixed order for reproducibility.
  const rows: Omit<CorrespondenceRow, 'layers'>[] = [
    ...parts.map((p) => ({ name: p, kind: 'part' as const, rects: [images.map((im) => im.parts[p])] })),
    ...groups.map((g) => ({
      name: groups.length === 1 ? 'random' : `random (size of ${g.join(', ')})`,
      kind: 'random' as const,
      sizeOf: g,
      rects: Array.from({ length: options.draws }, () => images.map((im) => randomRect(rng, im.parts[g[0]], [H, W]))),
    })),
  ];
  // eps[layer][row][draw][image]
  const eps = new Map(options.layers.map((l) => [l, rows.map((r) => r.rects.map(() => new Array<Float32Array>(images.length)))]));
  for (const [i, im] of images.entries()) {
    const slots = rows.flatMap((r, ri) => r.rects.map((d, di) => ({ ri, di, rect: d[i] })));
    const changes = await featureChanges(engine, im.input, slots.map((s) => s.rect), options.layers, options.batch ?? 64);
    for (const l of options.layers) slots.forEach((s, k) => (eps.get(l)![s.ri][s.di][i] = changes.get(l)![k]));
  }
  return {
    images: images.map((im) => im.name),
    layers: [...options.layers],
    draws: options.draws,
    seed: options.seed,
    rows: rows.map((r, ri) => ({
      ...r,
      layers: Object.fromEntries(options.layers.map((l) => {
        const perDraw = eps.get(l)![ri].map((e) => delta(e));
        const d: LayerDelta = { delta: mean(perDraw.map((p) => p.delta)), pairStd: std(perDraw.flatMap((p) => p.pairs)) };
        if (r.kind === 'random') {
          d.draws = perDraw.map((p) => p.delta);
          d.drawStd = std(d.draws);
        }
        return [l, d];
      })),
    })),
  };
}

// ---------------------------------------------------------------- output
