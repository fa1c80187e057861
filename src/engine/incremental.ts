// Incremental inference for occlusion (the idea of Krypton, Nakandala et al., SIGMOD 2019): an occluder changes
// only a box of each layer's output, so each occluded input recomputes just that box, from crops of the cached
// unoccluded maps with the previous layer's new box pasted in. Once the box covers most of a map (and always at
// flatten/linear), the rest of the network runs in full on the patched map. The result equals full recomputation up
// to float rounding: every value the occluder can reach is recomputed, padding stays where the image border is.
import ort from 'onnxruntime-node';
import { GraphBuilder } from '../onnx/builder.js';
import type { Layer, Model, Pair } from '../model/layers.js';
import { IMAGE } from '../model/graph.js';
import { opOf } from '../model/ops/index.js';
import type { BoxWindow as Window } from '../model/ops/types.js';
import type { LayerInfo } from '../model/shapes.js';
import { sizeOf, type Tensor } from '../tensor.js';
import { DataType } from '../onnx/proto.js';
import { rectHeight, rectWidth, type Rect } from '../util/rect.js';
import { activationName, emitForward } from './compile.js';
import { runEngineGraph, type Engine } from './engine.js';
import { initializerWeights } from './graphs.js';

/**
 * A run of layers computed on boxes: a window layer (or a per-position merge of several maps, such as a residual Add)
 * and the per-position layers after it that read only the layer before, run on crops of its inputs.
 */
export interface Segment {
  from: number;
  to: number;
  /** The first layer's window; a merge's is the 1x1 identity window. */
  window: Window;
  /** Producer indices of the first layer's inputs (-1 for the image). */
  inputs: number[];
  /** [C, H, W] of each input map, and of the last layer's output. */
  inShapes: [number, number, number][];
  outShape: [number, number, number];
  /** Layers of the run whose boxes a later layer, or the full tail, reads (the last one always). */
  exposed: number[];
  /** The output box computed per occluded input: the largest box any position changes, the same for all. */
  size: Pair;
  /** Input crop that the box needs: (size - 1) * stride + kernel, in padded input coordinates. */
  crop: Pair;
  /** The padded input map that every window of the layer reads: (out - 1) * stride + kernel. */
  padded: Pair;
  /** Per position, the top-left (y, x) of its output box, shifted inside the map where the box would stick out. */
  origins: Int32Array;
  /** Share of the layer's output that the box covers. */
  fraction: number;
}

export interface IncrementalPlan {
  /** The occluder boxes on the input, one per position. */
  boxes: Rect[];
  segments: Segment[];
  /** First layer run in full (it and every later layer); model.layers.length when every layer runs on boxes. */
  tailFrom: number;
  /** Layers before tailFrom (or -1, the image) that the full tail reads, patched maps built from their boxes. */
  tailInputs: number[];
  /** FLOPs per occluded input: full recomputation and what the plan computes. */
  flops: { full: number; incremental: number };
}

export interface PlanOptions {
  /**
   * Run in full from the first window layer whose box covers at least this share of its output map. Cropping costs
   * copies and small-map inefficiency, which stop paying when the box is nearly the whole map.
   */
  fullFraction?: number;
}

export const DEFAULT_FULL_FRACTION = 0.75;

const IDENTITY: Window = { kernel: [1, 1], stride: [1, 1], padding: [0, 0], padValue: 0 };

/** How a layer can run on boxes (the op table's box role), without the crop-form layer. */
function boxRole(layer: Layer): Window | 'per-position' | 'full' {
  const role = opOf(layer).box(layer);
  return typeof role === 'string' ? role : role.window;
}

/** Outputs of a window op (k, s, p) on an axis of `out` values whose windows read any input in [a, b). */
function reach(a: number, b: number, k: number, s: number, p: number, out: number): [number, number] {
  const lo = Math.max(0, Math.floor((a + p - k) / s) + 1);
  const hi = Math.min(out, Math.ceil((b + p) / s));
  return hi > lo ? [lo, hi] : [lo, lo];
}

