import { readFileSync } from 'node:fs';
import { errorLine } from './util/errors.js';
import { writeFileAtomic } from './util/fs.js';

/** A dense float32 array in row-major (NCHW) order. */
export interface Tensor {
  shape: number[];
  data: Float32Array;
}

export function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function tensor(shape: number[], data?: Float32Array): Tensor {
  const n = sizeOf(shape);
  if (data && data.length !== n) throw new Error(`tensor data has ${data.length} values, shape [${shape}] needs ${n}`);
  return { shape, data: data ?? new Float32Array(n) };
}

/** Batch element i of a tensor whose first dimension is the batch, as a view. */
export function batchItem(t: Tensor, i: number): Tensor {
  const per = sizeOf(t.shape.slice(1));
  return { shape: [1, ...t.shape.slice(1)], data: t.data.subarray(i * per, (i + 1) * per) };
}

export function concatBatch(items: Tensor[]): Tensor {
  if (items.length === 0) throw new Error('concatBatch of nothing');
  const rest = items[0].shape.slice(1);
  const n = items.reduce((a, t) => a + t.shape[0], 0);
  const out = tensor([n, ...rest]);
  let off = 0;
  for (const t of items) {
    out.data.set(t.data, off);
    off += t.data.length;
  }
  return out;
}

/** The middle value (the mean of the middle two for an even count). */
export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Throws a one-line error naming `what` and the first NaN or infinite value, if any. */
export function assertFinite(data: ArrayLike<number>, what: string): void {
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) throw new Error(`${what} contains ${data[i]} at index ${i}`);
  }
}

export function maxAbs(data: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < data.length; i++) {
    const a = Math.abs(data[i]);
    if (a > m) m = a;
  }
  return m;
}

// ---------------------------------------------------------------- .npy

const NPY_MAGIC = '\x93NUMPY';

export function encodeNpy(t: Tensor): Buffer {
  const shapeStr = t.shape.length === 1 ? `(${t.shape[0]},)` : `(${t.shape.join(', ')})`;
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shapeStr}, }`;
  const preamble = 10;
  const pad = 64 - ((preamble + header.length + 1) % 64);
  header = header + ' '.repeat(pad % 64) + '\n';
  const buf = Buffer.alloc(preamble + header.length + t.data.byteLength);
  buf.write(NPY_MAGIC, 0, 'latin1');
  buf[6] = 1;
  buf[7] = 0;
  buf.writeUInt16LE(header.length, 8);
  buf.write(header, preamble, 'latin1');
  Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).copy(buf, preamble + header.length);
  return buf;
}

export function decodeNpy(buf: Uint8Array, what = '.npy data'): Tensor {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 10 || b.toString('latin1', 0, 6) !== NPY_MAGIC) throw new Error(`${what} is not a .npy file`);
  const major = b[6];
  const headerLen = major === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = b.toString('latin1', start, start + headerLen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeStr = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || !fortran || shapeStr === undefined) throw new Error(`${what} has an unreadable .npy header`);
  if (fortran === 'True') throw new Error(`${what} is in Fortran order; save it C-contiguous`);
  const shape = shapeStr.split(',').map((s) => s.trim()).filter((s) => s.length > 0).map(Number);
  if (!shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new Error(`${what} has shape (${shapeStr.trim()}); a shape is non-negative integers`);
  const n = sizeOf(shape);
  if (!Number.isSafeInteger(n)) throw new Error(`${what} has shape (${shapeStr.trim()}), too large to read`);
  const body = b.subarray(start + headerLen);
  const readers: Record<string, [number, (dv: DataView, o: number) => number]> = {
    '<f4': [4, (dv, o) => dv.getFloat32(o, true)],
    '<f8': [8, (dv, o) => dv.getFloat64(o, true)],
    '|u1': [1, (dv, o) => dv.getUint8(o)],
    '|i1': [1, (dv, o) => dv.getInt8(o)],
    '<i4': [4, (dv, o) => dv.getInt32(o, true)],
    '<i8': [8, (dv, o) => Number(dv.getBigInt64(o, true))],
    '|b1': [1, (dv, o) => dv.getUint8(o)],
  };
  const reader = readers[descr];
  if (!reader) throw new Error(`${what} has dtype ${descr}; convscope reads float32/float64/int/uint8 .npy`);
  const [width, get] = reader;
  if (body.length < n * width) throw new Error(`${what} is truncated: ${body.length} bytes for ${n} values of ${descr}`);
  const dv = new DataView(body.buffer, body.byteOffset, n * width);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = get(dv, i * width);
  return { shape, data };
}

export function readNpy(path: string): Tensor {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(`cannot read ${path}: ${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a folder, not a .npy file' : errorLine(e)}`);
  }
  return decodeNpy(buf, path);
}

export function writeNpy(path: string, t: Tensor): void {
  writeFileAtomic(path, encodeNpy(t));
}
