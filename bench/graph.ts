// Graph-model benchmark (part of `npm run bench`): torchvision ResNet-18 at 224 px with seeded random weights,
// convscope on the ONNX files that the PyTorch peer (bench/peer_graph.py) exports from the very model it times.
// Works, each timed in the same run, interleaved, medians of the repeats: forward batch 32; one deconvnet projection
// of a unit of `layer3`; the train step of batch 16 (BatchNorm in training mode; convscope on the BN-preserving
// export); Captum's Occlusion loop against convscope's attribution mode (incremental), a 56 px window at stride 28
// and the paper's 50 px at stride 8. Agreement with the peer is checked on each work's result before timing.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { occlusionMaps } from '../src/analysis/occlusion.js';
import { maxUnit, projectUnits, ZF_SETTINGS } from '../src/analysis/project.js';
import { Engine } from '../src/engine/engine.js';
import { importOnnx } from '../src/model/onnx-import.js';
import { median, readNpy } from '../src/tensor.js';
import { relError, timeInterleaved } from './common.js';
import type { PeerProcess } from './peer.js';

export const GRAPH_MODELS = ['resnet18'] as const;
const SIZE = 224;
const LAYER = 'layer3';
const TRAIN_BATCH = 16;
const TOLERANCE = 1e-4;
const OCCLUSIONS: [number, number][] = [[56, 28], [50, 8]];

export interface GraphBenchArgs {
  batch: number;
  threads: number;
  repeats: number;
  warmup: number;
  gap: number;
}

interface Row {
  label: string;
  n: number;
  ours: number[];
  peers: number[][];
}

const fmt = (ms: number) => (ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2));

/**
 * Benchmarks one torchvision model against the given peers (at least one: the peer exports the model). Returns the
 * report's markdown and the agreement checks.
 */
