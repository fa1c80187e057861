// What a top-k figure shows of each kept activation: its deconvnet projection and the image patch under its receptive
// field, cropped to the image, with the field's display frame; and the features' order and pages.
import { batches } from '../data/batches.js';
import type { Dataset } from '../data/dataset.js';
import { inputToImage, type RgbImage } from '../data/image.js';
import type { Engine } from '../engine/engine.js';
import { findLayer } from '../model/layers.js';
import { unitField, type ReceptiveField } from '../model/shapes.js';
import { batchItem, concatBatch, type Tensor } from '../tensor.js';
import type { OnProgress } from '../util/progress.js';
import type { Rect } from '../util/rect.js';
import { projectUnits, ZF_SETTINGS, type ProjectionSettings, type Unit } from './project.js';
import { synthesize, type SynthesisOptions } from './synthesize.js';
import type { TopkEntry } from './topk-heaps.js';
import { checkCount, type LayerTopk, type TopkResult } from './topk.js';

export interface TopkField {
  /** The receptive field as the network sees it; may extend past the image (into the padding). */
  full: Rect;
  /** The part inside the image: the patch, and where the projection is cropped. */
  clipped: Rect;
  /** Pixels of the field cut off at each border. */
  cut: { top: number; bottom: number; left: number; right: number };
  /**
   * Where a layer's fixed-size display frame sits: the full field when it fits in the image, else the image (on
   * that axis). Same size for every unit of the layer, so that patches line up in a grid.
   */
  frame: Rect;
}

/** The receptive field of unit (y, x) of a layer and its display frame. */
export function topkField(engine: Engine, layer: string, y: number, x: number): TopkField {
  const input = engine.model.input;
  const rows = unitField(engine.info(layer), y, x, input);
  const full: Rect = [rows.full[0], rows.full[2], rows.full[1], rows.full[3]];
  const clipped: Rect = [rows.clipped[0], rows.clipped[2], rows.clipped[1], rows.clipped[3]];
  const axis = (lo: number, hi: number, size: number): [number, number] => (hi - lo <= size ? [lo, hi] : [0, size]);
  const [fy0, fy1] = axis(full[0], full[2], input[1]);
  const [fx0, fx1] = axis(full[1], full[3], input[2]);
  return {
    full,
    clipped,
    cut: { top: clipped[0] - full[0], bottom: full[2] - clipped[2], left: clipped[1] - full[1], right: full[3] - clipped[3] },
    frame: [fy0, fx0, fy1, fx1],
  };
}

export interface TopkView {
  feature: number;
  entry: TopkEntry;
  /** The dataset's name of the image. */
  name: string;
  field: TopkField;
  /** The deconvnet projection cropped to `field.clipped`, [C, h, w]. */
  projection: Tensor;
  /** The input image under `field.clipped` (mean added back), h x w. */
  patch: RgbImage;
}

export interface ProjectOptions {
  settings?: ProjectionSettings;
  /** Units per engine call (default 48); units of one call share the layer. */
  batchUnits?: number;
  onProgress?: OnProgress;
}

function cropTensor(t: Tensor, [y0, x0, y1, x1]: Rect): Tensor {
  const [C, H, W] = t.shape.slice(-3);
  const h = y1 - y0, w = x1 - x0;
  const out = new Float32Array(C * h * w);
  for (let c = 0; c < C; c++) for (let y = 0; y < h; y++) out.set(t.data.subarray((c * H + y0 + y) * W + x0, (c * H + y0 + y) * W + x1), (c * h + y) * w);
  return { shape: [C, h, w], data: out };
}

function cropImage(img: RgbImage, [y0, x0, y1, x1]: Rect): RgbImage {
  const C = img.channels, w = x1 - x0, h = y1 - y0;
  const data = new Uint8Array(w * h * C);
  for (let y = 0; y < h; y++) data.set(img.data.subarray(((y0 + y) * img.width + x0) * C, ((y0 + y) * img.width + x1) * C), y * w * C);
  return { width: w, height: h, channels: C, data };
}

/**
 * The activation a projection recomputed must match the scanned one; a mismatch means the item changed. The scan and
 * the projection run different graphs (batch sizes, fused ops), so they agree to float32 rounding of the layer's
 * scale, not of each value: a weak unit of a deep residual layer differs by more than 1e-4 of itself.
 */
const VALUE_TOLERANCE = 1e-4;

/**
 * Deconvnet projections and patches of kept units of one layer, many units per engine call. The images are read
 * again (in index order, each once), so memory is about `batchUnits` images whatever the number of units.
 */
