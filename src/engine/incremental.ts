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

/** Item n's whole map, written into `out` (the base map with the patch laid over it). */
export function materialize(lb: LayerBatch, n: number, out: Float32Array, outOffset = 0): void {
  const per = sizeOf(lb.shape);
  if (lb.kind === 'full') {
    out.set(lb.data.subarray(n * per, (n + 1) * per), outOffset);
    return;
  }
  const [c, h, w] = lb.shape;
  assemble(out, outOffset, lb.base, [c, h, w], 0, 0, h, w, lb.patch, n, 0, 0);
}

/**
 * One pass that writes dst (channels x dh x dw) = the window at (top, left) of a [C, sh, sw] source map, with item n's
 * patch laid over it; the patch's box, in map coordinates, sits at +(oy, ox) in the source (its padding). Each value
 * is written once: on this VM kind memory traffic, not arithmetic, bounds this copy.
 */
function assemble(dst: Float32Array, dstOffset: number, src: Float32Array, srcShape: [number, number, number], top: number, left: number, dh: number, dw: number, patch: Patch, n: number, oy: number, ox: number): void {
  const [channels, sh, sw] = srcShape;
  const [y0, x0, y1, x1] = patch.boxes[n];
  const clamp = (v: number, hi: number) => Math.min(hi, Math.max(0, v));
  const r0 = clamp(y0 + oy - top, dh);
  const r1 = clamp(y1 + oy - top, dh);
  let q0 = clamp(x0 + ox - left, dw);
  let q1 = clamp(x1 + ox - left, dw);
  if (q1 <= q0) [q0, q1] = [dw, dw];
  const pdata = patch.data;
  for (let c = 0; c < channels; c++) {
    const pc = patch.offsets[n] + c * patch.chStride + (top - oy - y0) * patch.rowStride + (left - ox - x0);
    for (let r = 0; r < dh; r++) {
      const s = (c * sh + top + r) * sw + left;
      const d = dstOffset + (c * dh + r) * dw;
      if (r < r0 || r >= r1) {
        for (let q = 0; q < dw; q++) dst[d + q] = src[s + q];
        continue;
      }
      const p = pc + r * patch.rowStride;
      for (let q = 0; q < q0; q++) dst[d + q] = src[s + q];
      for (let q = q0; q < q1; q++) dst[d + q] = pdata[p + q];
      for (let q = q1; q < dw; q++) dst[d + q] = src[s + q];
    }
  }
}

/** A [C, H, W] input map of a segment surrounded by its window's padding, out to the extent its windows read. */
function padMap(map: Float32Array, [c, h, w]: [number, number, number], seg: Segment): Float32Array {
  const [ph, pw] = seg.padded;
  const [py, px] = seg.window.padding;
  const out = new Float32Array(c * ph * pw).fill(seg.window.padValue);
  const rows = Math.min(h, ph - py);
  const cols = Math.min(w, pw - px);
  for (let k = 0; k < c; k++) {
    for (let y = 0; y < rows; y++) out.set(map.subarray((k * h + y) * w, (k * h + y) * w + cols), (k * ph + y + py) * pw + px);
  }
  return out;
}

// ---------------------------------------------------------------- graphs

const cropInput = (j: number) => `crop${j}`;
const mapInput = (p: number) => `map${p}`;

/** The segment's layers on crops, the window layer's padding removed: crops carry their padding explicitly. */
function segmentGraph(model: Model, infos: LayerInfo[], seg: Segment, outputs: number[]): Uint8Array {
  const b = new GraphBuilder();
  const weights = initializerWeights(b, model);
  const external = new Map(seg.inputs.map((p, j) => [p, b.input(cropInput(j), ['N', seg.inShapes[j][0], ...seg.crop])]));
  const layers = [...model.layers];
  const cropInfos = [...infos];
  for (let i = seg.from; i <= seg.to; i++) {
    const inHW = i === seg.from ? seg.crop : seg.size;
    const inShapes = infos[i].inShapes.map((s) => [s[0], ...inHW]);
    cropInfos[i] = { ...infos[i], inShapes, inShape: inShapes[0], outShape: [infos[i].outShape[0], ...seg.size] };
    layers[i] = unpaddedLayer(model.layers[i]);
  }
  emitForward(b, { ...model, layers }, cropInfos, '', weights, { from: seg.from, upTo: seg.to, external, switches: false, dropout: 'identity' });
  for (const i of new Set([...outputs.filter((o) => o >= seg.from && o <= seg.to), ...seg.exposed])) {
    b.output(activationName(model.layers[i].name), ['N', infos[i].outShape[0], ...seg.size]);
  }
  return b.encode('convscope_incremental_segment');
}

/** The layer as it runs on a crop: a window op without its padding, which the crop carries. */
function unpaddedLayer(l: Layer): Layer {
  const role = opOf(l).box(l);
  if (role === 'full') throw new Error(`internal: ${l.type} layer '${l.name}' does not run on boxes`);
  return role === 'per-position' ? l : role.unpadded;
}

function tailGraph(model: Model, infos: LayerInfo[], plan: IncrementalPlan, outputs: number[]): Uint8Array {
  const b = new GraphBuilder();
  const external = new Map(plan.tailInputs.map((p) => [p, b.input(mapInput(p), ['N', ...(p === IMAGE ? model.input : infos[p].outShape)])]));
  const last = infos.length - 1;
  const trace = emitForward(b, model, infos, '', initializerWeights(b, model), { from: plan.tailFrom, upTo: last, external, switches: false, dropout: 'identity' });
  for (const i of new Set([...outputs.filter((o) => o >= plan.tailFrom), last])) b.output(trace.outputs[i], ['N', ...infos[i].outShape]);
  return b.encode('convscope_incremental_tail');
}

