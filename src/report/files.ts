import { join } from 'node:path';
import { writeFileAtomic } from '../util/fs.js';

/** A command's output files by name, complete in memory: written only once everything has been computed and encoded. */
export type OutputFiles = Map<string, Uint8Array | string>;

/**
 * Writes every file into `dir`, each through a temporary file and a rename. Callers build all files first, so that a
 * failure while computing leaves no output at all.
 */
export function writeOutputs(dir: string, files: OutputFiles): void {
  for (const [name, data] of files) writeFileAtomic(join(dir, name), data);
}
