import sharp from 'sharp';
import { blankImage, checkImage, toChannels, type RgbImage } from '../data/image.js';
import { GLYPH_H, GLYPH_W, glyph } from './bitmapfont.js';
import type { Rgb } from './colormap.js';

/** Text coverage, 0 (background) .. 255 (ink), cropped to the ink. */
export interface TextMask {
  width: number;
  height: number;
  alpha: Uint8Array;
}

/** 'pango' draws with system fonts through sharp; 'bitmap' with the built-in 5x7 capitals. */
export type TextBackend = 'pango' | 'bitmap';

export interface TextOptions {
  fontSize?: number;
  /** Lines wider than this many pixels wrap at word boundaries. */
  maxWidth?: number;
  /** 'auto' (default) uses pango when a font actually renders, else the bitmap font. */
  renderer?: TextBackend | 'auto';
}

const EMPTY: TextMask = { width: 0, height: 0, alpha: new Uint8Array(0) };

function escapeMarkup(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

async function pangoMask(text: string, fontSize: number, maxWidth?: number): Promise<TextMask> {
  const { data, info } = await sharp({
    text: {
      text: escapeMarkup(text),
      font: `sans ${fontSize}px`,
      dpi: 72,
      ...(maxWidth ? { width: Math.max(1, Math.floor(maxWidth)), wrap: 'word-char' as const } : {}),
    },
  })
    .raw()
    .toBuffer({ resolveWithObject: true });
  // Non-RGBA text output is white ink on black, grey replicated over the channels.
  const alpha = new Uint8Array(info.width * info.height);
  for (let i = 0; i < alpha.length; i++) alpha[i] = data[i * info.channels];
  return { width: info.width, height: info.height, alpha };
}

function inkOf(m: TextMask): number {
  let s = 0;
  for (const a of m.alpha) s += a;
  return s;
}

let backendProbe: Promise<TextBackend> | undefined;

/**
 * Which backend 'auto' uses. Without usable fonts pango draws every character as the same box,
 * so a 'W' and a '.' with equal ink means no real font: then captions use the bitmap font, with one warning.
 */
export function textBackend(): Promise<TextBackend> {
  backendProbe ??= (async (): Promise<TextBackend> => {
    let ok = false;
    try {
      const [w, dot] = await Promise.all([pangoMask('W', 16), pangoMask('.', 16)]);
      ok = inkOf(w) > 3 * inkOf(dot) && inkOf(dot) > 0;
    } catch {
      ok = false;
    }
    if (!ok) {
      process.emitWarning('no system font renders text (fontconfig found none); figure captions use a built-in 5x7 bitmap font', {
        code: 'CONVSCOPE_NO_FONTS',
      });
    }
    return ok ? 'pango' : 'bitmap';
  })();
  return backendProbe;
}

/** Integer scale for the 5x7 font that gives roughly the cap height of a fontSize-pixel sans font. */
function bitmapScale(fontSize: number): number {
  return Math.max(1, Math.round(fontSize / 9.6));
}

function wrapChars(text: string, maxChars: number): string[] {
  const lines: string[] = [];
  for (const para of text.split('\n')) {
    let line = '';
    for (const word of para.split(' ')) {
      let w = word;
      while (w.length > maxChars) {
        if (line) lines.push(line);
        lines.push(w.slice(0, maxChars));
        w = w.slice(maxChars);
        line = '';
      }
      const next = line ? `${line} ${w}` : w;
      if (next.length > maxChars) {
        lines.push(line);
        line = w;
      } else {
        line = next;
      }
    }
    lines.push(line);
  }
  return lines;
}

function bitmapMask(text: string, fontSize: number, maxWidth?: number): TextMask {
  const s = bitmapScale(fontSize);
  const cellW = (GLYPH_W + 1) * s;
  const lineH = (GLYPH_H + 2) * s;
  const maxChars = maxWidth ? Math.max(1, Math.floor((maxWidth + s) / cellW)) : Infinity;
  const lines = wrapChars(text, maxChars).map((l) => [...l]);
  const longest = Math.max(...lines.map((l) => l.length));
  if (longest === 0) return EMPTY;
  const width = longest * cellW - s;
  const height = lines.length * lineH - 2 * s;
  const alpha = new Uint8Array(width * height);
  lines.forEach((chars, li) => {
    chars.forEach((ch, ci) => {
      const code = ch.codePointAt(0) ?? 0;
      const rows = glyph(code >= 32 && code < 127 ? ch : '?');
      for (let gy = 0; gy < GLYPH_H; gy++) {
        for (let gx = 0; gx < GLYPH_W; gx++) {
          if (!rows[gy][gx]) continue;
          for (let dy = 0; dy < s; dy++) {
            const y = li * lineH + gy * s + dy;
            alpha.fill(255, y * width + ci * cellW + gx * s, y * width + ci * cellW + (gx + 1) * s);
          }
        }
      }
    });
  });
  return { width, height, alpha };
}

export async function renderText(text: string, opts: TextOptions = {}): Promise<TextMask> {
  const fontSize = opts.fontSize ?? 12;
  if (text.trim() === '') return EMPTY;
  const backend = !opts.renderer || opts.renderer === 'auto' ? await textBackend() : opts.renderer;
  return backend === 'pango' ? pangoMask(text, fontSize, opts.maxWidth) : bitmapMask(text, fontSize, opts.maxWidth);
}

export interface LabelOptions {
  position?: 'top' | 'bottom';
  fontSize?: number;
  align?: 'left' | 'center';
  color?: Rgb;
  background?: Rgb;
  /** Space around the text, in pixels; default 0.4 x fontSize. */
  padding?: number;
  renderer?: TextBackend | 'auto';
}

function paint(dst: RgbImage, mask: TextMask, top: number, left: number, color: Rgb): void {
  for (let y = 0; y < mask.height; y++) {
    for (let x = 0; x < mask.width; x++) {
      const a = mask.alpha[y * mask.width + x] / 255;
      if (a === 0) continue;
      const o = ((top + y) * dst.width + left + x) * 3;
      for (let c = 0; c < 3; c++) dst.data[o + c] = Math.round(dst.data[o + c] * (1 - a) + color[c] * a);
    }
  }
}

/**
 * Adds a caption strip above or below img. Long text wraps to the image width; a caption that still does
 * not fit widens the figure (image centred) rather than being cut. The result is RGB.
 */
export async function label(img: RgbImage, text: string, opts: LabelOptions = {}): Promise<RgbImage> {
  checkImage(img, 'label image');
  const fontSize = opts.fontSize ?? 12;
  const pad = opts.padding ?? Math.round(fontSize * 0.4);
  const color = opts.color ?? [0, 0, 0];
  const bg = opts.background ?? [255, 255, 255];
  // Below about six characters per line wrapping stops helping, so a very narrow image gets a wider caption.
  const maxWidth = Math.max(img.width - 2 * pad, 6 * fontSize);
  const mask = await renderText(text, { fontSize, maxWidth, renderer: opts.renderer });
  if (mask.width === 0) return toChannels(img, 3);
  const width = Math.max(img.width, mask.width + 2 * pad);
  const stripH = Math.max(mask.height, Math.ceil(fontSize * 1.25)) + 2 * pad;
  const out = blankImage(width, img.height + stripH, 3);
  for (let i = 0; i < width * out.height; i++) out.data.set(bg, 3 * i);
  const imgTop = opts.position === 'top' ? stripH : 0;
  const stripTop = opts.position === 'top' ? 0 : img.height;
  const rgb = toChannels(img, 3);
  const imgLeft = Math.floor((width - img.width) / 2);
  for (let y = 0; y < img.height; y++) {
    out.data.set(rgb.data.subarray(y * img.width * 3, (y + 1) * img.width * 3), ((imgTop + y) * width + imgLeft) * 3);
  }
  const textLeft = opts.align === 'left' ? pad : Math.floor((width - mask.width) / 2);
  paint(out, mask, stripTop + Math.floor((stripH - mask.height) / 2), textLeft, color);
  return out;
}