/** The smallest interval holding each position's intervals of every input (a merge changes where any input does). */
function union(perInput: Pair[][]): Pair[] {
  return perInput[0].map((_, n) => [Math.min(...perInput.map((iv) => iv[n][0])), Math.max(...perInput.map((iv) => iv[n][1]))]);
}

/** Whether layer i can start a segment: a window op on one map, or a per-position op on maps of its own size. */
function segmentStart(info: LayerInfo): Window | undefined {
  const role = boxRole(info.layer);
  const [, h, w] = info.outShape;
  if (role === 'full' || info.outShape.length !== 3 || info.inShapes.some((s) => s.length !== 3)) return undefined;
  if (role !== 'per-position') return info.inputs.length === 1 ? role : undefined;
  // A broadcast input ([C, 1, 1] of squeeze-excite) changes the whole map wherever it changes at all.
  return info.inShapes.every((s) => s[1] === h && s[2] === w) ? IDENTITY : undefined;
}

/**
 * Plans incremental inference for occluder boxes on the input: per segment, the box of each position's output that
 * can change, and where to switch to full computation. Boxes flow through the graph: a window op widens its input's
 * box by its reach, a merge takes the union of its inputs' boxes.
 */
export function planIncremental(infos: LayerInfo[], boxes: Rect[], options: PlanOptions = {}): IncrementalPlan {
  const fullFraction = options.fullFraction ?? DEFAULT_FULL_FRACTION;
  if (!(fullFraction > 0 && fullFraction <= 1)) throw new Error(`fullFraction must be in (0, 1], got ${fullFraction}`);
  if (boxes.length === 0) throw new Error('planIncremental needs at least one occluder box');
  const readers: number[][] = infos.map(() => []);
  for (const info of infos) for (const p of info.inputs) if (p !== IMAGE) readers[p].push(info.index);
  // The changed interval of every position, per axis, at each planned layer's output (and the image's, at -1).
  const rowsOf = new Map<number, Pair[]>([[IMAGE, boxes.map(([y0, , y1]): Pair => [y0, y1])]]);
  const colsOf = new Map<number, Pair[]>([[IMAGE, boxes.map(([, x0, , x1]): Pair => [x0, x1])]]);
  const segments: Segment[] = [];
  let i = 0;
  while (i < infos.length) {
    const window = segmentStart(infos[i]);
    if (!window) break;
    let to = i;
    while (to + 1 < infos.length && boxRole(infos[to + 1].layer) === 'per-position' && infos[to + 1].inputs.join() === String(to)) to++;
    const inputs = infos[i].inputs;
    const outShape = infos[to].outShape as [number, number, number];
    const { kernel: k, stride: s, padding: p } = window;
    const rows = union(inputs.map((q) => rowsOf.get(q)!)).map(([a, b]) => reach(a, b, k[0], s[0], p[0], outShape[1]));
    const cols = union(inputs.map((q) => colsOf.get(q)!)).map(([a, b]) => reach(a, b, k[1], s[1], p[1], outShape[2]));
    const size: Pair = [Math.max(1, ...rows.map(([a, b]) => b - a)), Math.max(1, ...cols.map(([a, b]) => b - a))];
    const fraction = (size[0] * size[1]) / (outShape[1] * outShape[2]);
    if (window !== IDENTITY && fraction >= fullFraction) break;
    const origins = new Int32Array(2 * boxes.length);
    rows.forEach(([a], n) => (origins[2 * n] = Math.min(a, outShape[1] - size[0])));
    cols.forEach(([a], n) => (origins[2 * n + 1] = Math.min(a, outShape[2] - size[1])));
    for (let j = i; j <= to; j++) {
      rowsOf.set(j, rows);
      colsOf.set(j, cols);
    }
    segments.push({
      from: i,
      to,
      window,
      inputs,
      inShapes: infos[i].inShapes as [number, number, number][],
      outShape,
      exposed: [],
      size,
      crop: [(size[0] - 1) * s[0] + k[0], (size[1] - 1) * s[1] + k[1]],
      padded: [(outShape[1] - 1) * s[0] + k[0], (outShape[2] - 1) * s[1] + k[1]],
      origins,
      fraction,
    });
    i = to + 1;
  }
  const tailFrom = i;
  const tailInputs = [...new Set(infos.slice(tailFrom).flatMap((info) => info.inputs.filter((q) => q < tailFrom)))].sort((a, b) => a - b);
  for (const seg of segments) {
    for (let j = seg.from; j <= seg.to; j++) {
      if (j === seg.to || readers[j].some((r) => r !== j + 1)) seg.exposed.push(j);
    }
  }
  const full = infos.reduce((a, l) => a + l.flops, 0);
  let incremental = infos.slice(tailFrom).reduce((a, l) => a + l.flops, 0);
  for (const seg of segments) {
    for (let j = seg.from; j <= seg.to; j++) incremental += infos[j].flops * seg.fraction;
  }
  return { boxes, segments, tailFrom, tailInputs, flops: { full, incremental } };
}

