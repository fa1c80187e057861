// Graph (DAG) models: a residual block (add) and a two-branch block (concat) through forward, the three backward
// rules and the train step, against a float64 reference interpreter written here and finite differences; the graph's
// validation errors; the JSON form; and occlusion's planner on a graph model.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test, after } from 'node:test';
import { ablateModel } from '../src/analysis/ablate.js';
import { occlusionMaps } from '../src/analysis/occlusion.js';
import { Engine } from '../src/engine/engine.js';
import { planIncremental } from '../src/engine/incremental.js';
import { layerFromJson, layersToJson, validateModel, type Layer, type Model } from '../src/model/layers.js';
import { readSafetensorsModel, writeSafetensorsModel } from '../src/model/safetensors.js';
import { inferShapes } from '../src/model/shapes.js';
import { createZooModel, initWeights } from '../src/model/zoo.js';
import { sizeOf, tensor, type Tensor } from '../src/tensor.js';
import { Rng } from '../src/util/random.js';

// ---------------------------------------------------------------- models

const conv = (name: string, cin: number, cout: number, k: number, s: number, p: number, inputs?: string[]): Layer =>
  ({ type: 'conv2d', name, inChannels: cin, outChannels: cout, kernel: [k, k], stride: [s, s], padding: [p, p], bias: true, ...(inputs && { inputs }) });

/** conv -> relu -> [conv -> relu -> conv] + skip -> relu -> pool -> linear */
function residualModel(): Model {
  const layers: Layer[] = [
    conv('conv1', 2, 4, 3, 1, 1),
    { type: 'relu', name: 'relu1' },
    conv('conv2', 4, 4, 3, 1, 1),
    { type: 'relu', name: 'relu2' },
    conv('conv3', 4, 4, 3, 1, 1),
    { type: 'add', name: 'add', inputs: ['conv3', 'relu1'] },
    { type: 'relu', name: 'relu3' },
    { type: 'maxpool2d', name: 'pool', kernel: [2, 2], stride: [2, 2], padding: [0, 0], ceilMode: false },
    { type: 'flatten', name: 'flatten' },
    { type: 'linear', name: 'fc', inFeatures: 4 * 4 * 4, outFeatures: 3, bias: true },
  ];
  return withWeights('residual', layers, 1);
}

/**
 * Two branches of one ReLU, concatenated: a max pool and a strided conv. The ReLU has two readers, so the pool may
 * not apply the ReLU's gate for it (the conv branch's gradient reaches the ReLU too).
 */
function branchModel(): Model {
  const layers: Layer[] = [
    conv('conv1', 2, 3, 3, 1, 1),
    { type: 'relu', name: 'relu1' },
    { type: 'maxpool2d', name: 'pool', kernel: [2, 2], stride: [2, 2], padding: [0, 0], ceilMode: false },
    conv('down', 3, 2, 3, 2, 1, ['relu1']),
    { type: 'concat', name: 'cat', inputs: ['pool', 'down'] },
    { type: 'relu', name: 'relu2' },
    { type: 'flatten', name: 'flatten' },
    { type: 'linear', name: 'fc', inFeatures: 5 * 4 * 4, outFeatures: 3, bias: true },
  ];
  return withWeights('branches', layers, 2);
}

function withWeights(name: string, layers: Layer[], seed: number): Model {
  const weights = initWeights(layers, 'kaiming', seed);
  // Non-zero biases so that every path's bias gradient is exercised.
  const rng = new Rng(seed + 100);
  for (const [key, t] of weights) if (key.endsWith('.bias')) t.data.forEach((_, i, a) => (a[i] = 0.1 * rng.normal()));
  return { name, input: [2, 8, 8], layers, weights, preprocess: { mean: [0, 0], std: [1, 1] } };
}

function randomInput(n: number, seed: number): Tensor {
  const rng = new Rng(seed);
  const t = tensor([n, 2, 8, 8]);
  t.data.forEach((_, i, a) => (a[i] = rng.normal()));
  return t;
}

// ---------------------------------------------------------------- float64 reference

