// What every op kind must say about itself: the one table (ops/index.ts) holds an OpDef per Layer type, and
// TypeScript refuses a Layer member without one. Emitters write ONNX nodes through the GraphBuilder; graph assembly
// (walking the model, seeds, sessions) stays in the engine.
import type { GraphBuilder } from '../../onnx/builder.js';
import type { NodeProto } from '../../onnx/proto.js';
import type { Tensor } from '../../tensor.js';
import type { Layer, LayerJson, Pair } from '../layers.js';
import type { LayerInfo, ReceptiveField } from '../shapes.js';
import type { ConstTensor } from '../onnx-import/constants.js';

/** How a ReLU passes the backward signal: autograd, Zeiler & Fergus's deconvnet (rectify the signal), or both. */
export type BackwardRule = 'gradient' | 'deconvnet' | 'guided';
/** LRN on the way down: its true gradient, or passed through as the identity (most deconvnet reimplementations). */
export type LrnBackward = 'gradient' | 'identity';

/** Maps a weight key (`conv1.weight`) to the graph tensor holding it: an initializer or a graph input. */
export type WeightSource = (key: string) => string;

export interface ParamSpec {
  key: string;
  shape: number[];
  /** How a fresh model starts it: drawn at random scaled by fan-in (weights), ones (scales, variances) or zeros. */
  init: 'fan-in' | 'ones' | 'zeros';
  /** A statistic the forward pass updates in training (batch norm's running mean and variance), not a gradient. */
  buffer?: true;
}

/** Tensors a forward emitter leaves for the backward one (and for graphs that expose them). */
export interface Saved {
  /**
   * Training-mode batch norm: the centred input x - mean; per channel, inv = 1 / sqrt(var + eps) and scale = inv gamma
   * as [C, 1, 1]; count, the values per channel (N H W) as a float scalar.
   */
  batchNorm?: { centred: string; inv: string; scale: string; count: string };
  /** Batch norm in training: each running statistic's key and the tensor holding its updated value. */
  statistics?: [key: string, tensor: string][];
  /** Max-pool switches: flat int64 indices over the whole batch tensor. */
  switches?: string;
  /** Dropout mask fed as a graph input (already scaled by 1/(1-p)). */
  dropoutMask?: string;
  /** Column matrix [Cin*kh*kw, N*Ho*Wo] of a convolution lowered to GEMM (reused by the weight gradient). */
  columns?: string;
}

export interface ForwardOptions {
  /** Emit max-pool Indices outputs. */
  switches: boolean;
  /** Dropout: identity (inference) or a multiplicative mask fed as a graph input (training). */
  dropout: 'identity' | 'mask';
  /** Batch norm on its running statistics (inference, default) or on the batch's, updating the running ones (training). */
  batchNorm?: 'inference' | 'training';
  /** Standard ONNX ops where one exists (LRN), for files other runtimes read; otherwise the fastest form here. */
  portable?: boolean;
  /**
   * Run small-map convolutions as im2col + GEMM. Faster, but GEMM blocking follows the batch size, so results would
   * differ in the last bits between batch sizes: only the train step asks.
   */
  gemmSmallConvs?: boolean;
}

export interface ForwardContext {
  b: GraphBuilder;
  weight: WeightSource;
  info: LayerInfo;
  opts: ForwardOptions;
  /** The name the op's output must take. */
  out: string;
  saved: Saved;
}

export interface BackwardOptions {
  rule: BackwardRule;
  lrn: LrnBackward;
  /** Emit dLoss/dWeight for every parameter (train step). */
  weightGradients: boolean;
  /** With weightGradients, also carry the gradient down to the image (a train step skips it unless asked). */
  inputGradient?: boolean;
  /** As ForwardOptions.gemmSmallConvs, for the input-gradient convolutions. */
  gemmSmallConvs?: boolean;
}