// ---------------------------------------------------------------- patches

/**
 * New values over one box per batch item: item n's box `boxes[n]` holds, at channel c and box cell (r, q) counted from its top-left corner,
 * data[offsets[n] + c * chStride + r * rowStride + q].
 */
export interface Patch {
  data: Float32Array;
  offsets: Int32Array;
  chStride: number;
  rowStride: number;
  boxes: Rect[];
}

/** One layer's output for a batch of occluded inputs: whole maps, or boxes to lay over the unoccluded map. */
export type LayerBatch =
  | { kind: 'full'; shape: number[]; data: Float32Array }
  | { kind: 'patch'; shape: number[]; patch: Patch; base: Float32Array };

/**
 * The sum of one channel of item n's map. For a patch, the unoccluded sum (`baseSums`, from channelSums of the base
 * map) with the box's old values swapped for the new ones.
 */
export function channelSum(lb: LayerBatch, n: number, channel: number, baseSums: Float64Array): number {
  const [, h, w] = lb.shape;
  if (lb.kind === 'full') {
    const per = sizeOf(lb.shape);
    let s = 0;
    for (let i = n * per + channel * h * w, e = i + h * w; i < e; i++) s += lb.data[i];
    return s;
  }
  const { patch, base } = lb;
  const box = patch.boxes[n];
  const [y0, x0] = box;
  const bw = rectWidth(box);
  let s = baseSums[channel];
  const src = patch.offsets[n] + channel * patch.chStride;
  for (let r = 0, bh = rectHeight(box); r < bh; r++) {
    const b = channel * h * w + (y0 + r) * w + x0;
    const d = src + r * patch.rowStride;
    for (let q = 0; q < bw; q++) s += patch.data[d + q] - base[b + q];
  }
  return s;
}

function sumRange(a: Float32Array, from: number, to: number): number {
  let s = 0;
  for (let i = from; i < to; i++) s += a[i];
  return s;
}

/** Per-channel sums of a [C, H, W] map, for channelSum over many items. */
export function channelSums(map: Float32Array, shape: number[]): Float64Array {
  const [c, h, w] = shape;
  return Float64Array.from({ length: c }, (_, k) => sumRange(map, k * h * w, (k + 1) * h * w));
}


// ---------------------------------------------------------------- the graph
//
// One onnxruntime graph runs a whole batch: per segment, each input's crops are gathered, in the graph, from a table
// of cells of the padded unoccluded map concatenated with the cells its producer recomputed (the fill, for the
// image), by an index that the runner computes per batch; the full tail reads whole maps gathered the same way. A
// cell holds a position's channels, so a Gather copies C floats at a time. Kept in one graph, the crops never cross
// into JavaScript, and onnxruntime keeps its blocked layout and its buffers between the layers.

