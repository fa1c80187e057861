import { Rng } from '../util/random.js';
import type { Rect } from '../util/rect.js';
import type { Dataset, Item, Split } from './dataset.js';
import type { RgbImage } from './image.js';
import { checkIndex, mixSeed } from './split.js';

/**
 * The synthetic classes. Pairs that differ only in a detail (disc/ellipse/ring, square/diamond, star/cross) keep the
 * task from being solved by one colour or one edge detector; colour, position, scale and rotation are random.
 */
export const SHAPE_CLASSES = [
  'disc',
  'square',
  'triangle',
  'cross',
  'ring',
  'star',
  'horizontal stripes',
  'vertical stripes',
  'ellipse',
  'diamond',
] as const;

export interface ShapesOptions {
  /** Image side in pixels; default 64. */
  size?: number;
  /** Items in the split; default 5000 for train, 1000 for val and test. */
  count?: number;
  seed?: number;
  /** Range of the object's nominal diameter as a fraction of the image side; default 0.35..0.75. */
  minScale?: number;
  maxScale?: number;
}

type Rgb = [number, number, number];

/** Each split draws from its own seed stream, so train, val and test never share an image. */
const SPLIT_STREAM: Record<Split, number> = { train: 0x7a11, val: 0x7a12, test: 0x7a13 };

const SUPERSAMPLE = 4;
/** Background channels stay inside this range even after waves and noise, so no pixel is ever clipped. */
const WAVE_MAX = 16;
const NOISE = 4;
const BG_LO = 6 + WAVE_MAX;
const BG_HI = 249 - WAVE_MAX;
/** Minimum RGB distance from the object colour to the background's gradient, before waves. */
const CONTRAST = 120;
/** Minimum RGB distance between the two stripe colours. */
const STRIPE_CONTRAST = 100;

export interface ShapeSample {
  image: RgbImage;
  label: number;
  box: Rect;
  name: string;
  /** The same image without the object (only when asked for): its pixels differ exactly inside the object. */
  background?: RgbImage;
}

interface Geometry {
  size: number;
  minScale: number;
  maxScale: number;
}

/** 0 outside the object, 1 its main colour, 2 its second colour (stripes), at local coordinates (u, v) in the unit disc. */
type Tester = (u: number, v: number) => 0 | 1 | 2;

function polygon(pts: [number, number][]): Tester {
  const n = pts.length;
  // Flat coordinates: this runs for every sample of every pixel near the object.
  const xs = Float64Array.from(pts, (p) => p[0]);
  const ys = Float64Array.from(pts, (p) => p[1]);
  return (u, v) => {
    let inside = false;
    for (let i = 0, j = n - 1; i < n; j = i++) {
      const xi = xs[i], yi = ys[i], xj = xs[j], yj = ys[j];
      if (yi > v !== yj > v && u < ((xj - xi) * (v - yi)) / (yj - yi) + xi) inside = !inside;
    }
    return inside ? 1 : 0;
  };
}

function regular(n: number, radius: number, start: number): [number, number][] {
  return Array.from({ length: n }, (_, k) => {
    const a = start + (2 * Math.PI * k) / n;
    return [radius * Math.cos(a), radius * Math.sin(a)] as [number, number];
  });
}

function uniform(rng: Rng, lo: number, hi: number): number {
  return lo + (hi - lo) * rng.next();
}

interface Shape {
  test: Tester;
  /** Rotation in radians: free for most shapes, a small jitter for stripes, whose direction is their class. */
  theta: number;
  twoColours: boolean;
}