type Rule = 'gradient' | 'deconvnet' | 'guided';
/** One item's value: shape without the batch, float64 data. */
interface Value {
  shape: number[];
  data: Float64Array;
}

const zeros = (shape: number[]): Value => ({ shape, data: new Float64Array(sizeOf(shape)) });

class Reference {
  readonly producers: number[][];
  constructor(readonly model: Model, private readonly w: Map<string, Float64Array> = floatWeights(model)) {
    this.producers = inferShapes(model).map((i) => i.inputs);
  }

  /** Every layer's output for one item (index -1 is the input), with the max pools' chosen positions. */
  forward(x: Value): { values: Map<number, Value>; argmax: Map<number, Int32Array> } {
    const values = new Map<number, Value>([[-1, x]]);
    const argmax = new Map<number, Int32Array>();
    this.model.layers.forEach((l, i) => {
      const ins = this.producers[i].map((p) => values.get(p)!);
      values.set(i, this.layerForward(l, ins, (a) => argmax.set(i, a)));
    });
    return { values, argmax };
  }

  private layerForward(l: Layer, ins: Value[], keep: (a: Int32Array) => void): Value {
    const [x] = ins;
    switch (l.type) {
      case 'conv2d': {
        const [c, h, w] = x.shape;
        const oh = Math.floor((h + 2 * l.padding[0] - l.kernel[0]) / l.stride[0]) + 1;
        const ow = Math.floor((w + 2 * l.padding[1] - l.kernel[1]) / l.stride[1]) + 1;
        const y = zeros([l.outChannels, oh, ow]);
        const wt = this.w.get(`${l.name}.weight`)!;
        const b = this.w.get(`${l.name}.bias`)!;
        this.convTaps(l, c, h, w, oh, ow, (o, yy, xx, ci, iy, ix, wi) => (y.data[(o * oh + yy) * ow + xx] += wt[wi] * x.data[(ci * h + iy) * w + ix]));
        for (let o = 0; o < l.outChannels; o++) for (let j = 0; j < oh * ow; j++) y.data[o * oh * ow + j] += b[o];
        return y;
      }
      case 'relu':
        return { shape: x.shape, data: x.data.map((v) => Math.max(0, v)) };
      case 'maxpool2d': {
        const [c, h, w] = x.shape;
        const oh = Math.floor((h - l.kernel[0]) / l.stride[0]) + 1;
        const ow = Math.floor((w - l.kernel[1]) / l.stride[1]) + 1;
        const y = zeros([c, oh, ow]);
        const at = new Int32Array(c * oh * ow);
        for (let ci = 0; ci < c; ci++) {
          for (let yy = 0; yy < oh; yy++) {
            for (let xx = 0; xx < ow; xx++) {
              let best = -Infinity;
              let arg = -1;
              for (let a = 0; a < l.kernel[0]; a++) {
                for (let bb = 0; bb < l.kernel[1]; bb++) {
                  const k = (ci * h + yy * l.stride[0] + a) * w + xx * l.stride[1] + bb;
                  if (x.data[k] > best) [best, arg] = [x.data[k], k];
                }
              }
              y.data[(ci * oh + yy) * ow + xx] = best;
              at[(ci * oh + yy) * ow + xx] = arg;
            }
          }
        }
        keep(at);
        return y;
      }
      case 'add':
        return { shape: x.shape, data: x.data.map((_, k) => ins.reduce((a, v) => a + v.data[k], 0)) };
      case 'concat': {
        const data = new Float64Array(ins.reduce((a, v) => a + v.data.length, 0));
        let off = 0;
        for (const v of ins) (data.set(v.data, off), (off += v.data.length));
        return { shape: [ins.reduce((a, v) => a + v.shape[0], 0), ...x.shape.slice(1)], data };
      }
      case 'flatten':
        return { shape: [x.data.length], data: x.data };
      case 'linear': {
        const wt = this.w.get(`${l.name}.weight`)!;
        const b = this.w.get(`${l.name}.bias`)!;
        const y = zeros([l.outFeatures]);
        for (let o = 0; o < l.outFeatures; o++) {
          let s = b[o];
          for (let k = 0; k < l.inFeatures; k++) s += wt[o * l.inFeatures + k] * x.data[k];
          y.data[o] = s;
        }
        return y;
      }
      default:
        throw new Error(`reference: no ${l.type}`);
    }
  }

