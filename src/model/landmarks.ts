// The layers an analysis looks at when the user names none, found from the model's own graph (never from the zoo's
// layer names): the paper's "layer 1", "layer 5" and "layer 7" generalised to any CNN, chain or DAG.
import { IMAGE } from './graph.js';
import type { Layer, Model } from './layers.js';
import { inferShapes, type LayerInfo } from './shapes.js';

/** Ops that only reshape or (in inference) pass values through: looking past them finds the same features. */
const PASS_THROUGH: ReadonlySet<Layer['type']> = new Set(['flatten', 'dropout']);

/** ReLU, or a clip from 0 (ReLU6): what zeroes a map's negative values. */
function isRectifier(layer: Layer): boolean {
  return layer.type === 'relu' || (layer.type === 'clip' && layer.min === 0);
}

export class Landmarks {
  readonly infos: LayerInfo[];
  /** Per layer index, the indices of the layers that read it. */
  private readonly readers: number[][];

  constructor(readonly model: Pick<Model, 'name' | 'input' | 'layers'>, infos?: LayerInfo[]) {
    this.infos = infos ?? inferShapes(model);
    this.readers = this.infos.map(() => []);
    this.infos.forEach((info) => info.inputs.forEach((p) => p !== IMAGE && this.readers[p].push(info.index)));
  }

  /**
   * The ReLU (or ReLU6) that rectifies a layer (its only reader), else the layer itself: the paper's layers are
   * rectified maps.
   */
  rectified(index: number): string {
    const readers = this.readers[index];
    const only = readers.length === 1 ? this.infos[readers[0]].layer : undefined;
    return only && isRectifier(only) ? only.name : this.infos[index].layer.name;
  }

  /** Layers with [C, H, W] output. */
  maps(): LayerInfo[] {
    return this.infos.filter((i) => i.outShape.length === 3);
  }

  /**
   * The rectified feature maps: every ReLU with a map output; in a model without one, every ReLU6 (a Clip from 0:
   * MobileNetV2); else the conv layers.
   */
  featureMaps(): string[] {
    const maps = this.maps();
    const relus = maps.filter((i) => i.layer.type === 'relu');
    const relu6s = maps.filter((i) => i.layer.type === 'clip' && isRectifier(i.layer));
    const chosen = relus.length > 0 ? relus : relu6s.length > 0 ? relu6s : maps.filter((i) => i.layer.type === 'conv2d');
    return chosen.map((i) => i.layer.name);
  }

  /**
   * What top-k scans by default: at most `count` of the feature maps, evenly spread over depth, the first and the
   * deepest included. ZFNet's are its five (the paper's layers 1-5); a MobileNetV2 has 35 and a ResNet-50 49, each
   * a sweep of its own (every unit of every map projected k times).
   */
  spreadFeatureMaps(count = 5): string[] {
    const maps = this.featureMaps();
    if (maps.length <= count) return maps;
    // More maps than picks: the steps exceed 1, so no two picks round to the same map.
    return Array.from({ length: count }, (_, i) => maps[Math.round((i * (maps.length - 1)) / Math.max(1, count - 1))]);
  }

  /** The paper's layer 1: the rectified output of the first convolution. */
  firstConv(): string {
    const conv = this.infos.find((i) => i.layer.type === 'conv2d');
    if (!conv) throw new Error(`model ${this.model.name} has no conv layer`);
    return this.rectified(conv.index);
  }

  /**
   * The deepest feature map (the paper's layer 5 on ZFNet): the last rectified [C, H, W] map before the classifier,
   * or the last map of a model without ReLUs.
   */
  lastFeatureMap(): string {
    const maps = this.featureMaps();
    const last = maps.at(-1) ?? this.maps().at(-1)?.layer.name;
    if (!last) throw new Error(`model ${this.model.name} has no feature maps`);
    return last;
  }

  /**
   * The features the classifier reads (the paper's layer 7 on ZFNet, the pooled features of a ResNet): the input of
   * the last weighted layer (linear, or a 1x1 conv classifier), looking past flatten and dropout.
   */
  classifierInput(): string {
    const of = (type: Layer['type']) => this.infos.filter((i) => i.layer.type === type).at(-1);
    const last = of('linear') ?? of('conv2d');
    if (!last) throw new Error(`model ${this.model.name} has no linear or conv layer`);
    let p = last.inputs[0];
    while (p !== IMAGE && PASS_THROUGH.has(this.infos[p].layer.type)) p = this.infos[p].inputs[0];
    if (p === IMAGE) throw new Error(`model ${this.model.name}: its classifier reads the image directly`);
    return this.infos[p].layer.name;
  }

  /**
   * One layer per level of depth, for probes (the paper's seven layers on ZFNet): in a chain, the rectified output of
   * every weighted layer but the classifier; in a graph, where blocks hold several convs, the last rectified map of
   * each resolution (a ResNet's stages), then the features the classifier reads.
   */
  levels(): string[] {
    const weighted = this.infos.filter((i) => i.layer.type === 'conv2d' || i.layer.type === 'linear');
    const chain = this.infos.every((i) => i.inputs.length === 1 && i.inputs[0] === i.index - 1);
    if (chain) return weighted.slice(0, -1).map((i) => this.rectified(i.index));
    const lastPerSize = new Map<string, string>();
    const maps = new Set(this.featureMaps());
    for (const i of this.maps()) if (maps.has(i.layer.name)) lastPerSize.set(i.outShape.slice(1).join('x'), i.layer.name);
    return [...new Set([...lastPerSize.values(), this.classifierInput()])];
  }

  /** The model's output: class scores, or probabilities when it ends in a softmax. */
  output(): { name: string; isSoftmax: boolean } {
    const last = this.infos[this.infos.length - 1].layer;
    return { name: last.name, isSoftmax: last.type === 'softmax' };
  }
}