/** Every shape fits in the unit disc, so an object of radius r centred at least r from each edge is fully inside. */
function makeShape(cls: number, rng: Rng, r: number, size: number): Shape {
  const free = () => uniform(rng, 0, 2 * Math.PI);
  switch (SHAPE_CLASSES[cls]) {
    case 'disc':
      return { test: (u, v) => (u * u + v * v <= 1 ? 1 : 0), theta: 0, twoColours: false };
    case 'square': {
      const h = 0.7;
      return { test: (u, v) => (Math.abs(u) <= h && Math.abs(v) <= h ? 1 : 0), theta: free(), twoColours: false };
    }
    case 'triangle':
      return { test: polygon(regular(3, 1, -Math.PI / 2)), theta: free(), twoColours: false };
    case 'cross': {
      const w = uniform(rng, 0.22, 0.34);
      const l = 0.94;
      const test: Tester = (u, v) => {
        const au = Math.abs(u), av = Math.abs(v);
        return (au <= w && av <= l) || (av <= w && au <= l) ? 1 : 0;
      };
      return { test, theta: free(), twoColours: false };
    }
    case 'ring': {
      const inner = uniform(rng, 0.45, 0.7);
      const test: Tester = (u, v) => {
        const d = u * u + v * v;
        return d <= 1 && d >= inner * inner ? 1 : 0;
      };
      return { test, theta: 0, twoColours: false };
    }
    case 'star': {
      const inner = uniform(rng, 0.38, 0.5);
      const pts = regular(10, 1, -Math.PI / 2).map(([x, y], k) => (k % 2 ? ([x * inner, y * inner] as [number, number]) : ([x, y] as [number, number])));
      return { test: polygon(pts), theta: free(), twoColours: false };
    }
    case 'horizontal stripes':
    case 'vertical stripes': {
      const horizontal = SHAPE_CLASSES[cls] === 'horizontal stripes';
      // A patch inside the unit disc with aspect between about 1:2 and 2:1.
      const beta = uniform(rng, 0.48, 1.09);
      const pw = Math.cos(beta), ph = Math.sin(beta);
      const across = 2 * r * (horizontal ? ph : pw);
      const unit = size / 64;
      const period = Math.max(3, Math.min(uniform(rng, 4 * unit, 8 * unit), across / 2.5));
      const phase = uniform(rng, 0, period);
      const test: Tester = (u, v) => {
        if (Math.abs(u) > pw || Math.abs(v) > ph) return 0;
        const k = Math.floor(((horizontal ? v : u) * r + phase) / (period / 2));
        return (k & 1) === 0 ? 1 : 2;
      };
      return { test, theta: uniform(rng, -0.2, 0.2), twoColours: true };
    }
    case 'ellipse': {
      const a = uniform(rng, 0.4, 0.62);
      return { test: (u, v) => ((u / a) ** 2 + v * v <= 1 ? 1 : 0), theta: free(), twoColours: false };
    }
    case 'diamond': {
      // A rhombus, not a square at 45 degrees (a rotated square is still a square).
      const a = uniform(rng, 0.5, 0.72);
      return { test: (u, v) => (Math.abs(u) / a + Math.abs(v) <= 1 ? 1 : 0), theta: free(), twoColours: false };
    }
  }
  throw new Error(`shapes: no class ${cls}`);
}

// ---------------------------------------------------------------- colour

function hsv(h: number, s: number, v: number): Rgb {
  const f = (n: number) => {
    const k = (n + h * 6) % 6;
    return Math.round(255 * (v - v * s * Math.max(0, Math.min(k, 4 - k, 1))));
  };
  return [f(5), f(3), f(1)];
}

function dist(a: Rgb, b: Rgb): number {
  return Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);
}

/** Distance from c to the segment a-b: the background gradient passes through every colour between its ends. */
function distToSegment(c: Rgb, a: Rgb, b: Rgb): number {
  const d: Rgb = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
  const len2 = d[0] ** 2 + d[1] ** 2 + d[2] ** 2;
  const t = len2 === 0 ? 0 : Math.max(0, Math.min(1, ((c[0] - a[0]) * d[0] + (c[1] - a[1]) * d[1] + (c[2] - a[2]) * d[2]) / len2));
  return dist(c, [a[0] + t * d[0], a[1] + t * d[1], a[2] + t * d[2]]);
}

/** A vivid random colour whose worst-case contrast (`score`) reaches `need`, or the best of 64 tries. */
function pickColour(rng: Rng, score: (c: Rgb) => number, need: number): Rgb {
  let best: Rgb = [0, 0, 0];
  let bestScore = -1;
  for (let t = 0; t < 64; t++) {
    const c = hsv(rng.next(), uniform(rng, 0.35, 1), uniform(rng, 0.3, 1));
    const s = score(c);
    if (s >= need) return c;
    if (s > bestScore) [best, bestScore] = [c, s];
  }
  return best;
}

