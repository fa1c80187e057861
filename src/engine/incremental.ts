// Incremental inference for occlusion (the idea of Krypton, Nakandala et al., SIGMOD 2019): an occluder changes
// only a box of each layer's output, so each occluded input recomputes just that box, from crops of the cached
// unoccluded maps with the previous layer's new box pasted in. Once the box covers most of a map (and always at
// flatten/linear), the rest of the network runs in full on the patched map. The result equals full recomputation up
// to float rounding: every value the occluder can reach is recomputed, padding stays where the image border is.
import ort from 'onnxruntime-node';
import { GraphBuilder } from '../onnx/builder.js';
import type { Layer, Model, Pair } from '../model/layers.js';
import { isChain } from '../model/graph.js';
import { opOf } from '../model/ops/index.js';
import type { BoxWindow as Window } from '../model/ops/types.js';
import type { LayerInfo } from '../model/shapes.js';
import { sizeOf, type Tensor } from '../tensor.js';
import { rectHeight, rectWidth, type Rect } from '../util/rect.js';
import { activationName, emitForward } from './compile.js';
import { runEngineGraph, type Engine } from './engine.js';
import { initializerWeights } from './graphs.js';

/** One window layer and the per-position layers after it, run on crops of its input. */
export interface Segment {
  from: number;
  to: number;
  window: Window;
  /** [C, H, W] of the segment's input and output maps. */
  inShape: [number, number, number];
  outShape: [number, number, number];
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
  /** First layer run in full on the patched map; model.layers.length when every layer runs on boxes. */
  tailFrom: number;
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

/**
 * Plans incremental inference for occluder boxes on the input: per segment, the box of each position's output that
 * can change, and where to switch to full computation.
 */
export function planIncremental(infos: LayerInfo[], boxes: Rect[], options: PlanOptions = {}): IncrementalPlan {
  const fullFraction = options.fullFraction ?? DEFAULT_FULL_FRACTION;
  if (!(fullFraction > 0 && fullFraction <= 1)) throw new Error(`fullFraction must be in (0, 1], got ${fullFraction}`);
  if (boxes.length === 0) throw new Error('planIncremental needs at least one occluder box');
  // The changed interval of every position, per axis, as it moves through the layers.
  let rows = boxes.map(([y0, , y1]): Pair => [y0, y1]);
  let cols = boxes.map(([, x0, , x1]): Pair => [x0, x1]);
  const segments: Segment[] = [];
  let i = 0;
  // A graph model (a layer reading anything but the layer before it) is planned as nothing incremental: every
  // occluded input runs in full from the image, which is exact. Propagating boxes through branches is a later stage.
  const chain = isChain(infos.map((info) => info.inputs));
  while (chain && i < infos.length) {
    const role = boxRole(infos[i].layer);
    if (role === 'full' || infos[i].inShape.length !== 3) break;
    const window: Window = role === 'per-position' ? { kernel: [1, 1], stride: [1, 1], padding: [0, 0], padValue: 0 } : role;
    let to = i;
    while (to + 1 < infos.length && boxRole(infos[to + 1].layer) === 'per-position') to++;
    const inShape = infos[i].inShape as [number, number, number];
    const outShape = infos[to].outShape as [number, number, number];
    const { kernel: k, stride: s, padding: p } = window;
    rows = rows.map(([a, b]) => reach(a, b, k[0], s[0], p[0], outShape[1]));
    cols = cols.map(([a, b]) => reach(a, b, k[1], s[1], p[1], outShape[2]));
    const size: Pair = [Math.max(1, ...rows.map(([a, b]) => b - a)), Math.max(1, ...cols.map(([a, b]) => b - a))];
    const fraction = (size[0] * size[1]) / (outShape[1] * outShape[2]);
    if (role !== 'per-position' && fraction >= fullFraction) break;
    const origins = new Int32Array(2 * boxes.length);
    rows.forEach(([a], n) => (origins[2 * n] = Math.min(a, outShape[1] - size[0])));
    cols.forEach(([a], n) => (origins[2 * n + 1] = Math.min(a, outShape[2] - size[1])));
    segments.push({
      from: i,
      to,
      window,
      inShape,
      outShape,
      size,
      crop: [(size[0] - 1) * s[0] + k[0], (size[1] - 1) * s[1] + k[1]],
      padded: [(outShape[1] - 1) * s[0] + k[0], (outShape[2] - 1) * s[1] + k[1]],
      origins,
      fraction,
    });
    i = to + 1;
  }
  const full = infos.reduce((a, l) => a + l.flops, 0);
  let incremental = infos.slice(i).reduce((a, l) => a + l.flops, 0);
  for (const seg of segments) {
    for (let j = seg.from; j <= seg.to; j++) incremental += infos[j].flops * seg.fraction;
  }
  return { boxes, segments, tailFrom: i, flops: { full, incremental } };
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

/** A [C, H, W] map surrounded by its layer's padding, out to the extent its windows read. */
function padMap(map: Float32Array, seg: Segment): Float32Array {
  const [c, h, w] = seg.inShape;
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

const CROP = 'crop';
const MAP = 'map';

/** The segment's layers with the window layer's padding removed: crops carry their padding explicitly. */
function segmentGraph(model: Model, infos: LayerInfo[], seg: Segment, outputs: number[]): Uint8Array {
  const b = new GraphBuilder();
  const weights = initializerWeights(b, model);
  let x = b.input(CROP, ['N', seg.inShape[0], ...seg.crop]);
  for (let i = seg.from; i <= seg.to; i++) {
    const layer = model.layers[i];
    const inHW = i === seg.from ? seg.crop : seg.size;
    const info = { ...infos[i], inShape: [infos[i].inShape[0], ...inHW], outShape: [infos[i].outShape[0], ...seg.size] };
    const unpadded = unpaddedLayer(layer);
    const cropModel = { ...model, layers: model.layers.map((l, j) => (j === i ? unpadded : l)) };
    const cropInfos = infos.map((inf, j) => (j === i ? info : inf));
    emitForward(b, cropModel, cropInfos, x, weights, { from: i, upTo: i, switches: false, dropout: 'identity' });
    x = activationName(layer.name);
  }
  for (const i of new Set([...outputs.filter((o) => o >= seg.from && o < seg.to), seg.to])) {
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

function tailGraph(model: Model, infos: LayerInfo[], from: number, outputs: number[]): Uint8Array {
  const b = new GraphBuilder();
  const input = b.input(MAP, ['N', ...infos[from].inShape]);
  const last = infos.length - 1;
  const trace = emitForward(b, model, infos, input, initializerWeights(b, model), { from, upTo: last, switches: false, dropout: 'identity' });
  for (const i of new Set([...outputs.filter((o) => o >= from), last])) b.output(trace.outputs[i], ['N', ...infos[i].outShape]);
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
    /** The segments' padded input maps, and the unoccluded maps of the tail's input and of the requested layers. */
    private readonly padded: Float32Array[],
    private readonly base: Map<number, Float32Array>,
  ) {}

  static async create(engine: Engine, input: Tensor, plan: IncrementalPlan, outputLayers: string[]): Promise<IncrementalRunner> {
    const { model } = engine;
    const outputs = outputLayers.map((name) => {
      const i = model.layers.findIndex((l) => l.name === name);
      if (i < 0) throw new Error(`unknown layer '${name}'`);
      return i;
    });
    // Layer -1 is the input itself.
    const needed = new Set<number>([...plan.segments.map((s) => s.from - 1), plan.tailFrom - 1, ...outputs.filter((o) => o < plan.tailFrom)]);
    const names = [...needed].filter((i) => i >= 0).map((i) => model.layers[i].name);
    const acts = names.length > 0 ? (await engine.forward(input, names)).activations : new Map<string, Tensor>();
    const base = new Map<number, Float32Array>();
    for (const i of needed) base.set(i, i < 0 ? input.data : acts.get(model.layers[i].name)!.data);
    const padded = plan.segments.map((seg) => padMap(base.get(seg.from - 1)!, seg));
    return new IncrementalRunner(engine, plan, outputs, padded, base);
  }

  /** Outputs of the requested layers for the occluded inputs at the given positions, filled from `fill` ([C, H, W]). */
  async run(positions: number[], fill: Float32Array): Promise<Map<string, LayerBatch>> {
    const { model, infos } = this.engine;
    const n = positions.length;
    const [, H, W] = model.input;
    const result = new Map<string, LayerBatch>();
    let patch: Patch = {
      data: fill,
      offsets: Int32Array.from(positions, (p) => this.plan.boxes[p][0] * W + this.plan.boxes[p][1]),
      chStride: H * W,
      rowStride: W,
      boxes: positions.map((p) => this.plan.boxes[p]),
    };
    for (const [k, seg] of this.plan.segments.entries()) {
      const crops = this.cropBatch(k, patch, positions);
      const outs = await runEngineGraph(
        this.engine,
        `incremental:${seg.from}-${seg.to}:${seg.crop}:${this.outputs}`,
        () => segmentGraph(model, infos, seg, this.outputs),
        { [CROP]: new ort.Tensor('float32', crops, [n, seg.inShape[0], ...seg.crop]) },
      );
      const [h, w] = seg.size;
      const boxes = positions.map((p): Rect => [seg.origins[2 * p], seg.origins[2 * p + 1], seg.origins[2 * p] + h, seg.origins[2 * p + 1] + w]);
      const patchOf = (i: number): Patch => {
        const c = infos[i].outShape[0];
        return { data: outs[activationName(model.layers[i].name)].data as Float32Array, offsets: Int32Array.from(boxes, (_, j) => j * c * h * w), chStride: h * w, rowStride: w, boxes };
      };
      for (const i of this.outputs) {
        if (i >= seg.from && i <= seg.to) result.set(model.layers[i].name, { kind: 'patch', shape: infos[i].outShape, patch: patchOf(i), base: this.base.get(i)! });
      }
      patch = patchOf(seg.to);
    }
    if (this.plan.tailFrom < infos.length) {
      const from = this.plan.tailFrom;
      const shape = infos[from].inShape;
      const per = sizeOf(shape);
      const maps = this.scratch.get('tail', n * per);
      const prev: LayerBatch = { kind: 'patch', shape, patch, base: this.base.get(from - 1)! };
      for (let j = 0; j < n; j++) materialize(prev, j, maps, j * per);
      const outs = await runEngineGraph(this.engine, `incremental-tail:${from}:${this.outputs}`, () => tailGraph(model, infos, from, this.outputs), {
        [MAP]: new ort.Tensor('float32', maps, [n, ...shape]),
      });
      for (const i of this.outputs.filter((o) => o >= from)) {
        const t = outs[activationName(model.layers[i].name)];
        result.set(model.layers[i].name, { kind: 'full', shape: infos[i].outShape, data: t.data as Float32Array });
      }
    }
    return result;
  }

  /** Segment k's input crops for a batch: the padded unoccluded map under each crop, the previous patch laid over it. */
  private cropBatch(k: number, prev: Patch, positions: number[]): Float32Array {
    const seg = this.plan.segments[k];
    const [c] = seg.inShape;
    const [ch, cw] = seg.crop;
    const [sy, sx] = seg.window.stride;
    const [py, px] = seg.window.padding;
    const per = c * ch * cw;
    const crops = this.scratch.get(`crop${k}`, positions.length * per);
    const shape: [number, number, number] = [c, ...seg.padded];
    positions.forEach((p, j) => assemble(crops, j * per, this.padded[k], shape, seg.origins[2 * p] * sy, seg.origins[2 * p + 1] * sx, ch, cw, prev, j, py, px));
    return crops;
  }
}
