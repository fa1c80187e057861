import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { maxAbs, readNpy, type Tensor } from '../src/tensor.js';
import { Engine } from '../src/engine/engine.js';
import { readSafetensorsModel } from '../src/model/safetensors.js';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const FIXTURES = join(ROOT, '..', 'shared', 'fixtures', 'small');

export function fixture(name: string): string {
  const p = join(FIXTURES, name);
  assert.ok(existsSync(p), `fixture ${p} is missing: tests need ../shared/fixtures beside the project`);
  return p;
}

export function fixtureNpy(name: string): Tensor {
  return readNpy(fixture(name));
}

/** max|ours - ref| / max|ref|: the fixtures' README tolerance is 1e-4. */
export function relError(ours: Tensor, ref: Tensor): number {
  assert.deepEqual(ours.shape, ref.shape, 'shape');
  let m = 0;
  for (let i = 0; i < ref.data.length; i++) m = Math.max(m, Math.abs(ours.data[i] - ref.data[i]));
  const scale = maxAbs(ref.data);
  assert.ok(scale > 0, 'reference is all zero');
  return m / scale;
}

export function assertClose(ours: Tensor, ref: Tensor, tol: number, what: string): number {
  const e = relError(ours, ref);
  assert.ok(e <= tol, `${what}: max|ours-ref|/max|ref| = ${e.toExponential(3)} > ${tol}`);
  return e;
}

/** An engine on the fixture model (weights.safetensors) and the fixture input, for parity tests. */
export function fixtureEngine(): { engine: Engine; input: Tensor } {
  return { engine: new Engine(readSafetensorsModel(fixture('weights.safetensors'))), input: fixtureNpy('input.npy') };
}

/**
 * The lines of a failed command's stderr: bad input must give exactly one, the error (what a command says before its
 * work is held back until the work starts, so a refusal is never preceded by it).
 */
export function errorLines(stderr: string): string[] {
  return stderr.trim().split('\n');
}