  /** Visits every (output, input, weight) tap of a convolution that lands inside the input. */
  private convTaps(l: Extract<Layer, { type: 'conv2d' }>, c: number, h: number, w: number, oh: number, ow: number, f: (o: number, y: number, x: number, ci: number, iy: number, ix: number, wi: number) => void): void {
    const [k0, k1] = l.kernel;
    for (let o = 0; o < l.outChannels; o++) {
      for (let y = 0; y < oh; y++) {
        for (let x = 0; x < ow; x++) {
          for (let ci = 0; ci < c; ci++) {
            for (let a = 0; a < k0; a++) {
              const iy = y * l.stride[0] - l.padding[0] + a;
              if (iy < 0 || iy >= h) continue;
              for (let b = 0; b < k1; b++) {
                const ix = x * l.stride[1] - l.padding[1] + b;
                if (ix >= 0 && ix < w) f(o, y, x, ci, iy, ix, ((o * c + ci) * k0 + a) * k1 + b);
              }
            }
          }
        }
      }
    }
  }

  /**
   * The backward signal from `seed` at layer `from` to the input under a ReLU rule, written out per rule: gradient
   * gates by the ReLU's input sign, deconvnet rectifies the signal, guided does both. Also the weight gradients.
   */
  backward(x: Value, from: number, seed: Value, rule: Rule): { input: Value; weights: Map<string, Float64Array> } {
    const { values, argmax } = this.forward(x);
    const grads = new Map<number, Value>([[from, seed]]);
    const weights = new Map<string, Float64Array>();
    const addGrad = (p: number, g: Value) => {
      const known = grads.get(p);
      if (known) known.data.forEach((_, k, a) => (a[k] += g.data[k]));
      else grads.set(p, { shape: g.shape, data: Float64Array.from(g.data) });
    };
    for (let i = from; i >= 0; i--) {
      const g = grads.get(i);
      if (!g) continue;
      const l = this.model.layers[i];
      const ins = this.producers[i].map((p) => values.get(p)!);
      const [xin] = ins;
      const back = (k: number, v: Value) => addGrad(this.producers[i][k], v);
      switch (l.type) {
        case 'conv2d': {
          const [c, h, w] = xin.shape;
          const [, oh, ow] = g.shape;
          const wt = this.w.get(`${l.name}.weight`)!;
          const dx = zeros(xin.shape);
          const dw = new Float64Array(wt.length);
          const db = new Float64Array(l.outChannels);
          this.convTaps(l, c, h, w, oh, ow, (o, yy, xx, ci, iy, ix, wi) => {
            const go = g.data[(o * oh + yy) * ow + xx];
            dx.data[(ci * h + iy) * w + ix] += wt[wi] * go;
            dw[wi] += go * xin.data[(ci * h + iy) * w + ix];
          });
          for (let o = 0; o < l.outChannels; o++) for (let j = 0; j < oh * ow; j++) db[o] += g.data[o * oh * ow + j];
          weights.set(`${l.name}.weight`, dw);
          weights.set(`${l.name}.bias`, db);
          back(0, dx);
          break;
        }
        case 'relu': {
          const gate = (k: number) => (xin.data[k] > 0 ? 1 : 0);
          const r = (v: number) => Math.max(0, v);
          const f = { gradient: (v: number, k: number) => v * gate(k), deconvnet: (v: number) => r(v), guided: (v: number, k: number) => r(v) * gate(k) }[rule];
          back(0, { shape: g.shape, data: g.data.map(f) });
          break;
        }
        case 'maxpool2d': {
          const dx = zeros(xin.shape);
          argmax.get(i)!.forEach((k, j) => (dx.data[k] += g.data[j]));
          back(0, dx);
          break;
        }
        case 'add':
          ins.forEach((_, k) => back(k, g));
          break;
        case 'concat': {
          let off = 0;
          ins.forEach((v, k) => {
            back(k, { shape: v.shape, data: g.data.slice(off, off + v.data.length) });
            off += v.data.length;
          });
          break;
        }
        case 'flatten':
          back(0, { shape: xin.shape, data: g.data });
          break;
        case 'linear': {
          const wt = this.w.get(`${l.name}.weight`)!;
          const dx = zeros(xin.shape);
          const dw = new Float64Array(wt.length);
          for (let o = 0; o < l.outFeatures; o++) {
            for (let k = 0; k < l.inFeatures; k++) {
              dx.data[k] += wt[o * l.inFeatures + k] * g.data[o];
              dw[o * l.inFeatures + k] = g.data[o] * xin.data[k];
            }
          }
          weights.set(`${l.name}.weight`, dw);
          weights.set(`${l.name}.bias`, Float64Array.from(g.data));
          back(0, dx);
          break;
        }
        default:
          throw new Error(`reference: no ${l.type}`);
      }
    }
    return { input: grads.get(-1)!, weights };
  }
}

