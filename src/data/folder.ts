import type { Dirent } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { extname, join } from 'node:path';
import type { Dataset, Item } from './dataset.js';
import { decodeImage, toChannels } from './image.js';
import { checkIndex } from './split.js';

export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.webp'];

export interface ImageFolderOptions {
  /** Channels of every item; grey files become RGB and vice versa. Default 3. */
  channels?: 1 | 3;
}

export interface ImageFolder extends Dataset {
  root: string;
  /** Item i's path relative to root, with `/` separators. */
  files: string[];
  /** Files in class folders that are not images by extension, left out. */
  ignored: number;
  /** Classes whose folders hold no image; they keep their index so labels match torchvision's. */
  emptyClasses: string[];
}

/** Python's string order (code points), which torchvision's sorted() uses; JS's default compares UTF-16 units. */
export function compareCodePoints(a: string, b: string): number {
  const ia = a[Symbol.iterator](), ib = b[Symbol.iterator]();
  for (;;) {
    const x = ia.next(), y = ib.next();
    if (x.done || y.done) return x.done && y.done ? 0 : x.done ? -1 : 1;
    const d = x.value.codePointAt(0)! - y.value.codePointAt(0)!;
    if (d !== 0) return d;
  }
}

async function isDir(path: string, e: Dirent): Promise<boolean> {
  if (e.isDirectory()) return true;
  // Symlinked class folders are common (a subset linked into place); torchvision follows them too.
  if (!e.isSymbolicLink()) return false;
  return (await stat(path).catch(() => undefined))?.isDirectory() ?? false;
}

async function listDir(path: string): Promise<Dirent[]> {
  try {
    return await readdir(path, { withFileTypes: true });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'no such folder' : code === 'ENOTDIR' ? 'not a folder' : code === 'EACCES' ? 'permission denied' : (e as Error).message;
    throw new Error(`cannot read folder ${path}: ${reason}`);
  }
}

function isImageName(name: string): boolean {
  return IMAGE_EXTENSIONS.includes(extname(name).toLowerCase());
}

/**
 * Every file under a class folder, as torchvision's make_dataset orders them: directories by path, then file
 * names sorted within each. Hidden entries (.DS_Store, .ipynb_checkpoints) are left out.
 */
async function walk(root: string, rel: string, out: { dir: string; names: string[] }[]): Promise<void> {
  const entries = (await listDir(join(root, rel))).filter((e) => !e.name.startsWith('.'));
  const names: string[] = [];
  for (const e of entries) {
    const sub = rel ? `${rel}/${e.name}` : e.name;
    if (await isDir(join(root, sub), e)) await walk(root, sub, out);
    else names.push(e.name);
  }
  out.push({ dir: rel, names: names.sort(compareCodePoints) });
}

/**
 * torchvision's ImageFolder: ROOT/CLASS/.../IMAGE, classes sorted by name; images are decoded only when read. A folder
 * with no class sub-folders is its images, unlabelled (no classes, label -1).
 */
export async function openImageFolder(root: string, opts: ImageFolderOptions = {}): Promise<ImageFolder> {
  const channels = opts.channels ?? 3;
  const top = (await listDir(root)).filter((e) => !e.name.startsWith('.'));
  const classes: string[] = [];
  for (const e of top) if (await isDir(join(root, e.name), e)) classes.push(e.name);
  classes.sort(compareCodePoints);
  const files: string[] = [];
  const labels: number[] = [];
  const emptyClasses: string[] = [];
  let ignored = 0;
  if (classes.length === 0) {
    // A flat folder: unlabelled images, enough for everything that needs no class (top-k, occlusion, the viewer).
    const names = top.filter((e) => !e.isDirectory()).map((e) => e.name).sort(compareCodePoints);
    for (const n of names) {
      if (isImageName(n)) {
        files.push(n);
        labels.push(-1);
      } else ignored++;
    }
    if (files.length === 0) throw new Error(`${root} has no images (${IMAGE_EXTENSIONS.join(' ')}) and no class sub-folders`);
  }
  for (const [label, cls] of classes.entries()) {
    const dirs: { dir: string; names: string[] }[] = [];
    await walk(root, cls, dirs);
    dirs.sort((a, b) => compareCodePoints(a.dir, b.dir));
    const before = files.length;
    for (const { dir, names } of dirs) {
      for (const n of names) {
        if (!isImageName(n)) {
          ignored++;
          continue;
        }
        files.push(`${dir}/${n}`);
        labels.push(label);
      }
    }
    if (files.length === before) emptyClasses.push(cls);
  }
  if (files.length === 0) {
    throw new Error(`${root} has no images (${IMAGE_EXTENSIONS.join(' ')}) in its ${classes.length} class folders`);
  }
  const ds: ImageFolder = {
    name: root,
    root,
    files,
    ignored,
    emptyClasses,
    classes,
    size: files.length,
    channels,
    item: async (i: number): Promise<Item> => {
      checkIndex(ds, i);
      const image = toChannels(await decodeImage(join(root, files[i])), channels);
      return { image, label: labels[i], name: files[i] };
    },
    label: (i) => {
      checkIndex(ds, i);
      return labels[i];
    },
    itemName: (i) => {
      checkIndex(ds, i);
      return files[i];
    },
  };
  return ds;
}
