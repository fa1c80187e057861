import { writeFilesTogether } from '../util/fs.js';

/** A command's output files by name, complete in memory: written only once everything has been computed and encoded. */
export type OutputFiles = Map<string, Uint8Array | string>;

/**
 * Writes every file into `dir`, all of them or none (see writeFilesTogether). Callers build all files first, so that
 * a failure while computing leaves no output at all either.
 */
export function writeOutputs(dir: string, files: OutputFiles): void {
  writeFilesTogether(dir, files);
}