function floatWeights(model: Model): Map<string, Float64Array> {
  return new Map([...model.weights].map(([k, t]) => [k, Float64Array.from(t.data)]));
}

function item(t: Tensor, n: number): Value {
  const per = sizeOf(t.shape.slice(1));
  return { shape: t.shape.slice(1), data: Float64Array.from(t.data.subarray(n * per, (n + 1) * per)) };
}

/** max|ours - ref| / max|ref| over a whole batch. */
function assertNear(ours: ArrayLike<number>, ref: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(ours.length, ref.length, `${what}: length`);
  let err = 0;
  let scale = 0;
  for (let i = 0; i < ref.length; i++) {
    err = Math.max(err, Math.abs(ours[i] - ref[i]));
    scale = Math.max(scale, Math.abs(ref[i]));
  }
  assert.ok(scale > 0, `${what}: reference is all zero`);
  assert.ok(err <= tol * scale, `${what}: max|ours-ref|/max|ref| = ${(err / scale).toExponential(3)} > ${tol}`);
}

const concatItems = (vs: Value[]): Float64Array => {
  const out = new Float64Array(vs.reduce((a, v) => a + v.data.length, 0));
  vs.reduce((off, v) => (out.set(v.data, off), off + v.data.length), 0);
  return out;
};

// The fixtures' README tolerance; float32 ORT against a float64 reference.
const TOL = 1e-4;
const N = 3;

