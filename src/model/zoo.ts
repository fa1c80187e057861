import { Rng } from '../util/random.js';
import { layerParams, type Layer, type Model, type Pair } from './layers.js';
import { sizeOf } from '../tensor.js';
import { inferShapes } from './shapes.js';

/** Weight initialisation: the paper's (N(0, 0.01^2) weights, zero biases) or He's (N(0, 2/fan_in), zero biases). */
export type InitScheme = 'paper' | 'kaiming';

export interface ZooOptions {
  seed?: number;
  init?: InitScheme;
  classes?: number;
}

const IMAGENET_MEAN = [123.68, 116.78, 103.94];

interface ConvSpec { out: number; k: number; s: number; p: number }
interface ZfShape {
  input: [number, number, number];
  convs: [ConvSpec, ConvSpec, ConvSpec, ConvSpec, ConvSpec];
  pools: [{ k: number; s: number; p: number }, { k: number; s: number; p: number }, { k: number; s: number; p: number }];
  lrn: { size: number; alpha: number; beta: number; k: number };
  fc: [number, number];
  classes: number;
}

const p2 = (v: number): Pair => [v, v];

/** The ZFNet/AlexNet layer sequence: 5 conv (LRN after 1-2, pools after 1, 2, 5), 3 fully connected with dropout. */
function zfStack(spec: ZfShape): Layer[] {
  const layers: Layer[] = [];
  let channels = spec.input[0];
  const conv = (i: number) => {
    const c = spec.convs[i - 1];
    layers.push({ type: 'conv2d', name: `conv${i}`, inChannels: channels, outChannels: c.out, kernel: p2(c.k), stride: p2(c.s), padding: p2(c.p), bias: true });
    layers.push({ type: 'relu', name: `relu${i}` });
    channels = c.out;
  };
  const pool = (name: string, p: { k: number; s: number; p: number }) =>
    layers.push({ type: 'maxpool2d', name, kernel: p2(p.k), stride: p2(p.s), padding: p2(p.p), ceilMode: false });
  const lrn = (name: string) => layers.push({ type: 'lrn', name, ...spec.lrn });
  conv(1); pool('pool1', spec.pools[0]); lrn('norm1');
  conv(2); pool('pool2', spec.pools[1]); lrn('norm2');
  conv(3); conv(4); conv(5); pool('pool5', spec.pools[2]);
  layers.push({ type: 'flatten', name: 'flatten' });
  // Flattened size depends on the geometry: take it from shape inference of the conv part.
  const convInfos = inferShapes({ input: spec.input, layers });
  let features = sizeOf(convInfos[convInfos.length - 1].outShape);
  spec.fc.forEach((width, j) => {
    const i = j + 6;
    layers.push({ type: 'linear', name: `fc${i}`, inFeatures: features, outFeatures: width, bias: true });
    layers.push({ type: 'relu', name: `relu${i}` });
    layers.push({ type: 'dropout', name: `drop${i}`, p: 0.5 });
    features = width;
  });
  layers.push({ type: 'linear', name: 'fc8', inFeatures: features, outFeatures: spec.classes, bias: true });
  return layers;
}

const PAPER_LRN = { size: 5, alpha: 1e-4, beta: 0.75, k: 2 };
const SMALL_POOL = { k: 3, s: 2, p: 1 };

/**
 * torchvision's ResNet shape (BasicBlocks with batch norm, 1x1 downsample where the size or width changes) for 3x64x64:
 * conv1 16@5x5/2 + BN + ReLU and a 3x3/2 max pool (16x16 maps, as torchvision's stem leaves 56x56 of 224), stages of
 * two blocks at 16, 32 and 64 channels (stride 2 from the second), global pool, fc.
 * Layers are named as an import of torchvision's export names them (layer2.0.downsample.0, layer1.0.relu_1).
 */