/** Where one graph input's crops come from: a producer's map, read through a window's padding from per-item origins. */
interface CropSource {
  key: string;
  producer: number;
  channels: number;
  /** The unoccluded map's cells, padded out to `extent`: [extent[0] * extent[1], channels], row y * extent[1] + x. */
  table: ort.Tensor;
  extent: Pair;
  padding: Pair;
  /** Crop size per item. */
  crop: Pair;
  /** Per position, the crop's top-left corner in padded coordinates (the tail reads whole maps from (0, 0)). */
  corner: (position: number) => Pair;
}

/** Where item n's recomputed values of a producer lie: its box on the map and its first cell in the producer's cell table. */
interface NewCells {
  boxes: Rect[];
  offsets: Int32Array;
  rowStride: number;
}

/** A [C, H, W] map as cells ([rows, C], row y * pw + x), in `padValue` padding out to `extent`. */
function cellTable(map: Float32Array, [c, h, w]: [number, number, number], padding: Pair, extent: Pair, padValue: number): Float32Array {
  const [ph, pw] = extent;
  const [py, px] = padding;
  const out = new Float32Array(ph * pw * c).fill(padValue);
  const rows = Math.min(h, ph - py);
  const cols = Math.min(w, pw - px);
  for (let k = 0; k < c; k++) {
    for (let y = 0; y < rows; y++) {
      const src = (k * h + y) * w;
      const dst = ((y + py) * pw + px) * c + k;
      for (let x = 0; x < cols; x++) out[dst + x * c] = map[src + x];
    }
  }
  return out;
}

/**
 * Gather indices of item n's crop into `out`: a cell inside the item's new box reads the producer's recomputed cell,
 * placed after the table's `rows` cells; every other cell reads the unoccluded table.
 */
function cropIndices(out: Int32Array, n: number, source: CropSource, [top, left]: Pair, cells: NewCells): void {
  const [dh, dw] = source.crop;
  const pw = source.extent[1];
  const [py, px] = source.padding;
  const rows = source.extent[0] * pw;
  const [y0, x0, y1, x1] = cells.boxes[n];
  const first = rows + cells.offsets[n];
  let o = n * dh * dw;
  for (let r = 0; r < dh; r++) {
    const my = top + r - py;
    const inRows = my >= y0 && my < y1;
    for (let q = 0, X = left; q < dw; q++, X++) {
      const mx = X - px;
      out[o++] = inRows && mx >= x0 && mx < x1 ? first + (my - y0) * cells.rowStride + (mx - x0) : (top + r) * pw + X;
    }
  }
}

/** The layer as it runs on a crop: a window op without its padding, which the crop carries. */
function unpaddedLayer(l: Layer): Layer {
  const role = opOf(l).box(l);
  if (role === 'full') throw new Error(`internal: ${l.type} layer '${l.name}' does not run on boxes`);
  return role === 'per-position' ? l : role.unpadded;
}

const FILL = 'fill';