for (const build of [residualModel, branchModel]) {
  const model = build();
  describe(`graph model '${model.name}'`, () => {
    const engine = new Engine(model, { threads: 1 });
    const ref = new Reference(model);
    const input = randomInput(N, 7);
    const items = Array.from({ length: N }, (_, n) => item(input, n));
    const fc = model.layers.length - 1;
    after(() => engine.dispose());

    test('forward: every layer equals the float64 reference', async () => {
      const { activations } = await engine.forward(input, model.layers.map((l) => l.name));
      const refs = items.map((x) => ref.forward(x).values);
      model.layers.forEach((l, i) => assertNear(activations.get(l.name)!.data, concatItems(refs.map((r) => r.get(i)!)), TOL, l.name));
    });

    // Seeds: the logits of one class per item, and one inner unit whose signal meets a merge on the way down.
    const inner = model.layers.findIndex((l) => l.name === (model.name === 'residual' ? 'relu3' : 'relu2'));
    for (const [what, layer] of [['class logit', fc], ['inner unit', inner]] as const) {
      for (const rule of ['gradient', 'deconvnet', 'guided'] as const) {
        test(`${rule} from a ${what} equals the float64 reference of the rule`, async () => {
          const shape = inferShapes(model)[layer].outShape;
          const mask = tensor([N, ...shape]);
          for (let n = 0; n < N; n++) mask.data[n * sizeOf(shape) + ((5 * n + 1) % sizeOf(shape))] = 1;
          const { projection } = await engine.backward(input, { layer: model.layers[layer].name, mask, value: 'one' }, { rule, lrn: 'gradient' });
          const expected = items.map((x, n) => ref.backward(x, layer, item(mask, n), rule).input);
          assertNear(projection.data, concatItems(expected), TOL, `${rule} projection`);
        });
      }
    }

    test('the gradient rule equals finite differences of the class logits', async () => {
      const shape = inferShapes(model)[fc].outShape;
      const mask = tensor([N, ...shape]);
      for (let n = 0; n < N; n++) mask.data[n * shape[0] + (n % shape[0])] = 1;
      const { projection } = await engine.backward(input, { layer: 'fc', mask, value: 'one' }, { rule: 'gradient', lrn: 'gradient' });
      const h = 1e-6;
      for (let n = 0; n < N; n++) {
        const x = items[n];
        const logit = (v: Value) => ref.forward(v).values.get(fc)!.data[n % shape[0]];
        const numeric = Array.from(x.data, (_, k) => {
          const at = (d: number) => logit({ shape: x.shape, data: x.data.map((v, j) => (j === k ? v + d : v)) });
          return (at(h) - at(-h)) / (2 * h);
        });
        const per = sizeOf(x.shape);
        assertNear(projection.data.subarray(n * per, (n + 1) * per), numeric, TOL, `item ${n}: gradient vs finite differences`);
      }
    });

    test('train step: loss and every weight gradient equal the float64 reference and its finite differences', async () => {
      const labels = Int32Array.from({ length: N }, (_, n) => (2 * n + 1) % 3);
      const { loss, grads } = await engine.trainStep(input, labels, model.weights);
      const lossOf = (r: Reference) =>
        items.reduce((a, x, n) => {
          const z = r.forward(x).values.get(fc)!.data;
          const m = Math.max(...z);
          return a - (z[labels[n]] - m - Math.log(z.reduce((s, v) => s + Math.exp(v - m), 0)));
        }, 0) / N;
      assert.ok(Math.abs(loss - lossOf(ref)) <= TOL * Math.abs(loss), `loss ${loss} vs reference ${lossOf(ref)}`);
      // d(mean cross-entropy)/d(logits) = (softmax - onehot) / N, then the gradient rule down to every weight.
      const expected = new Map<string, Float64Array>();
      items.forEach((x, n) => {
        const z = ref.forward(x).values.get(fc)!.data;
        const m = Math.max(...z);
        const e = z.map((v) => Math.exp(v - m));
        const total = e.reduce((a, v) => a + v, 0);
        const seed = { shape: [z.length], data: e.map((v, k) => (v / total - (k === labels[n] ? 1 : 0)) / N) };
        for (const [key, g] of ref.backward(x, fc, seed, 'gradient').weights) {
          const acc = expected.get(key);
          if (acc) acc.forEach((_, k, a) => (a[k] += g[k]));
          else expected.set(key, Float64Array.from(g));
        }
      });
      assert.deepEqual([...grads.keys()].sort(), [...model.weights.keys()].sort());
      const rng = new Rng(3);
      const w64 = floatWeights(model);
      for (const [key, g] of grads) {
        assertNear(g, expected.get(key)!, TOL, `dLoss/d${key}`);
        // The reference's own gradient against a central difference of its loss along a random direction.
        const v = Float64Array.from(g, () => rng.normal());
        const h = 1e-6;
        const shifted = (d: number) => new Reference(model, new Map([...w64, [key, w64.get(key)!.map((x, i) => x + d * v[i])]]));
        const numeric = (lossOf(shifted(h)) - lossOf(shifted(-h))) / (2 * h);
        const analytic = expected.get(key)!.reduce((a, x, i) => a + x * v[i], 0);
        assert.ok(Math.abs(numeric - analytic) <= 1e-6 * Math.max(1, Math.abs(analytic)), `${key}: finite difference ${numeric} vs ${analytic}`);
      }
    });
  });
}

