// Line plots (training curves, invariance curves) drawn as SVG and rasterised by sharp (librsvg).
import sharp from 'sharp';
import type { RgbImage } from '../data/image.js';

export interface Series {
  name: string;
  x: number[];
  y: number[];
  /** CSS colour; a palette colour by default. */
  color?: string;
  dashed?: boolean;
}

export interface PlotSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  width?: number;
  height?: number;
  /** Fixed y range; by default the data's range with a margin. */
  yRange?: [number, number];
  /** Draw the legend inside the plot (default true); figures of several plots of the same series draw one legendStrip. */
  legend?: boolean;
}

export const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

function escapeXml(s: string): string {
  return s.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Round tick positions covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

/** A series' colour: its own, else the palette's by its index, in plots and legends alike. */
function colorOf(s: Series, i: number): string {
  return s.color ?? PALETTE[i % PALETTE.length];
}

/** A legend entry's width: its mark, then its name in 11 px text (~6.6 px a character). */
function entryWidth(s: Series): number {
  return 34 + Math.ceil(6.6 * s.name.length);
}

function legendMark(x: number, y: number, color: string, dashed: boolean | undefined): string {
  return `<line x1="${x}" x2="${x + 22}" y1="${y - 4}" y2="${y - 4}" stroke="${color}" stroke-width="2"${dashed ? ' stroke-dasharray="6 4"' : ''}/>`;
}

function formatTick(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(1);
  return String(Number(v.toPrecision(4)));
}

export function plotSvg(spec: PlotSpec): string {
  const width = spec.width ?? 560;
  const height = spec.height ?? 360;
  const m = { left: 64, right: 16, top: 36, bottom: 48 };
  const xs = spec.series.flatMap((s) => s.x);
  const ys = spec.series.flatMap((s) => s.y).filter(Number.isFinite);
  const [x0, x1] = xs.length ? [Math.min(...xs), Math.max(...xs)] : [0, 1];
  let [y0, y1] = spec.yRange ?? (ys.length ? [Math.min(...ys), Math.max(...ys)] : [0, 1]);
  if (!spec.yRange) {
    const pad = (y1 - y0) * 0.06 || Math.abs(y0) * 0.1 || 1;
    y0 -= pad;
    y1 += pad;
  }
  const pw = width - m.left - m.right;
  const ph = height - m.top - m.bottom;
  const sx = (x: number) => m.left + (x1 > x0 ? ((x - x0) / (x1 - x0)) * pw : pw / 2);
  const sy = (y: number) => m.top + ph - ((y - y0) / (y1 - y0)) * ph;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="DejaVu Sans, sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${width / 2}" y="22" font-size="15" text-anchor="middle">${escapeXml(spec.title)}</text>`,
  ];
  for (const t of niceTicks(y0, y1)) {
    parts.push(`<line x1="${m.left}" x2="${m.left + pw}" y1="${sy(t)}" y2="${sy(t)}" stroke="#e4e4e4"/>`);
    parts.push(`<text x="${m.left - 6}" y="${sy(t) + 4}" font-size="11" text-anchor="end">${formatTick(t)}</text>`);
  }
  for (const t of niceTicks(x0, x1, 6)) {
    parts.push(`<line x1="${sx(t)}" x2="${sx(t)}" y1="${m.top + ph}" y2="${m.top + ph + 4}" stroke="#444"/>`);
    parts.push(`<text x="${sx(t)}" y="${m.top + ph + 17}" font-size="11" text-anchor="middle">${formatTick(t)}</text>`);
  }
  parts.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`);
  parts.push(`<text x="${m.left + pw / 2}" y="${height - 10}" font-size="12" text-anchor="middle">${escapeXml(spec.xLabel)}</text>`);
  parts.push(`<text transform="translate(16 ${m.top + ph / 2}) rotate(-90)" font-size="12" text-anchor="middle">${escapeXml(spec.yLabel)}</text>`);
  // The legend is as wide as its widest entry and goes in the corner the curves cross least (top right first), on a
  // white box, so it never hides a curve where a free corner exists.
  const lw = Math.max(150, ...spec.series.map(entryWidth));
  const lh = 16 * spec.series.length + 6;
  const samples = spec.series.flatMap((s) => {
    const pts = s.x.map((x, j) => [sx(x), sy(s.y[j])]).filter(([, y]) => Number.isFinite(y));
    return pts.flatMap(([x, y], j) => (j === 0 ? [[x, y]] : Array.from({ length: 24 }, (_, k) => [pts[j - 1][0] + ((x - pts[j - 1][0]) * (k + 1)) / 24, pts[j - 1][1] + ((y - pts[j - 1][1]) * (k + 1)) / 24])));
  });
  const corners: [number, number][] = [[m.left + pw - lw - 4, m.top + 4], [m.left + pw - lw - 4, m.top + ph - lh - 4], [m.left + 4, m.top + 4], [m.left + 4, m.top + ph - lh - 4]];
  const crossing = ([cx, cy]: [number, number]) => samples.filter(([x, y]) => x >= cx - 4 && x <= cx + lw + 4 && y >= cy - 4 && y <= cy + lh + 4).length;
  const [legend, legendTop] = corners.reduce((best, c) => (crossing(c) < crossing(best) ? c : best));
  const legendParts = [`<rect x="${legend}" y="${legendTop}" width="${lw}" height="${lh}" fill="white" fill-opacity="0.85" stroke="#ddd"/>`];
  spec.series.forEach((s, i) => {
    const color = colorOf(s, i);
    const pts = s.x.map((x, j) => [x, s.y[j]]).filter(([, y]) => Number.isFinite(y));
    if (pts.length > 1) {
      parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''} points="${pts.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ')}"/>`);
    }
    for (const [x, y] of pts) parts.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="2.5" fill="${color}"/>`);
    const ly = legendTop + 15 + i * 16;
    legendParts.push(legendMark(legend + 6, ly, color, s.dashed), `<text x="${legend + 34}" y="${ly}" font-size="11">${escapeXml(s.name)}</text>`);
  });
  if (spec.legend ?? true) parts.push(...legendParts);
  parts.push('</svg>');
  return parts.join('\n');
}

/** The legend of `series` as one row of entries, for a figure whose plots share it (each drawn with legend: false). */
export function legendSvg(series: Series[]): string {
  const widths = series.map((s) => entryWidth(s) + 16);
  const width = widths.reduce((a, w) => a + w, 0) + 8;
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="24" font-family="DejaVu Sans, sans-serif">`, `<rect width="100%" height="100%" fill="white"/>`];
  let x = 4;
  series.forEach((s, i) => {
    parts.push(legendMark(x + 6, 16, colorOf(s, i), s.dashed), `<text x="${x + 34}" y="16" font-size="11">${escapeXml(s.name)}</text>`);
    x += widths[i];
  });
  parts.push('</svg>');
  return parts.join('\n');
}

async function rasterize(svg: string): Promise<RgbImage> {
  const { data, info } = await sharp(Buffer.from(svg)).flatten({ background: '#ffffff' }).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, channels: 3, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

export function legendStrip(series: Series[]): Promise<RgbImage> {
  return rasterize(legendSvg(series));
}

/** Rasterises a plot to an RGB image (to be combined with other figures or written with encodePng). */
export function linePlot(spec: PlotSpec): Promise<RgbImage> {
  return rasterize(plotSvg(spec));
}