// ---------------------------------------------------------------- rendering

interface Background {
  rgb: Float32Array;
  ends: [Rgb, Rgb];
}

/** A smooth two-colour gradient with a faint sinusoidal texture: structure that a stripe detector must not confuse. */
function drawBackground(rng: Rng, S: number): Background {
  const end = (): Rgb => [0, 1, 2].map(() => uniform(rng, BG_LO, BG_HI)) as Rgb;
  const c1 = end(), c2 = end();
  const phi = uniform(rng, 0, 2 * Math.PI);
  const amp = uniform(rng, 5, WAVE_MAX);
  const freq = uniform(rng, 1.5, 5) / S;
  const psi = uniform(rng, 0, 2 * Math.PI);
  const phase = uniform(rng, 0, 2 * Math.PI);
  const rgb = new Float32Array(S * S * 3);
  const [gc, gs] = [Math.cos(phi), Math.sin(phi)];
  const [wc, ws] = [Math.cos(psi), Math.sin(psi)];
  for (let y = 0; y < S; y++) {
    for (let x = 0; x < S; x++) {
      const px = x + 0.5 - S / 2, py = y + 0.5 - S / 2;
      const t = Math.max(0, Math.min(1, 0.5 + (px * gc + py * gs) / (S * Math.SQRT2)));
      const wave = amp * Math.sin(2 * Math.PI * freq * (px * wc + py * ws) + phase);
      const o = (y * S + x) * 3;
      for (let c = 0; c < 3; c++) rgb[o + c] = c1[c] + t * (c2[c] - c1[c]) + wave;
    }
  }
  return { rgb, ends: [c1, c2] };
}

/**
 * Per-pixel coverage (0..1) of the object's two colours, from SUPERSAMPLE^2 samples per pixel, and its tight box.
 * Every shape lies in the unit disc, so pixels whose samples all lie clearly outside the disc of radius r are skipped.
 */
function rasterize(shape: Shape, cx: number, cy: number, r: number, S: number): { a: Float32Array; b: Float32Array; box: Rect } {
  const a = new Float32Array(S * S), b = new Float32Array(S * S);
  const cos = Math.cos(shape.theta), sin = Math.sin(shape.theta);
  const x0 = Math.max(0, Math.floor(cx - r)), x1 = Math.min(S, Math.ceil(cx + r));
  const y0 = Math.max(0, Math.floor(cy - r)), y1 = Math.min(S, Math.ceil(cy + r));
  const box: Rect = [S, S, 0, 0];
  const n = SUPERSAMPLE * SUPERSAMPLE;
  // The products of each sample column and row with cos and sin, computed once; each sample's (u, v) is then the same
  // sum of the same products as (cos X + sin Y) / r, (cos Y - sin X) / r, so the picture does not change by a bit.
  const offsets = Array.from({ length: SUPERSAMPLE }, (_, k) => (k + 0.5) / SUPERSAMPLE);
  const cosX = new Float64Array((x1 - x0) * SUPERSAMPLE), sinX = new Float64Array((x1 - x0) * SUPERSAMPLE);
  for (let px = x0; px < x1; px++) {
    for (let sx = 0; sx < SUPERSAMPLE; sx++) {
      const X = px + offsets[sx] - cx;
      cosX[(px - x0) * SUPERSAMPLE + sx] = cos * X;
      sinX[(px - x0) * SUPERSAMPLE + sx] = sin * X;
    }
  }
  // Skipped pixels: all samples farther than r by a margin far above rounding, where every tester says 0.
  const far = r * r * (1 + 1e-9);
  const lo = offsets[0], hi = offsets[SUPERSAMPLE - 1];
  const nearest = (p: number, c: number) => (p + hi < c ? c - (p + hi) : p + lo > c ? p + lo - c : 0);
  for (let py = y0; py < y1; py++) {
    const dy = nearest(py, cy);
    for (let px = x0; px < x1; px++) {
      const dx = nearest(px, cx);
      if (dx * dx + dy * dy > far) continue;
      let ka = 0, kb = 0;
      const col = (px - x0) * SUPERSAMPLE;
      for (let sy = 0; sy < SUPERSAMPLE; sy++) {
        const Y = py + offsets[sy] - cy;
        const cosY = cos * Y, sinY = sin * Y;
        for (let sx = 0; sx < SUPERSAMPLE; sx++) {
          const k = shape.test((cosX[col + sx] + sinY) / r, (cosY - sinX[col + sx]) / r);
          if (k === 1) ka++;
          else if (k === 2) kb++;
        }
      }
      if (ka + kb === 0) continue;
      a[py * S + px] = ka / n;
      b[py * S + px] = kb / n;
      box[0] = Math.min(box[0], py);
      box[1] = Math.min(box[1], px);
      box[2] = Math.max(box[2], py + 1);
      box[3] = Math.max(box[3], px + 1);
    }
  }
  return { a, b, box };
}

