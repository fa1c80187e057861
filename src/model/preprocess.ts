// Preprocessing a user can name or type: presets for the common conventions, the torchvision habit of 0..1 units
// understood, and one line that says what a model is fed.
import type { Preprocess } from './layers.js';

/** The Caffe ImageNet mean (RGB, 0..255), the paper's convention with std 1; assumed for an ONNX file that carries none. */
export const CAFFE_RGB_MEAN = [123.68, 116.78, 103.94];

export const PREPROCESS_PRESETS = {
  torchvision: { about: "torchvision's ImageNet mean and std", rgb: { mean: [0.485, 0.456, 0.406].map((v) => v * 255), std: [0.229, 0.224, 0.225].map((v) => v * 255) } },
  caffe: { about: 'the Caffe ImageNet mean with std 1 (the paper)', rgb: { mean: CAFFE_RGB_MEAN, std: [1, 1, 1] } },
  none: { about: 'raw 0..255 pixels', rgb: undefined },
} as const;
export type PresetName = keyof typeof PREPROCESS_PRESETS;
export const PRESET_NAMES = Object.keys(PREPROCESS_PRESETS) as PresetName[];

export interface GivenPreprocess {
  mean?: number[];
  std?: number[];
  /** What was done with the user's values, one line each (a preset applied, 0..1 units read). */
  notes: string[];
}

/**
 * The per-channel mean and std a user asked for, in 0..255 units: a preset, or --mean/--std (which override the
 * preset's). Values that all lie in [0, 1], other than only 0s and 1s, are the torchvision habit of 0..1 units and
 * are scaled by 255; only 0s and 1s (say --std 1) mean the same in both and stay as typed.
 */
export function givenPreprocess(channels: number, preset: PresetName | undefined, typed: { mean?: number[]; std?: number[] }): GivenPreprocess {
  const notes: string[] = [];
  let { mean, std } = typed;
  const values = [...(mean ?? []), ...(std ?? [])];
  if (values.length > 0 && values.every((v) => v >= 0 && v <= 1) && values.some((v) => v !== 0 && v !== 1)) {
    mean = mean?.map((v) => v * 255);
    std = std?.map((v) => v * 255);
    notes.push(`--mean/--std read as 0..1 units (every value is at most 1): ${[mean && `mean ${fmt(mean)}`, std && `std ${fmt(std)}`].filter(Boolean).join(', ')} in 0..255 units`);
  }
  if (preset !== undefined) {
    const p = PREPROCESS_PRESETS[preset];
    if (p.rgb && channels !== 3) throw new Error(`--preprocess ${preset} is for 3-channel (RGB) models; this model takes ${channels} channels`);
    mean ??= p.rgb ? [...p.rgb.mean] : new Array<number>(channels).fill(0);
    std ??= p.rgb ? [...p.rgb.std] : new Array<number>(channels).fill(1);
  }
  return { mean, std, notes };
}

const fmt = (v: readonly number[]) => v.map((x) => Number(x.toFixed(3))).join(',');

/** What a model is fed, in one line: the mean (or mean image), the std, and where they came from. */
export function describePreprocess(p: Preprocess, source: string): string {
  const mean = p.meanImage ? `a [${p.meanImage.shape}] mean image` : `mean ${fmt(p.mean)}`;
  const preset = PRESET_NAMES.find((n) => {
    const rgb = PREPROCESS_PRESETS[n].rgb;
    return !p.meanImage && (rgb ? fmt(rgb.mean) === fmt(p.mean) && fmt(rgb.std) === fmt(p.std) : p.mean.every((v) => v === 0) && p.std.every((v) => v === 1));
  });
  const hint = p.assumed ? '; the file carries none, so this is a guess: give --preprocess torchvision for a torchvision model' : '';
  return `preprocessing: ${mean}, std ${fmt(p.std)} in 0..255 units${preset ? ` (${preset})` : ''}, ${source}${hint}`;
}