function resnetSmall(classes: number): { input: [number, number, number]; layers: Layer[] } {
  const layers: Layer[] = [];
  const conv = (name: string, cin: number, cout: number, k: number, s: number, inputs?: string[]) =>
    layers.push({ type: 'conv2d', name, ...(inputs ? { inputs } : {}), inChannels: cin, outChannels: cout, kernel: p2(k), stride: p2(s), padding: p2((k - 1) / 2), bias: false });
  const bn = (name: string, channels: number) => layers.push({ type: 'batchnorm2d', name, channels, eps: 1e-5 });
  conv('conv1', 3, 16, 5, 2);
  bn('bn1', 16);
  layers.push({ type: 'relu', name: 'relu' });
  layers.push({ type: 'maxpool2d', name: 'maxpool', kernel: p2(3), stride: p2(2), padding: p2(1), ceilMode: false });
  let x = 'maxpool';
  let channels = 16;
  [16, 32, 64].forEach((width, stage) => {
    for (let block = 0; block < 2; block++) {
      const p = `layer${stage + 1}.${block}`;
      const stride = stage > 0 && block === 0 ? 2 : 1;
      conv(`${p}.conv1`, channels, width, 3, stride, [x]);
      bn(`${p}.bn1`, width);
      layers.push({ type: 'relu', name: `${p}.relu` });
      conv(`${p}.conv2`, width, width, 3, 1);
      bn(`${p}.bn2`, width);
      let skip = x;
      if (stride !== 1 || channels !== width) {
        conv(`${p}.downsample.0`, channels, width, 1, stride, [x]);
        bn(`${p}.downsample.1`, width);
        skip = `${p}.downsample.1`;
      }
      layers.push({ type: 'add', name: `${p}.add`, inputs: [`${p}.bn2`, skip] });
      layers.push({ type: 'relu', name: `${p}.relu_1` });
      x = `${p}.relu_1`;
      channels = width;
    }
  });
  layers.push({ type: 'adaptiveavgpool2d', name: 'avgpool', output: [1, 1] });
  layers.push({ type: 'flatten', name: 'flatten' });
  layers.push({ type: 'linear', name: 'fc', inFeatures: channels, outFeatures: classes, bias: true });
  return { input: [3, 64, 64], layers };
}

interface ZooEntry {
  describe: string;
  mean: number[];
  build: (classes?: number) => { input: [number, number, number]; layers: Layer[] };
}

const zf = (describe: string, mean: number[], shape: (classes?: number) => ZfShape): ZooEntry => ({
  describe,
  mean,
  build: (classes) => {
    const spec = shape(classes);
    return { input: spec.input, layers: zfStack(spec) };
  },
});