/**
 * Item `index` of a split, generated from its own seeded stream: any item can be regenerated alone, in any order.
 * `withBackground` also returns the picture without the object (same gradient, waves and noise).
 */
export function renderShape(seed: number, split: Split, index: number, geometry: Partial<Geometry> = {}, withBackground = false): ShapeSample {
  const S = geometry.size ?? 64;
  const minScale = geometry.minScale ?? 0.35;
  const maxScale = geometry.maxScale ?? 0.75;
  const rng = new Rng(mixSeed(seed, SPLIT_STREAM[split], index));
  const label = index % SHAPE_CLASSES.length;
  const bg = drawBackground(rng, S);
  const r = (uniform(rng, minScale, maxScale) * S) / 2;
  const cx = uniform(rng, r, S - r);
  const cy = uniform(rng, r, S - r);
  const shape = makeShape(label, rng, r, S);
  const [e1, e2] = bg.ends;
  const colA = pickColour(rng, (c) => distToSegment(c, e1, e2), CONTRAST);
  // The second stripe colour must stand out from the background and from the first, each by its own margin.
  const colB = shape.twoColours
    ? pickColour(rng, (c) => Math.min(distToSegment(c, e1, e2), dist(c, colA) * (CONTRAST / STRIPE_CONTRAST)), CONTRAST)
    : colA;
  const { a, b, box } = rasterize(shape, cx, cy, r, S);
  const image = new Uint8Array(S * S * 3);
  const background = withBackground ? new Uint8Array(S * S * 3) : undefined;
  for (let p = 0; p < S * S; p++) {
    // Camera-like noise on top of everything, the same on the object as on the background.
    const noise = uniform(rng, -NOISE, NOISE);
    const wa = a[p], wb = b[p], wg = 1 - wa - wb;
    for (let c = 0; c < 3; c++) {
      const g = bg.rgb[3 * p + c];
      image[3 * p + c] = clampByte(g * wg + colA[c] * wa + colB[c] * wb + noise);
      if (background) background[3 * p + c] = clampByte(g + noise);
    }
  }
  const img = (data: Uint8Array): RgbImage => ({ width: S, height: S, channels: 3, data });
  return {
    image: img(image),
    label,
    box,
    name: `${split}/${index}`,
    background: background && img(background),
  };
}

function clampByte(v: number): number {
  return v <= 0 ? 0 : v >= 255 ? 255 : Math.round(v);
}

// ---------------------------------------------------------------- dataset

const DEFAULT_COUNT: Record<Split, number> = { train: 5000, val: 1000, test: 1000 };
const MAX_SHAPES_SIZE = 4096;