describe('graph structure', () => {
  const base = residualModel();
  const withLayers = (edit: (ls: Layer[]) => Layer[]): Model => ({ ...base, layers: edit(base.layers.map((l) => ({ ...l }))) });
  const relu = (name: string, inputs?: string[]): Layer => ({ type: 'relu', name, ...(inputs && { inputs }) });

  test('a graph that is not one DAG with one output is refused in one line naming the layer', () => {
    const cases: [string, Model, RegExp][] = [
      ['unknown producer', withLayers((ls) => ls.map((l) => (l.name === 'add' ? { ...l, inputs: ['conv3', 'relu9'] } : l))), /^layer 'add' reads unknown input 'relu9'$/],
      ['cycle', withLayers((ls) => ls.map((l) => (l.name === 'conv2' ? { ...l, inputs: ['relu2'] } : l))), /^layer 'conv2' is in a cycle through 'relu2'$/],
      ['used before defined', withLayers((ls) => [...ls.slice(0, 6), relu('side', ['relu1']), ...ls.slice(6)].map((l) => (l.name === 'conv2' ? { ...l, inputs: ['side'] } : l))), /^layer 'conv2' reads 'side', which is defined after it/],
      ['two outputs', withLayers((ls) => [...ls.slice(0, 2), relu('side', ['relu1']), { ...ls[2], inputs: ['relu1'] }, ...ls.slice(3)]), /^the model has 2 outputs \('side', 'fc'\); it must end in exactly one layer$/],
      ['reads itself', withLayers((ls) => ls.map((l) => (l.name === 'relu2' ? { ...l, inputs: ['relu2'] } : l))), /^layer 'relu2' is in a cycle through 'relu2'$/],
    ];
    for (const [what, model, message] of cases) {
      assert.throws(() => inferShapes(model), { message }, what);
      assert.throws(() => validateModel(model), { message }, what);
    }
  });

  test('merges check their input shapes', () => {
    const model = withLayers((ls) => ls.map((l) => (l.name === 'add' ? { ...l, inputs: ['conv3', 'input'] } : l)));
    assert.throws(() => inferShapes(model), { message: /^layer 'add' \(add\): inputs of shapes \[4,8,8\], \[2,8,8\] differ$/ });
  });

  test('receptive field of a merge: the largest extent over its paths', () => {
    const infos = inferShapes(base);
    const at = (name: string) => infos.find((i) => i.layer.name === name)!.rf;
    // relu1 sees 3x3 (start -1); the conv2-conv3 path 7x7 (start -3): the sum sees the larger.
    assert.deepEqual(at('relu1'), { size: [3, 3], jump: [1, 1], start: [-1, -1], global: false });
    assert.deepEqual(at('add'), { size: [7, 7], jump: [1, 1], start: [-3, -3], global: false });
    const branches = inferShapes(branchModel());
    const cat = branches.find((i) => i.layer.name === 'cat')!;
    // pool: 4x4 from -1, jump 2; the strided conv: 5x5 from -2, jump 2; the union spans -2 .. 3.
    assert.deepEqual(cat.rf, { size: [5, 5], jump: [2, 2], start: [-2, -2], global: false });
    assert.deepEqual(cat.outShape, [5, 4, 4]);
  });

  test('JSON: inputs are written only where they differ from the chain; chains read and write as before', () => {
    const json = layersToJson(base.layers);
    assert.deepEqual(json.filter((j) => 'inputs' in j).map((j) => j.name), ['add']);
    assert.deepEqual(Object.keys(json.find((j) => j.name === 'add')!), ['type', 'name', 'inputs']);
    assert.deepEqual(json.map(layerFromJson), base.layers);
    // An explicit input equal to the default is dropped on write.
    const explicit = base.layers.map((l, i) => (i === 2 ? { ...l, inputs: ['relu1'] } : l));
    assert.equal(JSON.stringify(layersToJson(explicit)), JSON.stringify(json));
    const zoo = createZooModel('zfnet-small');
    assert.ok(!JSON.stringify(layersToJson(zoo.layers)).includes('inputs'));
  });

  test('a graph model survives a safetensors round trip', () => {
    const path = join(mkdtempSync(join(tmpdir(), 'convscope-graph-')), 'residual.safetensors');
    writeSafetensorsModel(path, base);
    const back = readSafetensorsModel(path);
    assert.deepEqual(back.layers, base.layers);
    assert.deepEqual(inferShapes(back).map((i) => i.inputs), inferShapes(base).map((i) => i.inputs));
  });
});

