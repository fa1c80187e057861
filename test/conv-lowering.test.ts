// Convolution forward, input gradient and weight gradient, as the Conv path and the im2col + GEMM path, against
// brute-force loops over many geometries (strides above the kernel, padding up to k-1, non-square, 1x1).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import ort from 'onnxruntime-node';
import { GraphBuilder } from '../src/onnx/builder.js';
import { emitBackward, emitForward } from '../src/engine/compile.js';
import type { Model, Pair } from '../src/model/layers.js';
import { inferShapes } from '../src/model/shapes.js';

interface Geometry { c: number; o: number; h: number; w: number; k: Pair; s: Pair; p: Pair }

const GEOMETRIES: Geometry[] = [
  { c: 3, o: 4, h: 7, w: 9, k: [3, 3], s: [1, 1], p: [1, 1] },
  { c: 2, o: 5, h: 8, w: 8, k: [5, 5], s: [2, 2], p: [2, 2] },
  { c: 2, o: 3, h: 9, w: 7, k: [3, 2], s: [2, 1], p: [2, 0] },
  { c: 3, o: 2, h: 10, w: 11, k: [2, 2], s: [3, 3], p: [1, 1] },
  { c: 4, o: 3, h: 6, w: 6, k: [1, 1], s: [1, 1], p: [0, 0] },
  { c: 2, o: 2, h: 12, w: 12, k: [7, 7], s: [2, 2], p: [3, 3] },
  { c: 1, o: 3, h: 5, w: 6, k: [3, 3], s: [1, 2], p: [2, 1] },
  // ResNet's downsampling: a 3x3 stride-2 conv (phase kernels 2x2, 2x1, 1x2, 1x1) and a 1x1 stride-2 (three phases zero).
  { c: 3, o: 4, h: 9, w: 8, k: [3, 3], s: [2, 2], p: [1, 1] },
  { c: 3, o: 4, h: 8, w: 9, k: [1, 1], s: [2, 2], p: [0, 0] },
  // Padding beyond k-1 at stride 1: the gradient's border rows are cut from a wider correlation.
  { c: 2, o: 3, h: 5, w: 6, k: [2, 1], s: [1, 1], p: [2, 1] },
];

function outSize(n: number, k: number, s: number, p: number): number {
  return Math.floor((n + 2 * p - k) / s) + 1;
}

function random(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let state = seed;
  return Float32Array.from({ length: n }, () => {
    state = (state * 16807) % 2147483647;
    return lo + ((hi - lo) * state) / 2147483647;
  });
}

/** y, dx, dW, db by direct summation in float64. */
function bruteForce(g: Geometry, n: number, x: Float32Array, wt: Float32Array, bias: Float32Array, seed: Float32Array) {
  const oh = outSize(g.h, g.k[0], g.s[0], g.p[0]);
  const ow = outSize(g.w, g.k[1], g.s[1], g.p[1]);
  const y = new Float64Array(n * g.o * oh * ow);
  const dx = new Float64Array(x.length);
  const dw = new Float64Array(wt.length);
  const db = new Float64Array(g.o);
  for (let b = 0; b < n; b++) {
    for (let o = 0; o < g.o; o++) {
      for (let yy = 0; yy < oh; yy++) {
        for (let xx = 0; xx < ow; xx++) {
          const yi = ((b * g.o + o) * oh + yy) * ow + xx;
          let acc = bias[o];
          db[o] += seed[yi];
          for (let c = 0; c < g.c; c++) {
            for (let a = 0; a < g.k[0]; a++) {
              const i = yy * g.s[0] + a - g.p[0];
              if (i < 0 || i >= g.h) continue;
              for (let e = 0; e < g.k[1]; e++) {
                const j = xx * g.s[1] + e - g.p[1];
                if (j < 0 || j >= g.w) continue;
                const xi = ((b * g.c + c) * g.h + i) * g.w + j;
                const wi = ((o * g.c + c) * g.k[0] + a) * g.k[1] + e;
                acc += wt[wi] * x[xi];
                dx[xi] += wt[wi] * seed[yi];
                dw[wi] += x[xi] * seed[yi];
              }
            }
          }
          y[yi] = acc;
        }
      }
    }
  }
  return { y, dx, dw, db, outShape: [n, g.o, oh, ow] };
}

