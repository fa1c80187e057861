// Static files from a fixed set of folders. Every request path is decoded, checked segment by segment and then
// resolved through symlinks, so '..', '%2e%2e', encoded slashes, absolute paths and links out of the folder all fail.
import { realpathSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { extname, isAbsolute, join, sep } from 'node:path';
import { HttpError } from './http.js';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.npy': 'application/octet-stream',
};

/** A served folder: its real path, so that the containment check compares like with like. */
export interface StaticRoot {
  root: string;
}

export function staticRoot(dir: string): StaticRoot {
  return { root: realpathSync(dir) };
}

/**
 * The file under `root` that the raw (still percent-encoded) request path names, or a 400/403/404 HttpError.
 * `rest` is the part of the URL path after the mount prefix.
 */
export function resolveStatic(root: StaticRoot, rest: string): string {
  let decoded: string;
  try {
    decoded = decodeURIComponent(rest);
  } catch {
    throw new HttpError(400, 'malformed percent-encoding in path');
  }
  if (decoded.includes('\0')) throw new HttpError(400, 'NUL in path');
  // Backslashes are separators on Windows; refusing them keeps the check the same on every platform.
  if (decoded.includes('\\')) throw new HttpError(403, 'backslash in path');
  const segments = decoded.split('/').filter((s) => s.length > 0);
  if (segments.some((s) => s === '..' || s === '.')) throw new HttpError(403, 'path leaves the served folder');
  const relative = segments.join('/');
  if (isAbsolute(relative)) throw new HttpError(403, 'absolute path');
  const candidate = join(root.root, relative);
  let real: string;
  try {
    real = realpathSync(candidate);
  } catch {
    throw new HttpError(404, `not found: /${relative}`);
  }
  if (real !== root.root && !real.startsWith(root.root + sep)) throw new HttpError(403, 'path leaves the served folder');
  if (!statSync(real).isFile()) throw new HttpError(404, `not found: /${relative}`);
  return real;
}

export async function readStatic(root: StaticRoot, rest: string): Promise<{ type: string; data: Buffer }> {
  const path = resolveStatic(root, rest);
  return { type: TYPES[extname(path).toLowerCase()] ?? 'application/octet-stream', data: await readFile(path) };
}