function incrementalGraph(model: Model, infos: LayerInfo[], plan: IncrementalPlan, outputs: number[], sources: CropSource[][]): Uint8Array {
  const b = new GraphBuilder();
  const weights = initializerWeights(b, model);
  const [c0, h0, w0] = model.input;
  // Per producer, its recomputed cells: [items * box cells, C] (the fill's: [H * W, C]).
  const newCells = new Map<number, string>([[IMAGE, b.input(FILL, [h0 * w0, c0])]]);
  const gather = (s: CropSource): string => {
    const table = b.input(`table:${s.key}`, [s.extent[0] * s.extent[1], s.channels]);
    const index = b.input(`index:${s.key}`, ['N', ...s.crop], DataType.INT32);
    const cells = b.op1('Gather', [b.op1('Concat', [table, newCells.get(s.producer)!], { axis: 0 }), index], { axis: 0 });
    return b.op1('Transpose', [cells], { perm: [0, 3, 1, 2] });
  };
  const layers = [...model.layers];
  const cropInfos = [...infos];
  for (const [k, seg] of plan.segments.entries()) {
    for (let i = seg.from; i <= seg.to; i++) {
      const inHW = i === seg.from ? seg.crop : seg.size;
      const inShapes = infos[i].inShapes.map((s) => [s[0], ...inHW]);
      cropInfos[i] = { ...infos[i], inShapes, inShape: inShapes[0], outShape: [infos[i].outShape[0], ...seg.size] };
      layers[i] = unpaddedLayer(model.layers[i]);
    }
    const external = new Map(seg.inputs.map((p, j) => [p, gather(sources[k][j])]));
    const trace = emitForward(b, { ...model, layers }, cropInfos, '', weights, { from: seg.from, upTo: seg.to, external, switches: false, dropout: 'identity' });
    for (const i of seg.exposed) {
      const nhwc = b.op1('Transpose', [trace.outputs[i]], { perm: [0, 2, 3, 1] });
      newCells.set(i, b.op1('Reshape', [nhwc, b.int64s([-1, infos[i].outShape[0]])]));
    }
    for (const i of outputs.filter((o) => o >= seg.from && o <= seg.to)) b.output(trace.outputs[i], ['N', infos[i].outShape[0], ...seg.size]);
  }
  if (plan.tailFrom < infos.length) {
    const external = new Map(plan.tailInputs.map((p, j) => [p, gather(sources[plan.segments.length][j])]));
    const last = infos.length - 1;
    const trace = emitForward(b, model, infos, '', weights, { from: plan.tailFrom, upTo: last, external, switches: false, dropout: 'identity' });
    for (const i of new Set([...outputs.filter((o) => o >= plan.tailFrom), last])) b.output(trace.outputs[i], ['N', ...infos[i].outShape]);
  }
  return b.encode('convscope_incremental');
}

// ---------------------------------------------------------------- runner

/**
 * Runs occluded variants of one input through a plan. `create` runs the unoccluded input once and keeps the maps the
 * segments crop from; `run` evaluates a batch of positions and returns the requested layers' outputs.
 */
export class IncrementalRunner {
  private constructor(
    private readonly engine: Engine,
    readonly plan: IncrementalPlan,
    private readonly outputs: number[],
    /** Per segment, then the tail: where each input's crops come from. */
    private readonly sources: CropSource[][],
    /** The fill's cells, [H * W, C]. */
    private readonly fill: ort.Tensor,
    /** Unoccluded maps of the requested layers before the tail. */
    private readonly base: Map<number, Float32Array>,
  ) {}

  /** `fill` ([C, H, W]) is what the occluder shows at each pixel it covers. */
  static async create(engine: Engine, input: Tensor, plan: IncrementalPlan, outputLayers: string[], fill: Float32Array): Promise<IncrementalRunner> {
    const { model, infos } = engine;
    const outputs = outputLayers.map((name) => {
      const i = model.layers.findIndex((l) => l.name === name);
      if (i < 0) throw new Error(`unknown layer '${name}'`);
      return i;
    });
    const needed = new Set<number>([...plan.segments.flatMap((s) => s.inputs), ...plan.tailInputs, ...outputs.filter((o) => o < plan.tailFrom)]);
    const names = [...needed].filter((i) => i >= 0).map((i) => model.layers[i].name);
    const acts = names.length > 0 ? (await engine.forward(input, names)).activations : new Map<string, Tensor>();
    const base = new Map<number, Float32Array>();
    for (const i of needed) base.set(i, i === IMAGE ? input.data : acts.get(model.layers[i].name)!.data);
    const shapeOf = (p: number) => (p === IMAGE ? model.input : infos[p].outShape) as [number, number, number];
    const source = (key: string, p: number, padding: Pair, extent: Pair, padValue: number, crop: Pair, corner: CropSource['corner']): CropSource => {
      const shape = shapeOf(p);
      const table = new ort.Tensor('float32', cellTable(base.get(p)!, shape, padding, extent, padValue), [extent[0] * extent[1], shape[0]]);
      return { key, producer: p, channels: shape[0], table, extent, padding, crop, corner };
    };
    const sources = plan.segments.map((seg, k) => seg.inputs.map((p, j) => {
      const [sy, sx] = seg.window.stride;
      return source(`${k}:${j}`, p, seg.window.padding, seg.padded, seg.window.padValue, seg.crop, (n): Pair => [seg.origins[2 * n] * sy, seg.origins[2 * n + 1] * sx]);
    }));
    sources.push(plan.tailInputs.map((p) => {
      const [, h, w] = shapeOf(p);
      return source(`tail:${p}`, p, [0, 0], [h, w], 0, [h, w], (): Pair => [0, 0]);
    }));
    const [c, h, w] = model.input;
    const fillCells = new ort.Tensor('float32', cellTable(fill, [c, h, w], [0, 0], [h, w], 0), [h * w, c]);
    const outputBase = new Map(outputs.filter((o) => o < plan.tailFrom).map((o) => [o, base.get(o)!]));
    return new IncrementalRunner(engine, plan, outputs, sources, fillCells, outputBase);
  }

