import { accessSync, constants, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

/**
 * Where a write to `path` goes: the path itself, or, when it is a symbolic link, the file it points to (a link the
 * user made stays a link; a rename onto it would replace it with a plain file).
 */
function writeTarget(path: string): string {
  let link = false;
  try {
    link = lstatSync(path).isSymbolicLink();
  } catch {
    return path;
  }
  if (!link) return path;
  try {
    return realpathSync(path);
  } catch {
    throw new Error(`cannot write ${path}: it is a link to ${readlinkSync(path)}, which does not exist`);
  }
}

/** Checks, before any work, that each output file can be written: no folder stands there, and its folder can be made. */
export function checkOutputFiles(paths: readonly (string | undefined)[]): void {
  for (const path of paths) {
    if (path === undefined) continue;
    if (existsSync(path) && statSync(path).isDirectory()) throw new Error(`cannot write ${path}: a folder of that name is in the way`);
    checkOutputDir(dirname(path) || '.', `the folder of ${path}`);
  }
}

/** Writes via a temporary file and a rename, so that a failed run never leaves a partial output file. */
export function writeFileAtomic(path: string, data: Uint8Array | string): void {
  if (existsSync(path) && statSync(path).isDirectory()) throw new Error(`cannot write ${path}: a folder of that name is in the way`);
  mkdirSync(dirname(path) || '.', { recursive: true });
  const target = writeTarget(path);
  const tmp = `${target}.tmp-${process.pid}`;
  try {
    writeFileSync(tmp, data);
    renameSync(tmp, target);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

/** Moves a finished file into place; a link's target may be on another file system, where a rename cannot go. */
function moveInto(src: string, dest: string): void {
  const target = writeTarget(dest);
  try {
    renameSync(src, target);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
    writeFileAtomic(target, readFileSync(src));
  }
}

const TEMP_DIR_PREFIX = '.convscope-tmp-';
/** A temporary file (FILE.tmp-PID) or folder (.convscope-tmp-PID-N) and the id of the process that made it. */
const TEMP_NAME = /\.tmp-(\d+)$|^\.convscope-tmp-(\d+)-/;

/** Whether a process with this id runs here (a temp file of a live run must not be swept away). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes the temporary files and folders that killed runs left in `dir` (FILE.tmp-PID, .convscope-tmp-PID-N). */
export function removeStaleTemps(dir: string): void {
  if (!existsSync(dir)) return;
  for (const name of readdirSync(dir)) {
    const m = TEMP_NAME.exec(name);
    const pid = m ? Number(m[1] ?? m[2]) : undefined;
    if (pid !== undefined && pid !== process.pid && !alive(pid)) rmSync(join(dir, name), { recursive: true, force: true });
  }
}

/**
 * Writes a command's files into `dir` all together or not at all: every file goes into a temporary folder beside
 * them first, and only when all are written are they moved into place (after checking no folder stands where a file
 * goes). On failure the temporary folder goes, and `dir` too if this call made it. Stale temps of killed runs go first.
 */
export function writeFilesTogether(dir: string, files: Map<string, Uint8Array | string>): void {
  const made = !existsSync(dir);
  removeStaleTemps(dir);
  for (const name of files.keys()) {
    const target = join(dir, name);
    if (existsSync(target) && statSync(target).isDirectory()) throw new Error(`cannot write ${target}: a folder of that name is in the way`);
  }
  mkdirSync(dir, { recursive: true });
  const tmp = mkdtempSync(join(dir, `${TEMP_DIR_PREFIX}${process.pid}-`));
  try {
    for (const [name, data] of files) {
      mkdirSync(dirname(join(tmp, name)), { recursive: true });
      writeFileSync(join(tmp, name), data);
    }
    for (const name of files.keys()) {
      mkdirSync(dirname(join(dir, name)), { recursive: true });
      moveInto(join(tmp, name), join(dir, name));
    }
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    if (made) rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  rmSync(tmp, { recursive: true, force: true });
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
