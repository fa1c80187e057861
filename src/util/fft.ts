// A mixed-radix fast Fourier transform for any length (Cooley-Tukey, decimation in time, radices the prime factors,
// smallest first; a prime length is one stage of its own size): 224 = 2^5 * 7 points cost 17 multiply-adds a point
// instead of 224. The plan (input order, stages) and the work buffers are made once per length.

/** Complex FFTs of one length n: out_k = sum_p in_p exp(sign * 2 pi i k p / n). */
export class Fft {
  private readonly cos: Float64Array;
  private readonly sin: Float64Array;
  /** Input index read into each position before the first stage (the mixed-radix digit reversal). */
  private readonly order: Int32Array;
  /** Radices from the innermost stage out. */
  private readonly radices: number[];
  private readonly ar: Float64Array;
  private readonly ai: Float64Array;
  private readonly br: Float64Array;
  private readonly bi: Float64Array;

  constructor(readonly n: number) {
    if (!(Number.isInteger(n) && n >= 1)) throw new Error(`FFT length must be a positive integer, got ${n}`);
    this.cos = Float64Array.from({ length: n }, (_, k) => Math.cos((2 * Math.PI * k) / n));
    this.sin = Float64Array.from({ length: n }, (_, k) => Math.sin((2 * Math.PI * k) / n));
    const factors: number[] = [];
    for (let m = n, p = 2; m > 1; ) {
      if (p * p > m) p = m;
      if (m % p === 0) {
        factors.push(p);
        m /= p;
      } else p++;
    }
    this.radices = factors.reverse();
    // Splitting x into its p interleaved subsequences x[r + p j], recursively, smallest radix first.
    const split = (indices: number[]): number[] => {
      if (indices.length === 1) return indices;
      let p = 2;
      while (indices.length % p !== 0) p++;
      return Array.from({ length: p }, (_, r) => split(indices.filter((_, j) => j % p === r))).flat();
    };
    this.order = Int32Array.from(split(Array.from({ length: n }, (_, i) => i)));
    [this.ar, this.ai, this.br, this.bi] = [0, 0, 0, 0].map(() => new Float64Array(n));
  }

  /** Transforms the `n` values at re[offset + j * stride] (and im) in place. */
  transform(re: Float64Array, im: Float64Array, sign: 1 | -1, offset = 0, stride = 1): void {
    const { n, cos, sin } = this;
    let [xr, xi, yr, yi] = [this.ar, this.ai, this.br, this.bi];
    for (let j = 0; j < n; j++) {
      xr[j] = re[offset + this.order[j] * stride];
      xi[j] = im[offset + this.order[j] * stride];
    }
    // Blocks of q values hold finished sub-transforms; p consecutive blocks combine into one of length m = p q:
    // Y[k] = sum_r exp(sign 2 pi i r k / m) S_r[k mod q].
    let q = 1;
    for (const p of this.radices) {
      const m = p * q;
      const step = n / m;
      if (p === 2) {
        // The radix-2 butterfly: Y[k] = S0[k] + w^k S1[k], Y[k + q] = S0[k] - w^k S1[k].
        for (let base = 0; base < n; base += m) {
          for (let k = 0; k < q; k++) {
            const c = cos[k * step];
            const s = sign * sin[k * step];
            const u = xr[base + q + k];
            const v = xi[base + q + k];
            const tr = u * c - v * s;
            const ti = u * s + v * c;
            yr[base + k] = xr[base + k] + tr;
            yi[base + k] = xi[base + k] + ti;
            yr[base + k + q] = xr[base + k] - tr;
            yi[base + k + q] = xi[base + k] - ti;
          }
        }
        [xr, xi, yr, yi] = [yr, yi, xr, xi];
        q = m;
        continue;
      }
      for (let base = 0; base < n; base += m) {
        for (let k = 0, kq = 0; k < m; k++, kq = kq + 1 === q ? 0 : kq + 1) {
          // Twiddle index (r k mod m) * step = r k step mod n, stepped by k step < n.
          const dk = k * step;
          let a = xr[base + kq];
          let b = xi[base + kq];
          for (let r = 1, t = dk; r < p; r++, t = t + dk >= n ? t + dk - n : t + dk) {
            const c = cos[t];
            const s = sign * sin[t];
            const u = xr[base + r * q + kq];
            const v = xi[base + r * q + kq];
            a += u * c - v * s;
            b += u * s + v * c;
          }
          yr[base + k] = a;
          yi[base + k] = b;
        }
      }
      [xr, xi, yr, yi] = [yr, yi, xr, xi];
      q = m;
    }
    for (let j = 0; j < n; j++) {
      re[offset + j * stride] = xr[j];
      im[offset + j * stride] = xi[j];
    }
  }
}

/** In-place 2-d transform of an h x w complex plane (row-major), sign as Fft. */
export function fft2(re: Float64Array, im: Float64Array, h: number, w: number, sign: 1 | -1, rows = new Fft(w), cols = new Fft(h)): void {
  for (let y = 0; y < h; y++) rows.transform(re, im, sign, y * w, 1);
  for (let x = 0; x < w; x++) cols.transform(re, im, sign, x, w);
}