  /** Outputs of the requested layers for the occluded inputs at the given positions. */
  async run(positions: number[]): Promise<Map<string, LayerBatch>> {
    const { model, infos } = this.engine;
    const { plan } = this;
    const n = positions.length;
    const W = model.input[2];
    const cells = new Map<number, NewCells>([[IMAGE, {
      boxes: positions.map((p) => plan.boxes[p]),
      offsets: Int32Array.from(positions, (p) => plan.boxes[p][0] * W + plan.boxes[p][1]),
      rowStride: W,
    }]]);
    const segmentBoxes = plan.segments.map((seg) => {
      const [h, w] = seg.size;
      const boxes = positions.map((p): Rect => [seg.origins[2 * p], seg.origins[2 * p + 1], seg.origins[2 * p] + h, seg.origins[2 * p + 1] + w]);
      for (let i = seg.from; i <= seg.to; i++) cells.set(i, { boxes, offsets: Int32Array.from(boxes, (_, j) => j * h * w), rowStride: w });
      return boxes;
    });
    const feeds: Record<string, ort.Tensor> = { [FILL]: this.fill };
    for (const source of this.sources.flat()) {
      const index = new Int32Array(n * source.crop[0] * source.crop[1]);
      const from = cells.get(source.producer)!;
      positions.forEach((p, j) => cropIndices(index, j, source, source.corner(p), from));
      feeds[`table:${source.key}`] = source.table;
      feeds[`index:${source.key}`] = new ort.Tensor('int32', index, [n, ...source.crop]);
    }
    const key = `incremental:${plan.segments.map((s) => `${s.from}-${s.to}:${s.size}`).join(';')}:${plan.tailFrom}:${this.outputs}`;
    const outs = await runEngineGraph(this.engine, key, () => incrementalGraph(model, infos, plan, this.outputs, this.sources), feeds);
    const result = new Map<string, LayerBatch>();
    for (const i of this.outputs) {
      const name = model.layers[i].name;
      const data = outs[activationName(name)].data as Float32Array;
      const k = plan.segments.findIndex((s) => i >= s.from && i <= s.to);
      if (k < 0) {
        result.set(name, { kind: 'full', shape: infos[i].outShape, data });
        continue;
      }
      const [h, w] = plan.segments[k].size;
      const c = infos[i].outShape[0];
      const patch: Patch = { data, offsets: Int32Array.from(positions, (_, j) => j * c * h * w), chStride: h * w, rowStride: w, boxes: segmentBoxes[k] };
      result.set(name, { kind: 'patch', shape: infos[i].outShape, patch, base: this.base.get(i)! });
    }
    return result;
  }
}