export async function projectEntries(
  engine: Engine,
  ds: Dataset,
  layer: string,
  units: { feature: number; entry: TopkEntry }[],
  options: ProjectOptions = {},
): Promise<TopkView[]> {
  const settings = options.settings ?? ZF_SETTINGS;
  const batchUnits = options.batchUnits ?? 48;
  checkCount('batchUnits', batchUnits);
  findLayer(engine.model, layer);
  const model = engine.model;
  const order = units.map((_, i) => i).sort((a, b) => units[a].entry.image - units[b].entry.image || a - b);
  const imageOrder = [...new Set(order.map((i) => units[i].entry.image))];
  const views = new Array<TopkView>(units.length);
  const queue: { unit: number; input: Tensor; image: RgbImage }[] = [];
  let done = 0;
  const scale = units.reduce((m, u) => Math.max(m, Math.abs(u.entry.value)), 1);

  const flush = async (n: number): Promise<void> => {
    const chunk = queue.splice(0, n);
    const inputs = concatBatch(chunk.map((q) => q.input));
    const seeds: Unit[] = chunk.map((q) => ({ feature: units[q.unit].feature, y: units[q.unit].entry.y, x: units[q.unit].entry.x }));
    const projections = await projectUnits(engine, inputs, layer, seeds, settings);
    projections.forEach((p, j) => {
      const { feature, entry } = units[chunk[j].unit];
      if (Math.abs(p.value - entry.value) > VALUE_TOLERANCE * scale) {
        throw new Error(`${layer} feature ${feature} of image ${entry.image} is ${p.value} now but was ${entry.value} in the scan: did the dataset change?`);
      }
      const field = topkField(engine, layer, entry.y, entry.x);
      views[chunk[j].unit] = {
        feature,
        entry,
        name: ds.itemName(entry.image),
        field,
        projection: cropTensor(p.projection, field.clipped),
        patch: cropImage(chunk[j].image, field.clipped),
      };
    });
    done += chunk.length;
    options.onProgress?.(done, units.length);
  };

  let next = 0;
  const stream = batches(ds, { input: model.input, preprocess: model.preprocess, batchSize: batchUnits, indices: imageOrder });
  for await (const batch of stream) {
    if (batch.skipped.length > 0) throw new Error(`cannot read ${batch.skipped[0].name} again: ${batch.skipped[0].reason}`);
    const at = new Map(batch.indices.map((img, j) => [img, j]));
    // Units come sorted by image, so an image's units are consecutive and its picture is made once.
    let last: { index: number; input: Tensor; image: RgbImage } | undefined;
    while (next < order.length && at.has(units[order[next]].entry.image)) {
      const index = units[order[next]].entry.image;
      if (last?.index !== index) {
        const input = batchItem(batch.input, at.get(index)!);
        last = { index, input, image: inputToImage(input, model.preprocess) };
      }
      queue.push({ unit: order[next], input: last.input, image: last.image });
      next++;
    }
    while (queue.length >= batchUnits) await flush(batchUnits);
  }
  if (stream.skipped.length > 0) throw new Error(`cannot read ${stream.skipped[0].name} again: ${stream.skipped[0].reason}`);
  while (queue.length > 0) await flush(batchUnits);
  return views;
}

/** The figure's material for one feature map of a finished scan: for a report or a viewer. */
export async function featureViews(engine: Engine, ds: Dataset, topk: LayerTopk, feature: number, options: ProjectOptions = {}): Promise<TopkView[]> {
  const entries = topk.features[feature];
  if (!entries) throw new Error(`feature ${feature} is out of range for layer ${topk.layer}, which has ${topk.features.length} feature maps`);
  return projectEntries(engine, ds, topk.layer, entries.map((entry) => ({ feature, entry })), options);
}

// ---------------------------------------------------------------- a whole scan, page by page

export type FeatureOrder = 'index' | 'max';

/** Features in display order: by index, or by their strongest activation (then by index). */
export function featureOrder(topk: LayerTopk, order: FeatureOrder): number[] {
  const idx = topk.features.map((_, f) => f);
  if (order === 'index') return idx;
  const best = (f: number) => topk.features[f][0]?.value ?? -Infinity;
  return idx.sort((a, b) => best(b) - best(a) || a - b);
}

export interface TopkLayerLayout {
  topk: LayerTopk;
  receptiveField: ReceptiveField;
  /** [height, width] of the layer's display frame, the same for every unit. */
  frame: [number, number];
  /** The features in display order, cut into pages. */
  pages: number[][];
}

