// The files of `convscope topk`: per layer the paged figures (LAYER/page-NN.png) and the projections in their frames
// (LAYER/projections.npy), and index.json describing every entry. The viewer (src/server/viewer.ts) reads them back.
import { datasetIdentity, type DatasetIdentity } from '../data/dataset.js';
import { closeSync, ftruncateSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { FeatureOrder, TopkField, TopkFigureViews, TopkView } from '../analysis/topk-views.js';
import { TOPK_TIE_RULE, type TopkEntry } from '../analysis/topk-heaps.js';
import { slotsPerFeature, type TopkResult } from '../analysis/topk.js';
import { encodePng } from '../render/figure.js';
import { topkPageImage } from '../render/topk.js';
import { decodeNpy, encodeNpy, sizeOf, type Tensor } from '../tensor.js';
import { writeFileAtomic } from '../util/fs.js';
import { compactJson } from '../util/json.js';
import type { Rect } from '../util/rect.js';

/** A rectangle as index.json has always written it: rows [y0, y1), then columns [x0, x1). */
export type IndexRect = [y0: number, y1: number, x0: number, x1: number];

const indexRect = ([y0, x0, y1, x1]: Rect): IndexRect => [y0, y1, x0, x1];

interface IndexField extends Omit<TopkField, 'full' | 'clipped' | 'frame'> {
  full: IndexRect;
  clipped: IndexRect;
  frame: IndexRect;
}

interface IndexEntry extends TopkEntry {
  rank: number;
  name: string;
  field: IndexField;
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
  /** The scanned dataset's identity (absent in folders written before it was recorded). */
  datasetId?: DatasetIdentity;
  layers: {
    layer: string;
    shape: [number, number, number];
    receptiveField: { size: [number, number]; jump: [number, number]; start: [number, number] };
    frame: [number, number];
    npy: string;
    npyShape: number[];
    order: FeatureOrder;
    pages: { file: string; features: number[] }[];
    features: { feature: number; entries: IndexEntry[]; synthetic?: number }[];
    /** With --synthesize: [F, 1, C, H, W], one input per feature maximising its map's mean (its value per feature above). */
    syntheticNpy?: string;
  }[];
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
    const dy = view.field.clipped[0] - view.field.frame[0], dx = view.field.clipped[1] - view.field.frame[1];
    for (let c = 0; c < C; c++) for (let y = 0; y < h; y++) frame.set(view.projection.data.subarray((c * h + y) * w, (c * h + y + 1) * w), (c * fh + dy + y) * fw + dx);
    this.writeFrame(feature, rank, frame);
  }

  /** One whole frame, C x h x w values. */
  writeFrame(feature: number, rank: number, frame: Float32Array): void {
    if (frame.length * 4 !== this.frameBytes) throw new Error(`internal: a frame of ${frame.length} values for ${this.path}`);
    const bytes = new Uint8Array(frame.buffer, frame.byteOffset, frame.byteLength);
    writeSync(this.fd, bytes, 0, bytes.byteLength, this.header + (feature * this.shape[1] + rank) * this.frameBytes);
  }

  close(complete: boolean): void {
    closeSync(this.fd);
    if (complete) renameSync(this.tmp, this.path);
    else rmSync(this.tmp, { force: true });
  }
}

/**
 * One key per line down to the entries; each entry on one line. Entries stand in as NUL-prefixed markers while the
 * rest is laid out: no dataset or file name can contain a NUL.
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
  return compactJson(marked).replace(/"\\u0000(\d+)"/g, (_, i: string) => entries[Number(i)]);
}

export interface TopkWriteOptions {
  /** Shown size in pixels of a frame's long side, reached by whole-number enlargement (default 56). */
  cell?: number;
}

/**
 * Writes the figures, the projections and index.json of a scan's views under outDir, a page at a time as the views
 * are projected, and returns the index. A layer's .npy appears only once all of its pages are done.
 */
export async function writeTopk(figure: TopkFigureViews, outDir: string, options: TopkWriteOptions = {}): Promise<TopkIndex> {
  const { result, settings, order } = figure;
  const index: TopkIndex = {
    model: result.model,
    dataset: result.dataset,
    images: result.images,
    skipped: result.skipped,
    k: result.k,
    perImage: result.perImage,
    tieRule: TOPK_TIE_RULE,
    projection: { rule: settings.rule, lrn: settings.lrn, seedValue: settings.seedValue, display: 'each projection scaled by its own max |value|; zero = mid-grey' },
    datasetId: await datasetIdentity(figure.dataset),
    layers: [],
  };
  for (const layout of figure.layers) {
    const { topk, receptiveField: rf } = layout;
    const npyName = `${topk.layer}/projections.npy`;
    const npyShape: [number, number, number, number, number] = [topk.features.length, slotsPerFeature(result), figure.channels, ...layout.frame];
    const npy = new FramesNpy(join(outDir, npyName), npyShape);
    const layerIndex: TopkIndex['layers'][number] = {
      layer: topk.layer,
      shape: topk.shape,
      receptiveField: { size: rf.size, jump: rf.jump, start: rf.start },
      frame: layout.frame,
      npy: npyName,
      npyShape,
      order,
      pages: [],
      features: topk.features.map((_, feature) => ({ feature, entries: [] })),
    };
    const [C, H, W] = [figure.channels, figure.input[1], figure.input[2]];
    const syntheticNpy = figure.synthesize ? new FramesNpy(join(outDir, `${topk.layer}/synthetic.npy`), [topk.features.length, 1, C, H, W]) : undefined;
    if (syntheticNpy) layerIndex.syntheticNpy = `${topk.layer}/synthetic.npy`;
    let complete = false;
    try {
      for await (const page of figure.pages(layout)) {
        const onPage = layout.pages[page.page];
        page.synthetic?.forEach((s, i) => {
          syntheticNpy!.writeFrame(onPage[i], 0, s.input.data);
          layerIndex.features[onPage[i]].synthetic = s.value;
        });
        onPage.forEach((f, i) => {
          page.views[i].forEach((v, rank) => {
            npy.write(f, rank, v);
            const field = { full: indexRect(v.field.full), clipped: indexRect(v.field.clipped), cut: v.field.cut, frame: indexRect(v.field.frame) };
            layerIndex.features[f].entries.push({ rank, ...v.entry, name: v.name, field, npyIndex: [f, rank] });
          });
        });
        const file = `${topk.layer}/page-${String(page.page + 1).padStart(2, '0')}.png`;
        writeFileAtomic(join(outDir, file), await encodePng(await topkPageImage(figure, page, options.cell)));
        layerIndex.pages.push({ file, features: onPage });
      }
      complete = true;
    } finally {
      npy.close(complete);
      syntheticNpy?.close(complete);
    }
    index.layers.push(layerIndex);
  }
  writeFileAtomic(join(outDir, 'index.json'), indexJson(index));
  return index;
}

export function readTopkIndex(dir: string): TopkIndex {
  return JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as TopkIndex;
}

/** A layer's projections in their frames, [F, k, C, h, w]. */
export function readTopkProjections(dir: string, layer: TopkIndex['layers'][number]): Tensor {
  const t = decodeNpy(readFileSync(join(dir, layer.npy)), layer.npy);
  if (t.shape.length !== 5 || sizeOf(t.shape) !== t.data.length) throw new Error(`${layer.npy} has shape [${t.shape}], expected [F, k, C, h, w]`);
  return t;
}