// ---------------------------------------------------------------- runner

/** Reusable buffers: writing fresh memory is slow on this VM kind, so batches share them. */
class Scratch {
  private buffers = new Map<string, Float32Array>();
  get(key: string, length: number): Float32Array {
    let b = this.buffers.get(key);
    if (!b || b.length < length) {
      b = new Float32Array(length);
      this.buffers.set(key, b);
    }
    return b.subarray(0, length);
  }
}

/**
 * Runs occluded variants of one input through a plan. `create` runs the unoccluded input once and keeps the maps the
 * segments crop from; `run` evaluates a batch of positions and returns the requested layers' outputs.
 */
export class IncrementalRunner {
  private readonly scratch = new Scratch();

  private constructor(
    private readonly engine: Engine,
    readonly plan: IncrementalPlan,
    private readonly outputs: number[],
    /** Per segment, its input maps padded as its window reads them. */
    private readonly padded: Float32Array[][],
    /** Unoccluded maps of the tail's inputs and of the requested layers before the tail (-1: the image). */
    private readonly base: Map<number, Float32Array>,
  ) {}

  static async create(engine: Engine, input: Tensor, plan: IncrementalPlan, outputLayers: string[]): Promise<IncrementalRunner> {
    const { model } = engine;
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
    const padded = plan.segments.map((seg) => seg.inputs.map((p, j) => padMap(base.get(p)!, seg.inShapes[j], seg)));
    return new IncrementalRunner(engine, plan, outputs, padded, base);
  }

  /** Outputs of the requested layers for the occluded inputs at the given positions, filled from `fill` ([C, H, W]). */
  async run(positions: number[], fill: Float32Array): Promise<Map<string, LayerBatch>> {
    const { model, infos } = this.engine;
    const n = positions.length;
    const [, H, W] = model.input;
    const result = new Map<string, LayerBatch>();
    // The new values over each planned layer's box (the image's: the occluder), for the layers that read them.
    const patches = new Map<number, Patch>([[IMAGE, {
      data: fill,
      offsets: Int32Array.from(positions, (p) => this.plan.boxes[p][0] * W + this.plan.boxes[p][1]),
      chStride: H * W,
      rowStride: W,
      boxes: positions.map((p) => this.plan.boxes[p]),
    }]]);
    for (const [k, seg] of this.plan.segments.entries()) {
      const feeds = Object.fromEntries(seg.inputs.map((p, j) => [
        cropInput(j),
        new ort.Tensor('float32', this.cropBatch(k, j, patches.get(p)!, positions), [n, seg.inShapes[j][0], ...seg.crop]),
      ]));
      const outs = await runEngineGraph(this.engine, `incremental:${seg.from}-${seg.to}:${seg.crop}:${this.outputs}`, () => segmentGraph(model, infos, seg, this.outputs), feeds);
      const [h, w] = seg.size;
      const boxes = positions.map((p): Rect => [seg.origins[2 * p], seg.origins[2 * p + 1], seg.origins[2 * p] + h, seg.origins[2 * p + 1] + w]);
      const patchOf = (i: number): Patch => {
        const c = infos[i].outShape[0];
        return { data: outs[activationName(model.layers[i].name)].data as Float32Array, offsets: Int32Array.from(boxes, (_, j) => j * c * h * w), chStride: h * w, rowStride: w, boxes };
      };
      for (const i of seg.exposed) patches.set(i, patchOf(i));
      for (const i of this.outputs) {
        if (i >= seg.from && i <= seg.to) result.set(model.layers[i].name, { kind: 'patch', shape: infos[i].outShape, patch: patchOf(i), base: this.base.get(i)! });
      }
    }
    if (this.plan.tailFrom < infos.length) {
      const feeds = Object.fromEntries(this.plan.tailInputs.map((p) => {
        const shape = p === IMAGE ? model.input : infos[p].outShape;
        const per = sizeOf(shape);
        const maps = this.scratch.get(mapInput(p), n * per);
        const prev: LayerBatch = { kind: 'patch', shape, patch: patches.get(p)!, base: this.base.get(p)! };
        for (let j = 0; j < n; j++) materialize(prev, j, maps, j * per);
        return [mapInput(p), new ort.Tensor('float32', maps, [n, ...shape])];
      }));
      const outs = await runEngineGraph(this.engine, `incremental-tail:${this.plan.tailFrom}:${this.outputs}`, () => tailGraph(model, infos, this.plan, this.outputs), feeds);
      for (const i of this.outputs.filter((o) => o >= this.plan.tailFrom)) {
        const t = outs[activationName(model.layers[i].name)];
        result.set(model.layers[i].name, { kind: 'full', shape: infos[i].outShape, data: t.data as Float32Array });
      }
    }
    return result;
  }

  /** Input j's crops of segment k for a batch: the padded unoccluded map under each crop, the producer's patch laid over it. */
  private cropBatch(k: number, j: number, prev: Patch, positions: number[]): Float32Array {
    const seg = this.plan.segments[k];
    const [c] = seg.inShapes[j];
    const [ch, cw] = seg.crop;
    const [sy, sx] = seg.window.stride;
    const [py, px] = seg.window.padding;
    const per = c * ch * cw;
    const crops = this.scratch.get(`crop${k}:${j}`, positions.length * per);
    const shape: [number, number, number] = [c, ...seg.padded];
    positions.forEach((p, i) => assemble(crops, i * per, this.padded[k][j], shape, seg.origins[2 * p] * sy, seg.origins[2 * p + 1] * sx, ch, cw, prev, i, py, px));
    return crops;
  }
}
