import { accessSync, constants, existsSync, mkdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/** Writes via a temporary file and a rename, so that a failed run never leaves a partial output file. */
export function writeFileAtomic(path: string, data: Uint8Array | string): void {
  mkdirSync(dirname(path) || '.', { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

/**
 * Checks, before any work, that an output folder can be made and written: it is a folder (or does not exist yet) and
 * the nearest existing folder above it is writable. Creates nothing, so a refused run leaves nothing behind.
 */
export function checkOutputDir(dir: string, what = 'output folder'): void {
  let at = resolve(dir);
  while (!existsSync(at)) {
    const up = dirname(at);
    if (up === at) break;
    at = up;
  }
  if (!statSync(at).isDirectory()) throw new Error(`${what} ${dir}: ${at} is a file, not a folder`);
  try {
    accessSync(at, constants.W_OK | constants.X_OK);
  } catch {
    throw new Error(`${what} ${dir}: ${at} is not writable`);
  }
}