const ZOO: Record<string, ZooEntry> = {
  zfnet: zf(
    'ZFNet (Zeiler & Fergus 2014), 3x224x224, conv1 96@7x7/2, 1000 classes',
    IMAGENET_MEAN,
    (classes = 1000) => ({
      input: [3, 224, 224],
      convs: [{ out: 96, k: 7, s: 2, p: 1 }, { out: 256, k: 5, s: 2, p: 0 }, { out: 384, k: 3, s: 1, p: 1 }, { out: 384, k: 3, s: 1, p: 1 }, { out: 256, k: 3, s: 1, p: 1 }],
      pools: [{ k: 3, s: 2, p: 1 }, { k: 3, s: 2, p: 1 }, { k: 3, s: 2, p: 0 }],
      lrn: PAPER_LRN,
      fc: [4096, 4096],
      classes,
    }),
  ),
  alexnet: zf(
    'AlexNet (Krizhevsky 2012, ungrouped), 3x224x224, conv1 96@11x11/4, 1000 classes',
    IMAGENET_MEAN,
    (classes = 1000) => ({
      input: [3, 224, 224],
      convs: [{ out: 96, k: 11, s: 4, p: 2 }, { out: 256, k: 5, s: 1, p: 2 }, { out: 384, k: 3, s: 1, p: 1 }, { out: 384, k: 3, s: 1, p: 1 }, { out: 256, k: 3, s: 1, p: 1 }],
      pools: [{ k: 3, s: 2, p: 0 }, { k: 3, s: 2, p: 0 }, { k: 3, s: 2, p: 0 }],
      lrn: PAPER_LRN,
      fc: [4096, 4096],
      classes,
    }),
  ),
  'zfnet-small': zf(
    'ZFNet shape for 3x64x64 (the layer sequence of the reference fixtures), conv1 32@7x7/2, 10 classes',
    IMAGENET_MEAN,
    (classes = 10) => ({
      input: [3, 64, 64],
      convs: [{ out: 32, k: 7, s: 2, p: 3 }, { out: 64, k: 5, s: 2, p: 2 }, { out: 96, k: 3, s: 1, p: 1 }, { out: 96, k: 3, s: 1, p: 1 }, { out: 64, k: 3, s: 1, p: 1 }],
      pools: [SMALL_POOL, SMALL_POOL, SMALL_POOL],
      lrn: PAPER_LRN,
      fc: [256, 256],
      classes,
    }),
  ),
  'alexnet-small': zf(
    'AlexNet shape for 3x64x64, conv1 32@11x11/4 and conv2 5x5/1, 10 classes',
    IMAGENET_MEAN,
    (classes = 10) => ({
      input: [3, 64, 64],
      convs: [{ out: 32, k: 11, s: 4, p: 5 }, { out: 64, k: 5, s: 1, p: 2 }, { out: 96, k: 3, s: 1, p: 1 }, { out: 96, k: 3, s: 1, p: 1 }, { out: 64, k: 3, s: 1, p: 1 }],
      pools: [SMALL_POOL, SMALL_POOL, SMALL_POOL],
      lrn: PAPER_LRN,
      fc: [256, 256],
      classes,
    }),
  ),
  'zfnet-mnist': zf(
    'ZFNet shape for 1x28x28 grey images (Fashion-MNIST), conv1 32@5x5/1, 10 classes',
    [72.94],
    (classes = 10) => ({
      input: [1, 28, 28],
      convs: [{ out: 32, k: 5, s: 1, p: 2 }, { out: 64, k: 3, s: 1, p: 1 }, { out: 96, k: 3, s: 1, p: 1 }, { out: 96, k: 3, s: 1, p: 1 }, { out: 64, k: 3, s: 1, p: 1 }],
      pools: [SMALL_POOL, SMALL_POOL, SMALL_POOL],
      lrn: PAPER_LRN,
      fc: [256, 256],
      classes,
    }),
  ),
  'resnet-small': {
    describe: 'ResNet shape (torchvision BasicBlocks with batch norm) for 3x64x64: stages of 16, 32, 64 channels, 10 classes',
    mean: IMAGENET_MEAN,
    build: (classes = 10) => resnetSmall(classes),
  },
};

export const ZOO_NAMES = Object.keys(ZOO);

export function isZooName(name: string): boolean {
  return name in ZOO;
}

/** Seeded weights for a layer stack. */
export function initWeights(layers: Layer[], scheme: InitScheme, seed: number): Map<string, import('../tensor.js').Tensor> {
  const rng = new Rng(seed);
  const weights = new Map();
  for (const layer of layers) {
    for (const { key, shape, init } of layerParams(layer)) {
      const data = new Float32Array(sizeOf(shape));
      if (init === 'fan-in') {
        const fanIn = sizeOf(shape.slice(1));
        const sigma = scheme === 'paper' ? 0.01 : Math.sqrt(2 / fanIn);
        rng.fillNormal(data, sigma);
      } else if (init === 'ones') data.fill(1);
      weights.set(key, { shape, data });
    }
  }
  return weights;
}

export function createZooModel(name: string, options: ZooOptions = {}): Model {
  const entry = ZOO[name];
  if (!entry) throw new Error(`unknown zoo model '${name}'; the zoo has ${ZOO_NAMES.join(', ')}`);
  const { input, layers } = entry.build(options.classes);
  return {
    name,
    input,
    layers,
    weights: initWeights(layers, options.init ?? 'paper', options.seed ?? 0),
    preprocess: { mean: [...entry.mean], std: new Array(input[0]).fill(1) },
  };
}
