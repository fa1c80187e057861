import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Rng } from '../src/util/random.js';

test('fillNormal gives exactly the values of normal() called in a loop, and leaves the generator where the loop does', () => {
  for (const [seed, lead, length, scale] of [[0, 0, 7, 1], [3, 1, 8, 0.15], [9, 3, 1, -2.5], [11, 2, 0, 1], [5, 1, 1001, 1e-3]] as const) {
    const a = new Rng(seed);
    const b = new Rng(seed);
    // A draw before leaves a spare (odd lead) or none (even lead).
    for (let i = 0; i < lead; i++) assert.equal(a.normal(), b.normal());
    const looped = Float32Array.from({ length }, () => scale * a.normal());
    const filled = new Float32Array(length);
    b.fillNormal(filled, scale);
    assert.deepEqual(filled, looped, `seed ${seed}, lead ${lead}, length ${length}`);
    assert.deepEqual(b.save(), a.save(), 'the state and the spare after');
    assert.equal(b.normal(), a.normal());
    assert.equal(b.next(), a.next());
  }
  const wide = new Float64Array(5);
  new Rng(1).fillNormal(wide);
  const r = new Rng(1);
  assert.deepEqual([...wide], Array.from({ length: 5 }, () => r.normal()));
});
