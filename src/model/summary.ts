import { IMAGE, MODEL_INPUT } from './graph.js';
import type { Model } from './layers.js';
import { inferShapes, type LayerInfo } from './shapes.js';

function si(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return String(n);
}

function rfText(info: LayerInfo): string {
  const { rf } = info;
  if (rf.global) return 'whole image';
  const sq = (p: [number, number]) => (p[0] === p[1] ? `${p[0]}` : `${p[0]}x${p[1]}`);
  return `${sq(rf.size)} /${sq(rf.jump)} @${sq(rf.start)}`;
}

/** One layer as `convscope inspect --json` lists it. */
export interface LayerRow {
  name: string;
  op: string;
  /** The ONNX node the layer came from and the tensor carrying its output (null for models not read from ONNX). */
  onnxNode: string | null;
  onnxOutput: string | null;
  /** Producer layers ('input' for the image). */
  inputs: string[];
  shape: number[];
  rf: { size: [number, number]; jump: [number, number]; start: [number, number]; global: boolean };
  params: number;
  flops: number;
}

/** Every layer in topological order (the logits last), with what `inspect` shows of it. */
export function layerRows(model: Model): LayerRow[] {
  const infos = inferShapes(model);
  return infos.map((i) => {
    const source = model.onnxSources?.get(i.layer.name);
    return {
      name: i.layer.name,
      op: i.layer.type,
      onnxNode: source?.node || null,
      onnxOutput: source?.output ?? null,
      inputs: i.inputs.map((p) => (p === IMAGE ? MODEL_INPUT : infos[p].layer.name)),
      shape: [...i.outShape],
      rf: { size: [...i.rf.size], jump: [...i.rf.jump], start: [...i.rf.start], global: i.rf.global },
      params: i.params,
      flops: i.flops,
    };
  });
}

/** The `convscope inspect` table: one row per layer with output shape, receptive field, parameters and FLOPs. */
export function modelTable(model: Model): string {
  const infos = inferShapes(model);
  const header = ['layer', 'type', 'output', 'receptive field (size /jump @start)', 'params', 'FLOPs'];
  const rows = infos.map((i) => [i.layer.name, i.layer.type, i.outShape.join('x'), rfText(i), si(i.params), si(i.flops)]);
  const totalParams = infos.reduce((a, i) => a + i.params, 0);
  const totalFlops = infos.reduce((a, i) => a + i.flops, 0);
  rows.push(['total', '', '', '', si(totalParams), si(totalFlops)]);
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (r: string[]) => r.map((v, c) => (c >= 4 ? v.padStart(widths[c]) : v.padEnd(widths[c]))).join('  ').trimEnd();
  return [
    `${model.name}: input ${model.input.join('x')} (C x H x W)`,
    line(header),
    widths.map((w) => '-'.repeat(w)).join('  '),
    ...rows.map(line),
    '',
    'receptive field: input pixels one unit sees; /jump: pixels between neighbouring units; @start: first pixel of unit (0,0) (negative = in the padding).',
    'FLOPs per image: 2 x multiply-adds for conv and linear layers, one per window element or value elsewhere.',
  ].join('\n');
}
