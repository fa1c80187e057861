import { createHash } from 'node:crypto';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Rect } from '../util/rect.js';
import { openImageFolder } from './folder.js';
import { findIdxPair, openFashionMnist, openIdxDataset } from './idx.js';
import type { RgbImage } from './image.js';
import { openShapes, parseShapesSpec, type ShapesOptions } from './shapes.js';
import { checkIndex, splitIndices } from './split.js';

export { checkIndex, mixSeed, seededPermutation, splitIndices } from './split.js';
export { openImageFolder, type ImageFolder, type ImageFolderOptions } from './folder.js';
export { FASHION_MNIST_CLASSES, findIdxPair, openFashionMnist, openIdxDataset, parseIdx, readIdx } from './idx.js';
export { openShapes, renderShape, SHAPE_CLASSES, type ShapesOptions } from './shapes.js';

export type Split = 'train' | 'val' | 'test';
export const SPLITS: readonly Split[] = ['train', 'val', 'test'];


export interface Item {
  /** Always `dataset.channels` channels. */
  image: RgbImage;
  /** -1 for unlabelled data. */
  label: number;
  /** Human-readable and unique within the dataset, e.g. `cat/001.jpg` or `train/123`. */
  name: string;
  /** The object's bounding box in the image's pixels. */
  box?: Rect;
}

/**
 * Labelled images with random access by index, so a run can visit them in a seeded order and resume at any batch.
 * `item(i)` may reject (a file that does not decode); the batch iterator skips such items and names them.
 */
export interface Dataset {
  name: string;
  /** Empty for unlabelled data (a flat folder of images), whose items have label -1. */
  classes: string[];
  size: number;
  channels: 1 | 3;
  /** [height, width] when every item has the same size (synthetic, IDX); absent for folders of photos. */
  imageSize?: [number, number];
  item(i: number): Promise<Item>;
  /** The label without decoding, for class counts, stratification and summaries. */
  label(i: number): number;
  /** The item's name without decoding, so a failed item can still be named. */
  itemName(i: number): string;
}

/** An item that could not be read; runs carry on without it and list it in their summary. */
export interface Skipped {
  index: number;
  name: string;
  reason: string;
}

/** A view of some of a dataset's items, re-indexed 0..indices.length-1; classes stay those of the whole set. */
export function subset(ds: Dataset, indices: ArrayLike<number>, name = `${ds.name}[subset of ${indices.length}]`): Dataset {
  const map = Int32Array.from(indices as ArrayLike<number>);
  for (const i of map) checkIndex(ds, i);
  const view: Dataset = {
    name,
    classes: ds.classes,
    size: map.length,
    channels: ds.channels,
    imageSize: ds.imageSize,
    item: (i) => {
      checkIndex(view, i);
      return ds.item(map[i]);
    },
    label: (i) => {
      checkIndex(view, i);
      return ds.label(map[i]);
    },
    itemName: (i) => {
      checkIndex(view, i);
      return ds.itemName(map[i]);
    },
  };
  return view;
}

// ---------------------------------------------------------------- opening by name

export interface OpenOptions {
  /**
   * Default: train for shapes, IDX and folders with split sub-folders. A folder without them is one split, every
   * image in it, whatever the split asked for: cut a held-out set from it with openTrainAndHeldOut.
   */
  split?: Split;
  /** Where a named dataset's files are (`--data PATH`), e.g. the directory of Fashion-MNIST's .gz files. */
  data?: string;
  /** Options for `shapes`; `shapes:k=v,...` in the spec overrides them. */
  shapes?: ShapesOptions;
  /** Class names for IDX data, overriding the defaults (Fashion-MNIST's names or digits). */
  classes?: string[];
  /** Channels of a folder's items (default 3); synthetic shapes are RGB and IDX grey whatever this says. */
  channels?: 1 | 3;
}

export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';

/**
 * A dataset from a spec: `shapes` (or `shapes:size=64,count=5000,seed=1,split=val`), `fashion-mnist`, a folder
 * of class sub-folders (ImageFolder; `train`/`val`/`test` sub-folders are used as splits when present), a folder
 * holding IDX files, an IDX images or labels file, or an IDX file prefix such as `data/train`.
 */
