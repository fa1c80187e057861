import type { ReceptiveField } from '../shapes.js';

/**
 * The field of a unit that merges paths: the largest extent over all of them (from the smallest start to the largest
 * end), with the coarsest jump. A path through a global layer makes the whole image the field.
 */
export function unionRf(rfs: ReceptiveField[], image: ReceptiveField): ReceptiveField {
  if (rfs.some((r) => r.global)) return image;
  const axis = (a: 0 | 1) => {
    const start = Math.min(...rfs.map((r) => r.start[a]));
    const end = Math.max(...rfs.map((r) => r.start[a] + r.size[a]));
    return { start, size: end - start, jump: Math.max(...rfs.map((r) => r.jump[a])) };
  };
  const [y, x] = [axis(0), axis(1)];
  return { size: [y.size, x.size], jump: [y.jump, x.jump], start: [y.start, x.start], global: false };
}
