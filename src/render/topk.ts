// The Fig. 2 layout of a top-k scan: per layer, for each feature map a grid of its top activations' deconvnet
// projections beside a grid of the image patches under their receptive fields; paged PNGs, the projections as one
// .npy per layer, and index.json describing every entry.
import { closeSync, ftruncateSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { blankImage, type RgbImage } from '../data/image.js';
import type { Dataset } from '../data/dataset.js';
import type { Engine } from '../engine/engine.js';
import { projectEntries, type LayerTopk, type ProjectOptions, type Rect, type TopkEntry, type TopkField, type TopkResult, type TopkView, topkField } from '../analysis/topk.js';
import { ZF_SETTINGS } from '../analysis/project.js';
import { encodeNpy, sizeOf } from '../tensor.js';
import { writeFileAtomic } from '../util/fs.js';
import type { Rgb } from './colormap.js';
import { blit, encodePng, grid, hstack, label, projectionToImage, upscale, vstack } from './figure.js';

export type FeatureOrder = 'index' | 'max';

export interface TopkFigureOptions {
  /** Feature blocks per PNG (default 16). */
  perPage?: number;
  order?: FeatureOrder;
  /** Shown size in pixels of a frame's long side, reached by whole-number enlargement (default 56). */
  cell?: number;
}

export interface TopkWriteOptions extends TopkFigureOptions, ProjectOptions {}

/** Where the frame reaches past the image or the receptive field: a colour no projection (grey) or legend uses. */
const OUTSIDE: Rgb = [200, 218, 240];
const WHITE: Rgb = [255, 255, 255];
const BLOCKS_PER_ROW = 4;

export const TOPK_TIE_RULE = 'larger value first, then lower dataset index, then lower position (row-major: y, then x)';

/** Features in display order: by index, or by their strongest activation (then by index). */
export function featureOrder(topk: LayerTopk, order: FeatureOrder): number[] {
  const idx = topk.features.map((_, f) => f);
  if (order === 'index') return idx;
  const best = (f: number) => topk.features[f][0]?.value ?? -Infinity;
  return idx.sort((a, b) => best(b) - best(a) || a - b);
}

const rectSize = (r: Rect): [number, number] => [r[1] - r[0], r[3] - r[2]];

/** A layer's display frame size: the same for every unit of the layer. */
function frameSize(engine: Engine, topk: LayerTopk): [number, number] {
  return rectSize(topkField(engine, topk.layer, 0, 0).frame);
}

/** Content of the clipped field placed in its frame; the rest of the frame painted OUTSIDE. */
function framed(content: RgbImage, field: TopkField): RgbImage {
  const [fh, fw] = rectSize(field.frame);
  const out = blankImage(fw, fh, 3);
  for (let i = 0; i < fw * fh; i++) out.data.set(OUTSIDE, 3 * i);
  blit(out, content, field.clipped[0] - field.frame[0], field.clipped[2] - field.frame[2]);
  return out;
}

const fmt = (v: number) => (Math.abs(v) >= 1000 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(2) : v.toPrecision(3));

/** One feature's block: k projections in a grid, the k patches in a grid beside it, a caption above. */
export async function featureBlock(views: TopkView[], feature: number, k: number, frame: [number, number], factor: number): Promise<RgbImage> {
  const cols = Math.ceil(Math.sqrt(k));
  const empty = upscale(blankImage(frame[1], frame[0], 3, 255), factor);
  const cells = (make: (v: TopkView) => RgbImage) =>
    Array.from({ length: k }, (_, i) => (views[i] ? upscale(framed(make(views[i]), views[i].field), factor) : empty));
  const projections = grid(cells((v) => projectionToImage(v.projection)), cols, { gap: 2, background: WHITE });
  const patches = grid(cells((v) => v.patch), cols, { gap: 2, background: WHITE });
  const best = views[0]?.entry.value;
  const caption = best === undefined ? `#${feature}  no activations` : best > 0 ? `#${feature}  max ${fmt(best)}` : `#${feature}  inactive (max ${fmt(best)})`;
  return label(hstack([projections, patches], { gap: 6, background: WHITE }), caption, { position: 'top', fontSize: 12, align: 'left' });
}

export interface PageContext {
  model: string;
  dataset: string;
  images: number;
  k: number;
  perImage: number;
  /** The layer's receptive field side(s) in input pixels. */
  rf: [number, number];
  order: FeatureOrder;
  page: number;
  pages: number;
  features: number;
}

/** Blocks in rows of four, a title above and the legend below. */
export async function topkPage(layer: string, blocks: RgbImage[], firstLast: [number, number], ctx: PageContext): Promise<RgbImage> {
  const rows: RgbImage[] = [];
  for (let i = 0; i < blocks.length; i += BLOCKS_PER_ROW) rows.push(hstack(blocks.slice(i, i + BLOCKS_PER_ROW), { gap: 14, background: WHITE }));
  let page = vstack(rows, { gap: 10, background: WHITE });
  const orderText = ctx.order === 'index' ? 'by index' : 'by max activation';
  const title = `${ctx.model} ${layer}: features ${firstLast[0] + 1}-${firstLast[1]} of ${ctx.features} (${orderText}), page ${ctx.page}/${ctx.pages}`;
  page = await label(page, title, { position: 'top', fontSize: 16, align: 'left' });
  const rf = ctx.rf[0] === ctx.rf[1] ? `${ctx.rf[0]}` : `${ctx.rf[0]}x${ctx.rf[1]}`;
  const legend =
    `Each block: one feature map's top ${ctx.k} activations over ${ctx.images} images of ${ctx.dataset} ` +
    `(at most ${ctx.perImage} per image), best first, row by row. Left: deconvnet projections, each scaled by its own max |value|, ` +
    `zero = mid-grey. Right: the image patches under the receptive field (${rf} px). Pale blue: outside the image or the receptive field.`;
  page = await label(page, legend, { position: 'bottom', fontSize: 12, align: 'left', color: [70, 70, 70] });
  const out = blankImage(page.width + 16, page.height + 16, 3, 255);
  blit(out, page, 8, 8);
  return out;
}

/** A [F, k, C, h, w] float32 .npy written frame by frame through a temporary file, renamed when complete. */
class FramesNpy {
  private readonly fd: number;
  private readonly tmp: string;
  private readonly header: number;
  private readonly frameBytes: number;

  constructor(
    readonly path: string,
    readonly shape: [number, number, number, number, number],
  ) {
    mkdirSync(dirname(path), { recursive: true });
    this.tmp = `${path}.tmp-${process.pid}`;
    const head = encodeNpy({ shape, data: new Float32Array(0) });
    this.header = head.length;
    this.frameBytes = 4 * sizeOf(shape.slice(2));
    this.fd = openSync(this.tmp, 'w');
    writeSync(this.fd, head, 0, head.length, 0);
    // Entries a feature does not have (fewer than k candidates) stay zero.
    ftruncateSync(this.fd, this.header + shape[0] * shape[1] * this.frameBytes);
  }

  /** The projection of a view in its frame, zero outside the clipped field. */
  write(feature: number, rank: number, view: TopkView): void {
    const [, , C, fh, fw] = this.shape;
    const frame = new Float32Array(C * fh * fw);
    const [h, w] = [view.projection.shape[1], view.projection.shape[2]];
    const dy = view.field.clipped[0] - view.field.frame[0], dx = view.field.clipped[2] - view.field.frame[2];
    for (let c = 0; c < C; c++) for (let y = 0; y < h; y++) frame.set(view.projection.data.subarray((c * h + y) * w, (c * h + y + 1) * w), (c * fh + dy + y) * fw + dx);
    writeSync(this.fd, new Uint8Array(frame.buffer), 0, frame.byteLength, this.header + (feature * this.shape[1] + rank) * this.frameBytes);
  }

  close(complete: boolean): void {
    closeSync(this.fd);
    if (complete) renameSync(this.tmp, this.path);
    else rmSync(this.tmp, { force: true });
  }
}

interface IndexEntry extends TopkEntry {
  rank: number;
  name: string;
  field: TopkField;
  /** [feature, rank] in the layer's projections.npy. */
  npyIndex: [number, number];
}

export interface TopkIndex {
  model: string;
  dataset: string;
  images: number;
  skipped: TopkResult['skipped'];
  k: number;
  perImage: number;
  tieRule: string;
  projection: { rule: string; lrn: string; seedValue: string; display: string };
  layers: {
    layer: string;
    shape: [number, number, number];
    receptiveField: { size: [number, number]; jump: [number, number]; start: [number, number] };
    frame: [number, number];
    npy: string;
    npyShape: number[];
    order: FeatureOrder;
    pages: { file: string; features: number[] }[];
    features: { feature: number; entries: IndexEntry[] }[];
  }[];
}

/**
 * One key per line down to the entries; each entry and each array of numbers on one line. Entries stand in as
 * NUL-prefixed markers while the rest is indented: no dataset or file name can contain a NUL.
 */
function indexJson(index: TopkIndex): string {
  const entries: string[] = [];
  const marked = {
    ...index,
    layers: index.layers.map((l) => ({
      ...l,
      features: l.features.map((f) => ({ ...f, entries: f.entries.map((e) => `\u0000${entries.push(JSON.stringify(e)) - 1}`) })),
    })),
  };
  const text = JSON.stringify(marked, null, 1)
    .replace(/\[[-\d.e+,\s]*\]/g, (a) => a.replace(/\s+/g, ''))
    .replace(/"\\u0000(\d+)"/g, (_, i: string) => entries[Number(i)]);
  return `${text}\n`;
}

/**
 * Projects every kept entry (a page of features at a time, so memory is one page) and writes the figures, the
 * projections and index.json under outDir. Returns the index.
 */
export async function writeTopk(engine: Engine, ds: Dataset, result: TopkResult, outDir: string, options: TopkWriteOptions = {}): Promise<TopkIndex> {
  const perPage = options.perPage ?? 16;
  const order = options.order ?? 'index';
  if (!(Number.isInteger(perPage) && perPage >= 1)) throw new Error(`perPage must be an integer >= 1, got ${perPage}`);
  const settings = options.settings ?? ZF_SETTINGS;
  const totalUnits = result.layers.reduce((a, l) => a + l.features.reduce((b, es) => b + es.length, 0), 0);
  let unitsBefore = 0;
  const index: TopkIndex = {
    model: result.model,
    dataset: result.dataset,
    images: result.images,
    skipped: result.skipped,
    k: result.k,
    perImage: result.perImage,
    tieRule: TOPK_TIE_RULE,
    projection: { rule: settings.rule, lrn: settings.lrn, seedValue: settings.seedValue, display: 'each projection scaled by its own max |value|; zero = mid-grey' },
    layers: [],
  };
  for (const topk of result.layers) {
    const info = engine.info(topk.layer);
    const frame = frameSize(engine, topk);
    const factor = Math.max(1, Math.round((options.cell ?? 56) / Math.max(...frame)));
    const features = featureOrder(topk, order);
    const pageCount = Math.ceil(features.length / perPage);
    const npyName = `${topk.layer}/projections.npy`;
    const npyShape: [number, number, number, number, number] = [topk.features.length, result.k, engine.model.input[0], frame[0], frame[1]];
    const npy = new FramesNpy(join(outDir, npyName), npyShape);
    const layerIndex: TopkIndex['layers'][number] = {
      layer: topk.layer,
      shape: topk.shape,
      receptiveField: { size: info.rf.size, jump: info.rf.jump, start: info.rf.start },
      frame,
      npy: npyName,
      npyShape,
      order,
      pages: [],
      features: topk.features.map((_, feature) => ({ feature, entries: [] })),
    };
    let complete = false;
    try {
      for (let p = 0; p < pageCount; p++) {
        const onPage = features.slice(p * perPage, (p + 1) * perPage);
        const units = onPage.flatMap((feature) => topk.features[feature].map((entry) => ({ feature, entry })));
        const views = await projectEntries(engine, ds, topk.layer, units, {
          ...options,
          onProgress: (done) => options.onProgress?.(unitsBefore + done, totalUnits),
        });
        unitsBefore += units.length;
        const byFeature = new Map<number, TopkView[]>(onPage.map((f) => [f, []]));
        for (const v of views) byFeature.get(v.feature)!.push(v);
        const blocks: RgbImage[] = [];
        for (const f of onPage) {
          const vs = byFeature.get(f)!;
          vs.forEach((v, rank) => {
            npy.write(f, rank, v);
            layerIndex.features[f].entries.push({ rank, ...v.entry, name: v.name, field: v.field, npyIndex: [f, rank] });
          });
          blocks.push(await featureBlock(vs, f, result.k, frame, factor));
        }
        const file = `${topk.layer}/page-${String(p + 1).padStart(2, '0')}.png`;
        const ctx: PageContext = {
          model: result.model, dataset: result.dataset, images: result.images, k: result.k, perImage: result.perImage,
          rf: info.rf.size, order, page: p + 1, pages: pageCount, features: features.length,
        };
        const img = await topkPage(topk.layer, blocks, [p * perPage, p * perPage + onPage.length], ctx);
        writeFileAtomic(join(outDir, file), await encodePng(img));
        layerIndex.pages.push({ file, features: onPage });
      }
      complete = true;
    } finally {
      npy.close(complete);
    }
    index.layers.push(layerIndex);
  }
  writeFileAtomic(join(outDir, 'index.json'), indexJson(index));
  return index;
}
