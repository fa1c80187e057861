import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import type { Dataset, Item } from './dataset.js';
import { checkIndex } from './split.js';

export const FASHION_MNIST_CLASSES = [
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
];

/** An IDX array of unsigned bytes (the only element type MNIST-like data uses). */
export interface IdxArray {
  dims: number[];
  data: Uint8Array;
}

const UBYTE = 0x08;
const TYPE_NAMES: Record<number, string> = { 0x08: 'ubyte', 0x09: 'byte', 0x0b: 'short', 0x0c: 'int', 0x0d: 'float', 0x0e: 'double' };

/** Gzip is recognised by its magic bytes, not the file name: renamed or decompressed copies are common. */
function maybeGunzip(buf: Uint8Array, what: string): Uint8Array {
  if (buf.length < 2 || buf[0] !== 0x1f || buf[1] !== 0x8b) return buf;
  try {
    return gunzipSync(buf);
  } catch (e) {
    const msg = (e as Error).message;
    throw new Error(`${what}: ${/unexpected end/i.test(msg) ? 'gzip stream is truncated' : `cannot gunzip: ${msg}`}`);
  }
}

/** Parses an IDX file's bytes (gzipped or raw), checking the magic number, the dimensions and the length. */
export function parseIdx(bytes: Uint8Array, what = 'IDX data', ndim?: number): IdxArray {
  const buf = maybeGunzip(bytes, what);
  if (buf.length < 4) throw new Error(`${what} is truncated: ${buf.length} bytes, not even an IDX header`);
  if (buf[0] !== 0 || buf[1] !== 0) throw new Error(`${what} is not an IDX file (magic ${hex(buf.subarray(0, 4))})`);
  const type = buf[2];
  const n = buf[3];
  if (type !== UBYTE) {
    throw new Error(`${what} holds ${TYPE_NAMES[type] ?? `type 0x${type.toString(16)}`} values; convscope reads unsigned-byte IDX`);
  }
  if (ndim !== undefined && n !== ndim) throw new Error(`${what} has ${n} dimensions; expected ${ndim}`);
  const header = 4 + 4 * n;
  if (buf.length < header) throw new Error(`${what} is truncated: ${buf.length} bytes, the header needs ${header}`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const dims = Array.from({ length: n }, (_, k) => dv.getUint32(4 + 4 * k, false));
  const count = dims.reduce((a, b) => a * b, 1);
  const have = buf.length - header;
  if (have < count) throw new Error(`${what} is truncated: ${have} data bytes for dimensions ${dims.join('x')} (${count} needed)`);
  if (have > count) throw new Error(`${what} has ${have - count} bytes beyond dimensions ${dims.join('x')}`);
  return { dims, data: buf.subarray(header) };
}

function hex(b: Uint8Array): string {
  return `0x${Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('')}`;
}

export function readIdx(path: string, ndim?: number): IdxArray {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(`cannot read ${path}: ${code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  return parseIdx(bytes, path, ndim);
}

/** Builds an IDX file's bytes: for tests, and for exporting a subset in the format other tools read. */
export function encodeIdx(dims: number[], data: Uint8Array): Uint8Array {
  const count = dims.reduce((a, b) => a * b, 1);
  if (data.length !== count) throw new Error(`encodeIdx: ${data.length} bytes for dimensions ${dims.join('x')}`);
  const out = new Uint8Array(4 + 4 * dims.length + count);
  const dv = new DataView(out.buffer);
  out[2] = UBYTE;
  out[3] = dims.length;
  dims.forEach((d, k) => dv.setUint32(4 + 4 * k, d, false));
  out.set(data, 4 + 4 * dims.length);
  return out;
}

export interface IdxDatasetOptions {
  classes?: string[];
  name?: string;
}

/** Grey images (N x rows x cols) with their labels (N), held in memory as the files' bytes. */
export function openIdxDataset(imagesPath: string, labelsPath: string, opts: IdxDatasetOptions = {}): Dataset {
  const images = readIdx(imagesPath);
  if (images.dims.length !== 3) throw new Error(`${imagesPath} has ${images.dims.length} dimensions; IDX images are N x rows x cols`);
  const labels = readIdx(labelsPath, 1);
  const [n, rows, cols] = images.dims;
  if (labels.dims[0] !== n) throw new Error(`${labelsPath} has ${labels.dims[0]} labels for the ${n} images of ${imagesPath}`);
  let maxLabel = -1;
  for (const l of labels.data) maxLabel = Math.max(maxLabel, l);
  const classes = opts.classes ?? (isFashion(imagesPath) ? FASHION_MNIST_CLASSES : Array.from({ length: maxLabel + 1 }, (_, k) => String(k)));
  if (maxLabel >= classes.length) throw new Error(`${labelsPath} has label ${maxLabel}, but there are only ${classes.length} classes`);
  const stem = basename(imagesPath).replace(/[-.]images.*$/, '');
  const per = rows * cols;
  const ds: Dataset = {
    name: opts.name ?? imagesPath,
    classes: [...classes],
    size: n,
    channels: 1,
    imageSize: [rows, cols],
    item: async (i: number): Promise<Item> => {
      checkIndex(ds, i);
      // A copy, so a caller that edits an item (occlusion, augmentation) cannot change the dataset.
      const data = images.data.slice(i * per, (i + 1) * per);
      return { image: { width: cols, height: rows, channels: 1, data }, label: labels.data[i], name: `${stem}/${i}` };
    },
    label: (i) => {
      checkIndex(ds, i);
      return labels.data[i];
    },
    itemName: (i) => {
      checkIndex(ds, i);
      return `${stem}/${i}`;
    },
  };
  return ds;
}

function isFashion(path: string): boolean {
  return /fashion/i.test(path);
}

const IDX_PREFIXES: Record<'train' | 'test', string[]> = { train: ['train'], test: ['t10k', 'test'] };
const IMAGE_SUFFIXES = ['-images-idx3-ubyte', '-images.idx3-ubyte'];

function firstExisting(paths: string[]): string | undefined {
  return paths.find((p) => existsSync(p) && statSync(p).isFile());
}

/** The images file for a prefix: PREFIX-images-idx3-ubyte (MNIST's own name) or .idx3-ubyte, gzipped or not. */
function imagesForPrefix(prefix: string): string | undefined {
  return firstExisting(IMAGE_SUFFIXES.flatMap((s) => [`${prefix}${s}.gz`, `${prefix}${s}`]));
}

function gzOrRaw(path: string): string | undefined {
  const raw = path.replace(/\.gz$/, '');
  return firstExisting([`${raw}.gz`, raw]);
}

/** Replaces in the file name only, so a directory called e.g. `images-idx3` is left alone. */
function renameBase(path: string, re: RegExp, to: string): string {
  return join(dirname(path), basename(path).replace(re, to));
}

const IMAGES_RE = /images([-.])idx3/;
const LABELS_RE = /labels([-.])idx1/;

/**
 * Finds an images/labels pair: with `split`, in directory `where` (train-... or t10k-... / test-...); without, `where`
 * is an images or labels file named like MNIST's, or a prefix such as `data/train`. Undefined when there is none.
 */
export function findIdxPair(where: string, split?: 'train' | 'test'): { images: string; labels: string } | undefined {
  let images: string | undefined;
  if (split) {
    for (const p of IDX_PREFIXES[split]) images ??= imagesForPrefix(join(where, p));
  } else if (existsSync(where) && statSync(where).isFile()) {
    if (IMAGES_RE.test(basename(where))) images = where;
    else if (LABELS_RE.test(basename(where))) images = gzOrRaw(renameBase(where, LABELS_RE, 'images$1idx3'));
  } else {
    images = imagesForPrefix(where);
  }
  if (!images) return undefined;
  const expected = renameBase(images, IMAGES_RE, 'labels$1idx1');
  const labels = gzOrRaw(expected);
  if (!labels) throw new Error(`no labels file beside ${images} (expected ${expected})`);
  return { images, labels };
}

/** Fashion-MNIST from `dir` (Debian's dataset-fashion-mnist installs it to /usr/share/datasets/fashion-mnist). */
export function openFashionMnist(split: 'train' | 'test', dir: string): Dataset {
  if (!existsSync(dir)) {
    throw new Error(`Fashion-MNIST not found: ${dir} does not exist (apt-get install dataset-fashion-mnist, or give --data PATH)`);
  }
  const pair = findIdxPair(dir, split);
  if (!pair) throw new Error(`Fashion-MNIST ${split} files not found in ${dir} (expected ${split === 'train' ? 'train' : 't10k'}-images-idx3-ubyte.gz)`);
  return openIdxDataset(pair.images, pair.labels, { classes: FASHION_MNIST_CLASSES, name: `fashion-mnist (${split})` });
}
