import type { RgbImage } from './image.js';

/**
 * The reference fixtures' test image (../shared/fixtures/small/index.json, input_formula): smooth colour waves, a
 * checkerboard, a red disc and a green rectangle. A deterministic input with edges, texture and objects that needs
 * no file; the demo and tests use it.
 */
export function testPattern(size: number): RgbImage {
  const data = new Uint8Array(size * size * 3);
  const cell = Math.floor(size / 14);
  const [cx, cy, r] = [0.35 * size, 0.4 * size, 0.18 * size];
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      let rgb = [
        roundHalfEven(128 + 100 * Math.sin((2 * Math.PI * x) / 37) * Math.cos((2 * Math.PI * y) / 53)),
        roundHalfEven(128 + 100 * Math.sin((2 * Math.PI * (x + y)) / 61)),
        48 + 160 * ((Math.floor(x / cell) + Math.floor(y / cell)) % 2),
      ];
      if ((y - cy) ** 2 + (x - cx) ** 2 <= r * r) rgb = [230, 40, 40];
      if (y >= 0.62 * size && y < 0.85 * size && x >= 0.55 * size && x < 0.9 * size) rgb = [30, 200, 60];
      const o = (y * size + x) * 3;
      for (let c = 0; c < 3; c++) data[o + c] = Math.min(255, Math.max(0, rgb[c]));
    }
  }
  return { width: size, height: size, channels: 3, data };
}

/** numpy's rounding (half to even), so the pattern matches the fixture bit for bit. */
function roundHalfEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}