export async function openDataset(spec: string, opts: OpenOptions = {}): Promise<Dataset> {
  if (spec === 'shapes' || spec.startsWith('shapes:')) {
    const fromSpec = parseShapesSpec(spec.slice('shapes'.length).replace(/^:/, ''));
    return openShapes({ ...opts.shapes, ...fromSpec.options }, fromSpec.split ?? opts.split ?? 'train');
  }
  if (spec === 'fashion-mnist') return openFashionMnist(idxSplit(opts.split, 'fashion-mnist'), opts.data ?? FASHION_MNIST_DIR);
  const isDir = existsSync(spec) && statSync(spec).isDirectory();
  if (isDir && (findIdxPair(spec, 'train') || findIdxPair(spec, 'test'))) {
    const split = idxSplit(opts.split, spec);
    const pair = findIdxPair(spec, split);
    if (!pair) throw new Error(`${spec} has no ${split} IDX files (${split === 'train' ? 'train' : 't10k or test'}-images-idx3-ubyte[.gz])`);
    return openIdxDataset(pair.images, pair.labels, { classes: opts.classes, name: `${spec} (${split})` });
  }
  if (isDir) return openFolderSplit(spec, opts);
  const pair = findIdxPair(spec);
  if (pair) return openIdxDataset(pair.images, pair.labels, { classes: opts.classes });
  if (!existsSync(spec) && !/[\\/.]/.test(spec)) {
    throw new Error(`unknown dataset '${spec}': use shapes, fashion-mnist, a folder of class sub-folders, or IDX files`);
  }
  throw new Error(`no dataset at ${spec}: not a folder, an IDX file or an IDX file prefix (PREFIX-images-idx3-ubyte[.gz])`);
}

async function openFolderSplit(root: string, opts: OpenOptions): Promise<Dataset> {
  const folder = { channels: opts.channels };
  if (!hasSplitLayout(root)) return openImageFolder(root, folder);
  const split = opts.split ?? 'train';
  const splitDir = join(root, split);
  if (!(existsSync(splitDir) && statSync(splitDir).isDirectory())) throw new Error(`${root} has no ${split} folder (it has ${SPLITS.filter((s) => existsSync(join(root, s))).join(', ')})`);
  return openImageFolder(splitDir, folder);
}

/**
 * Whether a spec names data with splits of its own: the built-in sets, IDX files and folders with train/val/test
 * sub-folders. Any other folder is one split.
 */
export function hasOwnSplits(spec: string): boolean {
  return !(existsSync(spec) && statSync(spec).isDirectory()) || Boolean(findIdxPair(spec, 'train') || findIdxPair(spec, 'test')) || hasSplitLayout(spec);
}

/** Throws one line when `ds` has no labels (a flat folder of images): `what` needs them. */
export function requireLabels(ds: Dataset, what: string): void {
  if (ds.classes.length === 0) throw new Error(`${what} needs labelled images, and ${ds.name} has no class sub-folders (ROOT/CLASS/IMAGE.jpg)`);
}

/** ROOT/train/CLASS/... (with val/test beside it): ImageNet's layout; classes called train, val, test would be odd. */
function hasSplitLayout(root: string): boolean {
  const dirs = readdirSync(root, { withFileTypes: true }).filter((e) => !e.name.startsWith('.') && (e.isDirectory() || e.isSymbolicLink()));
  return dirs.some((e) => e.name === 'train') && dirs.every((e) => (SPLITS as readonly string[]).includes(e.name));
}

/** IDX data comes as train and t10k files only; a validation set is cut from train with splitIndices. */
function idxSplit(split: Split | undefined, what: string): 'train' | 'test' {
  if (split === 'val') throw new Error(`${what} has train and test files only; cut a validation set from train with splitIndices`);
  return split === 'test' ? 'test' : 'train';
}

/** What identifies a dataset for a folder made from it: its name, size, classes and a hash of three items' pixels. */
export interface DatasetIdentity {
  name: string;
  size: number;
  classes: number;
  /** sha256 (hex, 16 digits) of the first, middle and last items' sizes, labels and pixels. */
  sample: string;
}

export async function datasetIdentity(ds: Dataset): Promise<DatasetIdentity> {
  const hash = createHash('sha256');
  for (const i of [...new Set([0, Math.floor(ds.size / 2), ds.size - 1])].filter((i) => i >= 0)) {
    try {
      const item = await ds.item(i);
      hash.update(`${i}:${item.image.width}x${item.image.height}x${item.image.channels}:${item.label};`);
      hash.update(item.image.data);
    } catch (e) {
      // An unreadable item is part of the identity too: the same data fails the same way.
      hash.update(`${i}:unreadable:${(e as Error).message};`);
    }
  }
  return { name: ds.name, size: ds.size, classes: ds.classes.length, sample: hash.digest('hex').slice(0, 16) };
}

/** Throws one line when `ds` is not the dataset a folder was made from (`what` names the folder). */
export async function checkSameDataset(ds: Dataset, recorded: DatasetIdentity | undefined, what: string): Promise<void> {
  if (!recorded) return; // a folder written before identities were recorded
  const now = await datasetIdentity(ds);
  if (now.size !== recorded.size || now.classes !== recorded.classes || now.sample !== recorded.sample) {
    throw new Error(`${what} was made from ${recorded.name} (${recorded.size} images), not from ${now.name} (${now.size} images): give the --data it was made from`);
  }
}