export async function benchGraphModel(name: string, args: GraphBenchArgs, peers: PeerProcess[], tmp: string): Promise<{ markdown: string; failed: string[] }> {
  if (peers.length === 0) throw new Error(`${name}: the graph benchmark needs --peer (PyTorch builds and exports the model)`);
  const setup = { cmd: 'setup', threads: args.threads, model: name, size: SIZE, dir: tmp, layer: LAYER, batch: args.batch, train_batch: TRAIN_BATCH };
  const info = await peers[0].request(setup);
  for (const p of peers.slice(1)) await p.request(setup);
  const layerTensor = info.layer_tensor as string;
  const eval_ = importOnnx(readFileSync(join(tmp, 'model.onnx')), `${name}.onnx`);
  const layer = eval_.tensors?.get(layerTensor);
  if (!layer) throw new Error(`${name}: no layer carries ONNX tensor ${layerTensor}`);
  const train = importOnnx(readFileSync(join(tmp, 'model_bn.onnx')), `${name}-bn.onnx`).model;
  const model = eval_.model;
  const logits = model.layers[model.layers.length - 1].name;
  const [x, x1, xt] = ['x', 'x1', 'xt'].map((f) => readNpy(join(tmp, `${f}.npy`)));
  const labels = Int32Array.from(readNpy(join(tmp, 'labels.npy')).data);
  const engine = new Engine(model, { threads: args.threads });
  const trainer = new Engine(train, { threads: args.threads });
  try {
    const act = (await engine.forward(x1, [layer, logits])).activations;
    const a = act.get(layer)!;
    let best = { feature: 0, value: -Infinity, unit: { feature: 0, y: 0, x: 0 } };
    for (let f = 0; f < a.shape[1]; f++) {
      const m = maxUnit(a, 0, f);
      if (m.value > best.value) best = { feature: f, value: m.value, unit: m.unit };
    }
    const scores = act.get(logits)!.data;
    const target = scores.indexOf(Math.max(...scores));

    const out = join(tmp, 'peer_out.npy');
    const checks: { what: string; err: number }[] = [];
    const works: { label: string; n: number; ours: () => Promise<unknown>; peer: Record<string, unknown> }[] = [
      { label: `forward, batch ${args.batch}`, n: args.batch, ours: () => engine.forward(x, [logits]), peer: { work: 'forward' } },
      { label: `1 deconvnet projection (${LAYER} map ${best.feature} at (${best.unit.y},${best.unit.x}))`, n: 1, ours: () => projectUnits(engine, x1, layer, [best.unit], ZF_SETTINGS), peer: { work: 'project', feature: best.unit.feature, y: best.unit.y, x: best.unit.x } },
      { label: `train step (BatchNorm in training mode), batch ${TRAIN_BATCH}`, n: TRAIN_BATCH, ours: () => trainer.trainStep(xt, labels, train.weights), peer: { work: 'train_step' } },
      ...OCCLUSIONS.map(([w, s]) => ({
        label: `occlusion ${w} px stride ${s} (${(Math.ceil((SIZE - w) / s) + 1) ** 2} positions), vs Captum`,
        n: 1,
        ours: () => occlusionMaps(engine, x1, { mode: 'attribution', window: w, stride: s, target, fill: 'mean' }),
        peer: { work: 'occlusion', window: w, stride: s, target },
      })),
    ];

    for (const peer of peers) {
      await peer.request({ cmd: 'run', work: 'forward', out });
      checks.push({ what: `${peer.label} logits`, err: relError((await engine.forward(x, [logits])).activations.get(logits)!, readNpy(out)) });
      await peer.request({ cmd: 'run', ...works[1].peer, out });
      checks.push({ what: `${peer.label} projection`, err: relError((await projectUnits(engine, x1, layer, [best.unit], ZF_SETTINGS))[0].projection, readNpy(out)) });
      const loss = (await peer.request({ cmd: 'run', work: 'train_step', out })).loss as number;
      const step = await trainer.trainStep(xt, labels, train.weights);
      checks.push({ what: `${peer.label} train-step loss`, err: Math.abs(step.loss - loss) / Math.abs(loss) });
      const [w, s] = OCCLUSIONS[0];
      await peer.request({ cmd: 'run', work: 'occlusion', window: w, stride: s, target, out });
      const ours = await occlusionMaps(engine, x1, { mode: 'attribution', window: w, stride: s, target, fill: 'mean' });
      if (ours.mode !== 'attribution') throw new Error('attribution mode expected');
      checks.push({ what: `${peer.label} occlusion ${w}/${s}`, err: relError(ours.attribution, readNpy(out)) });
    }

    const rows: Row[] = [];
    for (const work of works) rows.push({ label: work.label, n: work.n, ...(await timeInterleaved(work.ours, peers, work.peer, args)) });

    const header = ['work', 'ours ms', ...peers.flatMap((p) => [`${p.label} ms`, `${p.label}/ours`])];
    const lines = [
      `### ${name} (3x${SIZE}x${SIZE}, torchvision, seeded random weights): median of ${args.repeats} after ${args.warmup} warm-up, interleaved, ${args.gap} ms idle before each call`,
      '',
      `| ${header.join(' | ')} |`,
      `| ${header.map(() => '---').join(' | ')} |`,
      ...rows.map((r) => `| ${[r.label, fmt(median(r.ours)), ...r.peers.flatMap((xs) => [fmt(median(xs)), (median(xs) / median(r.ours)).toFixed(2)])].join(' | ')} |`),
      '',
      `- convscope reads the peer's own exports: model.onnx (eval, BatchNorm folded) for forward, projection and occlusion; model_bn.onnx (every BatchNormalization kept) for the train step; ${LAYER} is layer '${layer}' (ONNX tensor ${layerTensor}).`,
      `- agreement, max|ours-theirs|/max|theirs| (tolerance ${TOLERANCE}): ${checks.map((c) => `${c.what} ${c.err.toExponential(2)} ${c.err <= TOLERANCE ? 'ok' : 'FAIL'}`).join('; ')}.`,
    ];
    return { markdown: lines.join('\n'), failed: checks.filter((c) => !(c.err <= TOLERANCE)).map((c) => c.what) };
  } finally {
    await Promise.all([engine.dispose(), trainer.dispose()]);
  }
}