describe('incremental occlusion through branches and merges', () => {
  const model = residualModel();
  const engine = new Engine(model, { threads: 1 });
  const branches = branchModel();
  const branchEngine = new Engine(branches, { threads: 1 });
  after(() => Promise.all([engine.dispose(), branchEngine.dispose()]));

  test('the planner carries boxes through the residual add (union of its inputs) and the concat', () => {
    const boxes: [number, number, number, number][] = [[0, 0, 3, 3], [2, 4, 5, 7]];
    const plan = planIncremental(inferShapes(model), boxes, { fullFraction: 1 });
    const name = (i: number) => model.layers[i].name;
    assert.deepEqual(plan.segments.map((s) => `${name(s.from)}..${name(s.to)}`), ['conv1..relu1', 'conv2..relu2', 'conv3..conv3', 'add..relu3']);
    const add = plan.segments[3];
    // The add reads conv3 (box widened by two 3x3 convs) and relu1 (one conv): the union is conv3's box.
    assert.deepEqual(add.inputs, [4, 1]);
    assert.deepEqual(add.size, plan.segments[2].size);
    // relu1 is read by conv2 and, past its run, by the add: its box is exposed.
    assert.deepEqual(plan.segments[0].exposed, [1]);
    // The pool's box would cover its whole 4x4 map: full from there.
    assert.equal(name(plan.tailFrom), 'pool');
    assert.deepEqual(plan.tailInputs, [6]);
    const cat = planIncremental(inferShapes(branches), boxes, { fullFraction: 1 });
    assert.ok(cat.segments.some((s) => branches.layers[s.from].name === 'cat' && s.inputs.length === 2));
  });

  for (const [label, m, e] of [['residual', model, () => engine], ['branches', branches, () => branchEngine]] as const) {
    for (const fullFraction of [1, 0.75]) {
      test(`${label}, fullFraction ${fullFraction}: incremental paper maps and attribution equal full recomputation`, async () => {
        const input = randomInput(1, 11);
        const common = { window: 3, stride: 2, target: 1, fill: 0 as const, fullFraction };
        const paper = { ...common, mode: 'paper' as const, layer: m.layers[m.layers.length - 4].name };
        const inc = await occlusionMaps(e(), input, { ...paper, incremental: true });
        const full = await occlusionMaps(e(), input, { ...paper, incremental: false });
        assert.ok(inc.flops.incremental! < inc.flops.full, 'the plan computes less than full recomputation');
        assertNear(inc.activation.data, full.activation.data, TOL, 'activation map');
        assertNear(inc.probability.data, full.probability.data, TOL, 'probability map');
        const a = await occlusionMaps(e(), input, { ...common, mode: 'attribution', incremental: true });
        const b = await occlusionMaps(e(), input, { ...common, mode: 'attribution', incremental: false });
        if (a.mode !== 'attribution' || b.mode !== 'attribution') throw new Error('attribution mode expected');
        assertNear(a.attribution.data, b.attribution.data, TOL, 'attribution');
      });
    }
  }

  test('each occluded logit equals the float64 reference, occluding by hand', async () => {
    const input = randomInput(1, 11);
    const inc = await occlusionMaps(engine, input, { mode: 'attribution', window: 3, stride: 2, target: 1, fill: 0, fullFraction: 1 });
    const ref = new Reference(model);
    const { ys, xs } = inc.grid;
    const base0 = ref.forward(item(input, 0)).values.get(model.layers.length - 1)!.data[1];
    const expected = inc.grid.boxes.map(([y0, x0, y1, x1]) => {
      const x = item(input, 0);
      const [c, h, w] = x.shape;
      for (let ci = 0; ci < c; ci++) for (let y = y0; y < y1; y++) for (let xx = x0; xx < x1; xx++) x.data[(ci * h + y) * w + xx] = 0;
      return base0 - ref.forward(x).values.get(model.layers.length - 1)!.data[1];
    });
    assert.equal(expected.length, ys.length * xs.length);
    assertNear(inc.delta.data, expected, TOL, 'occluded logit drop');
  });
});

