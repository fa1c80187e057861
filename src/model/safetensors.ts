import { readFileSync } from 'node:fs';
import { sizeOf, type Tensor } from '../tensor.js';
import { writeFileAtomic } from '../util/fs.js';
import { layerFromJson, layersToJson, type LayerJson, type Model } from './layers.js';
import { halfToFloat } from '../util/half.js';

export interface SafetensorsFile {
  tensors: Map<string, Tensor>;
  metadata: Record<string, string>;
}

export function decodeSafetensors(buf: Uint8Array, what: string): SafetensorsFile {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 8) throw new Error(`${what} is not a safetensors file (too short)`);
  const headerLen = Number(b.readBigUInt64LE(0));
  if (headerLen <= 0 || 8 + headerLen > b.length) throw new Error(`${what} is not a safetensors file (bad header length)`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(b.toString('utf8', 8, 8 + headerLen));
  } catch {
    throw new Error(`${what} is not a safetensors file (header is not JSON)`);
  }
  const data = b.subarray(8 + headerLen);
  const tensors = new Map<string, Tensor>();
  let metadata: Record<string, string> = {};
  const ranges: [number, number, string][] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = (entry ?? {}) as Record<string, string>;
      continue;
    }
    const { dtype, shape, data_offsets: offsets } = (entry ?? {}) as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const isCount = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;
    if (!Array.isArray(shape) || !shape.every(isCount)) throw new Error(`${what}: tensor '${name}' has shape ${JSON.stringify(shape)}; a shape is a list of non-negative integers`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) throw new Error(`${what}: tensor '${name}' has data_offsets ${JSON.stringify(offsets)}; they are two non-negative integers`);
    if (typeof dtype !== 'string') throw new Error(`${what}: tensor '${name}' has no dtype`);
    const n = sizeOf(shape as number[]);
    const [start, end] = offsets as [number, number];
    if (end > data.length || start > end) throw new Error(`${what}: tensor '${name}' lies past the end of the file (truncated?)`);
    ranges.push([start, end, name]);
    // The byte count is checked against the shape before anything is allocated: a shape of 1e12 is an error, not a crash.
    const width = { F32: 4, F64: 8, F16: 2, BF16: 2, I64: 8, I32: 4, U8: 1, BOOL: 1 }[dtype];
    if (width === undefined) throw new Error(`${what}: tensor '${name}' has dtype ${dtype}, which convscope does not read`);
    if (end - start !== n * width) throw new Error(`${what}: tensor '${name}' has ${end - start} bytes for ${n} ${dtype} values`);
    const dv = new DataView(data.buffer, data.byteOffset + start, end - start);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      switch (dtype) {
        case 'F32': out[i] = dv.getFloat32(i * 4, true); break;
        case 'F64': out[i] = dv.getFloat64(i * 8, true); break;
        case 'F16': out[i] = halfToFloat(dv.getUint16(i * 2, true)); break;
        case 'BF16': out[i] = new Float32Array(new Uint32Array([dv.getUint16(i * 2, true) << 16]).buffer)[0]; break;
        case 'I64': out[i] = Number(dv.getBigInt64(i * 8, true)); break;
        case 'I32': out[i] = dv.getInt32(i * 4, true); break;
        default: out[i] = dv.getUint8(i);
      }
    }
    tensors.set(name, { shape: shape as number[], data: out });
  }
  // The tensors tile the data section: none overlaps another, none leaves bytes unaccounted for.
  ranges.sort((a, b) => a[0] - b[0]);
  let covered = 0;
  for (const [start, end, name] of ranges) {
    if (start !== covered) throw new Error(`${what}: tensor '${name}' starts at byte ${start} of the data, ${start < covered ? 'inside the tensor before it' : `leaving bytes ${covered}..${start} unused`}`);
    covered = end;
  }
  if (covered !== data.length) throw new Error(`${what}: the data section has ${data.length} bytes, its tensors cover ${covered}`);
  return { tensors, metadata };
}

export function encodeSafetensors(tensors: Map<string, Tensor>, metadata: Record<string, string>): Buffer {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  const entries = [...tensors.entries()];
  for (const [name, t] of entries) {
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + headerBytes.length + offset);
  out.writeBigUInt64LE(BigInt(headerBytes.length), 0);
  headerBytes.copy(out, 8);
  let pos = 8 + headerBytes.length;
  for (const [, t] of entries) {
    Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).copy(out, pos);
    pos += t.data.byteLength;
  }
  return out;
}

const MEAN_IMAGE_KEY = 'preprocess.mean_image';

/** A model from a safetensors file whose `__metadata__.architecture` lists the layers (the format convscope writes). */
export function modelFromSafetensors(buf: Uint8Array, path: string): Model {
  const { tensors, metadata } = decodeSafetensors(buf, path);
  if (!metadata.architecture) {
    throw new Error(`${path} has no __metadata__.architecture: convscope needs the layer list (save with convscope, or import the ONNX export instead)`);
  }
  let layers;
  let input: { shape?: number[]; mean_rgb?: number[]; mean?: number[]; std?: number[] };
  try {
    layers = (JSON.parse(metadata.architecture) as LayerJson[]).map(layerFromJson);
    input = metadata.input ? JSON.parse(metadata.input) : {};
  } catch (e) {
    throw new Error(`${path}: unreadable architecture metadata: ${(e as Error).message}`);
  }
  const shape = input.shape ?? [];
  const chw = (shape.length === 4 ? shape.slice(1) : shape) as [number, number, number];
  if (chw.length !== 3) throw new Error(`${path}: __metadata__.input.shape must be [N,C,H,W] or [C,H,W]`);
  const meanImage = tensors.get(MEAN_IMAGE_KEY);
  tensors.delete(MEAN_IMAGE_KEY);
  const mean = input.mean_rgb ?? input.mean ?? new Array(chw[0]).fill(0);
  return {
    name: metadata.name ?? path.replace(/^.*\//, '').replace(/\.safetensors$/, ''),
    input: chw,
    layers,
    weights: tensors,
    preprocess: { mean, std: input.std ?? new Array(chw[0]).fill(1), ...(meanImage ? { meanImage } : {}) },
    ...(metadata.classes ? { classes: JSON.parse(metadata.classes) as string[] } : {}),
  };
}

export function modelToSafetensors(model: Model): Buffer {
  const metadata: Record<string, string> = {
    format: 'pt',
    name: model.name,
    architecture: JSON.stringify(layersToJson(model.layers)),
    input: JSON.stringify({ shape: [1, ...model.input], normalization: '(u8 - mean) / std', mean_rgb: model.preprocess.mean, std: model.preprocess.std }),
  };
  if (model.classes) metadata.classes = JSON.stringify(model.classes);
  const tensors = new Map(model.weights);
  if (model.preprocess.meanImage) tensors.set(MEAN_IMAGE_KEY, model.preprocess.meanImage);
  return encodeSafetensors(tensors, metadata);
}

export function readSafetensorsModel(path: string): Model {
  return modelFromSafetensors(readFileSync(path), path);
}

export function writeSafetensorsModel(path: string, model: Model): void {
  writeFileAtomic(path, modelToSafetensors(model));
}
