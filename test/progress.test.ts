import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Progress } from '../src/cli/progress.js';

test('a sweep says once, after a few seconds, how long it will take in all; bars carry rate and ETA', () => {
  let now = 1_000_000;
  const lines: string[] = [];
  const bar = new Progress('scan', 100, 'images', (s) => lines.push(s), false, () => now);
  now += 1000;
  bar.update(5);
  assert.deepEqual(lines, ['scan [#.......................] 5/100 images 5.0/s ETA 19s\n']);
  now += 3000;
  bar.update(10);
  assert.equal(lines[1], 'scan: about 40s in all for 100 images (estimated from the first 10 in 4s)\n');
  assert.match(lines[2], /^scan \[#+\.+\] 10\/100 images 2\.5\/s ETA 36s\n$/);
  now += 6000;
  bar.update(50);
  now += 60_000;
  bar.update(100);
  assert.equal(lines.filter((l) => l.includes('in all')).length, 1, 'the estimate is said once');
  assert.match(lines.at(-1)!, /^scan \[#{24}\] 100\/100 images .* in 1m10s\n$/);
});

test('a sweep that ends within the first seconds prints no estimate', () => {
  let now = 0;
  const lines: string[] = [];
  const bar = new Progress('occlude', 0, 'positions', (s) => lines.push(s), false, () => now);
  now += 2000;
  bar.update(49, 49);
  assert.deepEqual(lines, ['occlude [########################] 49/49 positions 24.5/s in 2s\n']);
});