function checkOptions(o: ShapesOptions): Required<ShapesOptions> & { count: number } {
  const size = o.size ?? 64;
  const seed = o.seed ?? 0;
  const minScale = o.minScale ?? 0.35;
  const maxScale = o.maxScale ?? 0.75;
  // An image is size² x 3 floats while it is drawn: past 4096 px one would take gigabytes, for a model that reads far less.
  if (!(Number.isInteger(size) && size >= 8 && size <= MAX_SHAPES_SIZE)) throw new Error(`shapes: size must be an integer in 8..${MAX_SHAPES_SIZE}, got ${size}`);
  if (!Number.isInteger(seed)) throw new Error(`shapes: seed must be an integer, got ${seed}`);
  if (!(minScale > 0 && minScale <= maxScale && maxScale <= 1)) {
    throw new Error(`shapes: need 0 < minScale <= maxScale <= 1, got ${minScale}..${maxScale}`);
  }
  if (o.count !== undefined && !(Number.isInteger(o.count) && o.count >= 0)) {
    throw new Error(`shapes: count must be a non-negative integer, got ${o.count}`);
  }
  return { size, seed, minScale, maxScale, count: o.count ?? -1 };
}

/**
 * Rendered images kept per opened dataset, up to this many bytes (the default 5000-image training set at 64 px takes
 * 61 MB): rendering costs about 1 ms an image, as much as a zfnet-small train step per image of its batch, so without
 * the cache every epoch after the first would spend half its time drawing the same pictures again.
 */
const RENDER_CACHE_BYTES = 256 * 2 ** 20;

/** The synthetic dataset: item i is rendered on demand, and kept while the render cache has room. */
export function openShapes(opts: ShapesOptions = {}, split: Split = 'train'): Dataset {
  const o = checkOptions(opts);
  const size = o.count >= 0 ? o.count : DEFAULT_COUNT[split];
  const rendered = new Map<number, Item>();
  let cachedBytes = 0;
  const ds: Dataset = {
    name: `shapes:size=${o.size},seed=${o.seed},count=${size} (${split})`,
    classes: [...SHAPE_CLASSES],
    size,
    channels: 3,
    imageSize: [o.size, o.size],
    item: async (i: number): Promise<Item> => {
      checkIndex(ds, i);
      // Copies in and out, so that a caller that draws on its item cannot change the cached picture.
      const copy = (item: Item): Item => ({ ...item, image: { ...item.image, data: item.image.data.slice() }, box: [...item.box!] as Rect });
      const hit = rendered.get(i);
      if (hit) return copy(hit);
      const s = renderShape(o.seed, split, i, o);
      const item: Item = { image: s.image, label: s.label, name: s.name, box: s.box };
      if (cachedBytes + s.image.data.length <= RENDER_CACHE_BYTES) {
        rendered.set(i, copy(item));
        cachedBytes += s.image.data.length;
      }
      return item;
    },
    label: (i) => {
      checkIndex(ds, i);
      return i % SHAPE_CLASSES.length;
    },
    itemName: (i) => {
      checkIndex(ds, i);
      return `${split}/${i}`;
    },
  };
  return ds;
}

const SPEC_KEYS = ['size', 'count', 'seed', 'minScale', 'maxScale', 'split'] as const;

/** `size=64,count=5000,seed=1,split=val` (the part after `shapes:`) into options. */
export function parseShapesSpec(text: string): { options: ShapesOptions; split?: Split } {
  const options: ShapesOptions = {};
  let split: Split | undefined;
  for (const part of text.split(',').map((s) => s.trim()).filter((s) => s.length > 0)) {
    const m = /^([A-Za-z]+)=(.+)$/.exec(part);
    if (!m) throw new Error(`shapes: cannot read '${part}'; expected key=value with keys ${SPEC_KEYS.join(', ')}`);
    const [, key, value] = m;
    if (key === 'split') {
      if (value !== 'train' && value !== 'val' && value !== 'test') throw new Error(`shapes: split must be train, val or test, got '${value}'`);
      split = value;
      continue;
    }
    if (!(SPEC_KEYS as readonly string[]).includes(key)) throw new Error(`shapes: unknown option '${key}'; known: ${SPEC_KEYS.join(', ')}`);
    const num = Number(value);
    if (!Number.isFinite(num)) throw new Error(`shapes: ${key} must be a number, got '${value}'`);
    options[key as Exclude<(typeof SPEC_KEYS)[number], 'split'>] = num;
  }
  return { options, split };
}