describe('ablation of a graph model', () => {
  // A residual block under one module name, as a torch export names it.
  const model = withWeights('blocks', [
    conv('conv1', 2, 4, 3, 1, 1),
    { type: 'relu', name: 'relu1' },
    conv('block.conv_a', 4, 4, 3, 1, 1),
    { type: 'relu', name: 'block.relu_a' },
    conv('block.conv_b', 4, 4, 3, 1, 1),
    { type: 'add', name: 'block.add', inputs: ['block.conv_b', 'relu1'] },
    { type: 'relu', name: 'block.relu' },
    { type: 'maxpool2d', name: 'pool', kernel: [2, 2], stride: [2, 2], padding: [0, 0], ceilMode: false },
    { type: 'flatten', name: 'flatten' },
    { type: 'linear', name: 'fc', inFeatures: 4 * 4 * 4, outFeatures: 3, bias: true },
  ], 3);

  test('a residual block removed whole is the identity: its readers read the skip connection', async () => {
    const { model: ablated, removed, reinitialised } = ablateModel(model, ['block']);
    assert.deepEqual(removed, ['block.conv_a', 'block.relu_a', 'block.conv_b', 'block.add', 'block.relu']);
    assert.deepEqual(ablated.layers.map((l) => l.name), ['conv1', 'relu1', 'pool', 'flatten', 'fc']);
    // A chain again: no layer names its inputs.
    assert.ok(ablated.layers.every((l) => l.inputs === undefined));
    // fc's features changed (the block's convs are gone); conv1 keeps its weights.
    assert.deepEqual(reinitialised, ['fc']);
    assert.deepEqual(ablated.weights.get('conv1.weight'), model.weights.get('conv1.weight'));
    const x = randomInput(1, 5);
    const a = new Engine(ablated, { threads: 1 });
    const b = new Engine(model, { threads: 1 });
    try {
      const pooled = (await a.forward(x, ['pool'])).activations.get('pool')!;
      const relu1 = (await b.forward(x, ['relu1'])).activations.get('relu1')!;
      // The pool of the original relu1, by hand.
      const expected = Array.from({ length: 4 * 4 * 4 }, (_, i) => {
        const [c, y, xx] = [Math.floor(i / 16), Math.floor(i / 4) % 4, i % 4];
        const at = (dy: number, dx: number) => relu1.data[(c * 8 + 2 * y + dy) * 8 + 2 * xx + dx];
        return Math.max(at(0, 0), at(0, 1), at(1, 0), at(1, 1));
      });
      assert.deepEqual(Array.from(pooled.data), expected);
    } finally {
      await Promise.all([a.dispose(), b.dispose()]);
    }
  });

  test('one conv of a branch removed: the next reads its input and is retrained; a lone add is refused in one line', () => {
    const { model: ablated, reinitialised } = ablateModel(model, ['block.conv_a']);
    const infos = inferShapes(ablated);
    const convB = infos.find((i) => i.layer.name === 'block.conv_b')!;
    assert.deepEqual(convB.inputs.map((p) => ablated.layers[p].name), ['relu1']);
    assert.deepEqual(ablated.layers.find((l) => l.name === 'block.add')?.inputs, ['block.conv_b', 'relu1']);
    assert.deepEqual(reinitialised, ['block.conv_b', 'fc']);
    validateModel(ablated);
    assert.throws(() => ablateModel(model, ['block.add']), /^Error: ablation: without block\.add its readers would read block\.conv_b and relu1; remove all but one of its input branches too$/);
  });
});