export interface BackwardContext {
  b: GraphBuilder;
  weight: WeightSource;
  /** Weight values, for ops whose backward bakes constants (inference-mode batch norm). */
  weights: ReadonlyMap<string, Tensor>;
  info: LayerInfo;
  opts: BackwardOptions;
  /** The op's forward input tensors and its output tensor. */
  inputs: string[];
  output: string;
  saved: Saved;
  /** Per input: whether anything below needs its gradient (the image's is not needed in a train step). */
  needs: boolean[];
  /** Per input: the layer that produced it (undefined for the model input) and how many layers read that layer. */
  producers: ({ layer: Layer; consumers: number } | undefined)[];
  /** ReLU layers whose gate a max pool above them already applied at the pooled size. */
  gatedByPool: Set<string>;
  weightGrad(key: string, grad: string): void;
}

/** The sliding-window geometry of an op that can run on crops (incremental occlusion). */
export interface BoxWindow {
  kernel: Pair;
  stride: Pair;
  padding: Pair;
  /** What the padding holds: 0 for a convolution, -inf for a max pool. */
  padValue: number;
}

/**
 * How an op runs on boxes: as a window (and its crop-form layer, without padding), position by position (a merge of
 * several maps too: output (y, x) reads every input at (y, x) only), or not.
 */
export type BoxRole<L> = { window: BoxWindow; unpadded: L } | 'per-position' | 'full';

/** What one ONNX node reading the data path becomes: a layer with its weights, or nothing (out says where to go on). */
export interface Imported<L> {
  layer?: L;
  params?: [string, ConstTensor | undefined][];
  /** The tensor the next op reads, when it is not the node's first output (MatMul + Add). */
  out?: string;
  /** Parameter-free layers the node implies before and after its own: a Conv's asymmetric pads become a zero pad
   * before it; ReduceMean without keepdims is a pooling and then a flatten. */
  pre?: Layer;
  post?: Layer;
}

/** What an ONNX import mapping may ask of the graph around the node. */
export interface ImportContext {
  opset: number;
  /** The batch dimension when the export fixed it: a Reshape may name it instead of -1 or 0. */
  fixedBatch: number | undefined;
  /** The [C, H, W] or [F] shape of the tensor the node reads. */
  currentShape(): number[];
  weight(n: NodeProto, index: number, what: string): ConstTensor;
  optionalWeight(n: NodeProto, index: number, what: string): ConstTensor | undefined;
  constInts(n: NodeProto, index: number, what: string): number[];
  /** A shape-valued input evaluated symbolically ('N' for the batch); refuses the node when not constant. */
  symbolicInts(n: NodeProto, index: number, what: string): (number | 'N')[];
  onlyFirstOutputUsed(n: NodeProto): void;
  consumers(tensor: string): NodeProto[];
  constant(tensor: string): ConstTensor | undefined;
}

export interface OpDef<L extends Layer> {
  /** The weight tensors a layer owns, with their expected shapes. */
  params(layer: L): ParamSpec[];
  fromJson(o: LayerJson, name: string): L;
  /** PyTorch-style snake_case keys, scalar or [h, w] sizes: the safetensors `architecture` form. */
  toJson(layer: L): LayerJson;
  /** Output shape (no batch) from the input shapes; throws a one-line error naming the layer when they do not fit. */
  shape(layer: L, inShapes: number[][]): number[];
  /** 2 x multiply-adds for conv and linear; one operation per window element or output value elsewhere. */
  flops(layer: L, inShapes: number[][], outShape: number[]): number;
  /** The receptive field of one output unit from those of the inputs; `image` is the whole-image field. */
  rf(layer: L, inRfs: ReceptiveField[], inShapes: number[][], image: ReceptiveField): ReceptiveField;
  /** Writes the op's forward nodes; returns its output name (ctx.out). */
  forward(ctx: ForwardContext, layer: L, inputs: string[]): string;
  /** Writes the backward nodes for output gradient g; one gradient per input, undefined where none is needed. */
  backward(ctx: BackwardContext, layer: L, g: string): (string | undefined)[];
  box(layer: L): BoxRole<L>;
  /** ONNX op types that become this layer, each with its converter. */
  onnx: Record<string, (ctx: ImportContext, n: NodeProto) => Imported<L>>;
}