/** A ReLU in front of the convolution makes the emitter produce the conv's input gradient (inputs are positive). */
function model(g: Geometry): Model {
  const layers: Model['layers'] = [
    { type: 'relu', name: 'relu0' },
    { type: 'conv2d', name: 'conv', inChannels: g.c, outChannels: g.o, kernel: g.k, stride: g.s, padding: g.p, bias: true },
  ];
  return { name: 'conv-lowering', input: [g.c, g.h, g.w], layers, weights: new Map() } as unknown as Model;
}

async function run(g: Geometry, gemm: boolean, n: number, x: Float32Array, wt: Float32Array, bias: Float32Array, seed: Float32Array, seedShape: number[]) {
  const m = model(g);
  const infos = inferShapes(m);
  const b = new GraphBuilder();
  const input = b.input('x', ['N', g.c, g.h, g.w]);
  b.input('conv.weight', [g.o, g.c, ...g.k]);
  b.input('conv.bias', [g.o]);
  const g0 = b.input('g', ['N', ...infos[1].outShape]);
  const trace = emitForward(b, m, infos, input, (key) => key, { upTo: 1, switches: false, dropout: 'identity', gemmSmallConvs: gemm });
  const back = emitBackward(b, m, infos, trace, 1, g0, (key) => key, { rule: 'gradient', lrn: 'gradient', weightGradients: true, gemmSmallConvs: gemm });
  const outs = { y: trace.outputs[1], dx: back.input!, dw: back.weightGrads.get('conv.weight')!, db: back.weightGrads.get('conv.bias')! };
  for (const [name, t] of Object.entries(outs)) b.op1('Identity', [t], {}, `out_${name}`);
  for (const name of Object.keys(outs)) b.output(`out_${name}`, ['?'] as unknown as number[]);
  const session = await ort.InferenceSession.create(b.encode('conv_lowering'), { logSeverityLevel: 3, intraOpNumThreads: 1 });
  const r = await session.run({
    x: new ort.Tensor('float32', x, [n, g.c, g.h, g.w]),
    'conv.weight': new ort.Tensor('float32', wt, [g.o, g.c, ...g.k]),
    'conv.bias': new ort.Tensor('float32', bias, [g.o]),
    g: new ort.Tensor('float32', seed, seedShape),
  });
  await session.release();
  return Object.fromEntries(Object.keys(outs).map((k) => [k, r[`out_${k}`]])) as Record<keyof typeof outs, ort.Tensor>;
}

function assertClose(actual: ort.Tensor, expected: Float64Array, what: string) {
  assert.equal(actual.data.length, expected.length, `${what}: length`);
  let err = 0;
  let scale = 0;
  const a = actual.data as Float32Array;
  for (let i = 0; i < a.length; i++) {
    err = Math.max(err, Math.abs(a[i] - expected[i]));
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  assert.ok(scale > 0, `${what}: reference is all zero`);
  assert.ok(err <= 1e-5 * scale, `${what}: max error ${err} vs scale ${scale}`);
}

test('conv forward, input gradient and weight gradient equal brute force, as Conv and as GEMM', async () => {
  const n = 3;
  for (const [gi, g] of GEOMETRIES.entries()) {
    const x = random(n * g.c * g.h * g.w, 11 + gi, 0.05, 1);
    const wt = random(g.o * g.c * g.k[0] * g.k[1], 101 + gi);
    const bias = random(g.o, 201 + gi);
    const ref0 = bruteForce(g, n, x, wt, bias, new Float32Array(n * g.o * outSize(g.h, g.k[0], g.s[0], g.p[0]) * outSize(g.w, g.k[1], g.s[1], g.p[1])));
    const seed = random(ref0.y.length, 301 + gi);
    const ref = bruteForce(g, n, x, wt, bias, seed);
    for (const gemm of [false, true]) {
      const got = await run(g, gemm, n, x, wt, bias, seed, ref.outShape);
      const what = `k${g.k} s${g.s} p${g.p} ${gemm ? 'gemm' : 'conv'}`;
      assert.deepEqual([...got.y.dims], ref.outShape, `${what}: output shape`);
      assertClose(got.y, ref.y, `${what} forward`);
      assertClose(got.dx, ref.dx, `${what} input gradient`);
      assertClose(got.dw, ref.dw, `${what} weight gradient`);
      assertClose(got.db, ref.db, `${what} bias gradient`);
    }
  }
});