export interface TopkPageViews {
  layout: TopkLayerLayout;
  /** Counted from 0 within the layer. */
  page: number;
  /** Per feature of `layout.pages[page]`, its views best first. */
  views: TopkView[][];
  /** With `synthesize`: per feature of the page, its synthetic input [1, C, H, W], as an image, and the objective it reached. */
  synthetic?: { input: Tensor; image: RgbImage; value: number }[];
}

export interface TopkFigureOptions extends ProjectOptions {
  /** Features per page (default 16). */
  perPage?: number;
  order?: FeatureOrder;
  /** Also synthesise an image per feature that maximises its map (activation maximisation), a page at a time. */
  synthesize?: SynthesisOptions;
  /**
   * How a page's units are projected (default: here, with `projectEntries`); `topk --queue` projects on workers. It
   * must give what `projectEntries(engine, ds, layer, units, { settings, batchUnits })` gives, in the same order.
   */
  project?: (layer: string, units: { feature: number; entry: TopkEntry }[]) => Promise<TopkView[]>;
}

/** Everything a Fig. 2 figure of a finished scan shows; the projections are made page by page as they are read. */
export interface TopkFigureViews {
  result: TopkResult;
  settings: ProjectionSettings;
  order: FeatureOrder;
  /** Channels of every projection: the model's input channels. */
  channels: number;
  /** The model's input [C, H, W]. */
  input: [number, number, number];
  /** Whether the pages carry synthetic images. */
  synthesize: boolean;
  /** The scanned dataset (its identity goes into the index, so a viewer can refuse other data). */
  dataset: Dataset;
  layers: TopkLayerLayout[];
  /** A layer's views a page at a time, so that memory is one page; progress counts units over all layers. */
  pages(layout: TopkLayerLayout): AsyncGenerator<TopkPageViews>;
}

const unitCount = (topk: LayerTopk) => topk.features.reduce((a, es) => a + es.length, 0);

export function topkFigureViews(engine: Engine, ds: Dataset, result: TopkResult, options: TopkFigureOptions = {}): TopkFigureViews {
  const perPage = options.perPage ?? 16;
  const order = options.order ?? 'index';
  if (!(Number.isInteger(perPage) && perPage >= 1)) throw new Error(`perPage must be an integer >= 1, got ${perPage}`);
  const settings = options.settings ?? ZF_SETTINGS;
  const totalUnits = result.layers.reduce((a, l) => a + unitCount(l), 0);
  const layers = result.layers.map((topk): TopkLayerLayout => {
    const [y0, x0, y1, x1] = topkField(engine, topk.layer, 0, 0).frame;
    const features = featureOrder(topk, order);
    return {
      topk,
      receptiveField: engine.info(topk.layer).rf,
      frame: [y1 - y0, x1 - x0],
      pages: Array.from({ length: Math.ceil(features.length / perPage) }, (_, p) => features.slice(p * perPage, (p + 1) * perPage)),
    };
  });
  async function* pages(layout: TopkLayerLayout): AsyncGenerator<TopkPageViews> {
    let unitsBefore = 0;
    for (const l of result.layers) {
      if (l === layout.topk) break;
      unitsBefore += unitCount(l);
    }
    for (const [page, onPage] of layout.pages.entries()) {
      const units = onPage.flatMap((feature) => layout.topk.features[feature].map((entry) => ({ feature, entry })));
      const views = options.project
        ? await options.project(layout.topk.layer, units)
        : await projectEntries(engine, ds, layout.topk.layer, units, { ...options, onProgress: (done) => options.onProgress?.(unitsBefore + done, totalUnits) });
      if (options.project) options.onProgress?.(unitsBefore + units.length, totalUnits);
      unitsBefore += units.length;
      const byFeature = new Map<number, TopkView[]>(onPage.map((f) => [f, []]));
      for (const v of views) byFeature.get(v.feature)!.push(v);
      const synthetic = options.synthesize && (await synthesize(engine, layout.topk.layer, onPage, options.synthesize));
      yield {
        layout,
        page,
        views: onPage.map((f) => byFeature.get(f)!),
        ...(synthetic
          ? {
              synthetic: onPage.map((_, i) => {
                const input = batchItem(synthetic.images, i);
                return { input, image: inputToImage(input, engine.model.preprocess), value: synthetic.final[i] };
              }),
            }
          : {}),
      };
    }
    // The layer is done: its projection graphs would otherwise stay compiled, layer after layer, to the end.
    if (!options.project) await engine.releaseProjections(layout.topk.layer);
  }
  const input = engine.model.input as [number, number, number];
  return { result, settings, order, channels: input[0], input, synthesize: options.synthesize !== undefined, dataset: ds, layers, pages };
}
