// Where a long computation keeps its checkpoint: the computation hands its state to a store and reads files of its own
// nowhere, so that a caller can keep checkpoints anywhere (a file for the CLI, memory in a test).
import { existsSync, readFileSync } from 'node:fs';
import { writeFileAtomic } from './fs.js';

/** One JSON document, replaced whole by each write. */
export interface CheckpointStore {
  /** The store in messages: a file's path. */
  readonly name: string;
  /** The document last written; undefined when there is none. Throws when there is one that cannot be read. */
  read(): unknown;
  write(value: unknown): void;
}

/** A checkpoint in a JSON file, replaced atomically: a run killed while writing leaves the previous checkpoint. */
export function fileCheckpoint(path: string): CheckpointStore {
  return {
    name: path,
    read: () => (existsSync(path) ? JSON.parse(readFileSync(path, 'utf8')) : undefined),
    write: (value) => writeFileAtomic(path, JSON.stringify(value)),
  };
}
