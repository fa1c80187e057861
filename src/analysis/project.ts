// Deconvnet / gradient / guided projections of single units, feature maps and class scores (paper Sec. 2.1).
import type { BackwardSettings, Engine } from '../engine/engine.js';
import { batchItem, sizeOf, tensor, type Tensor } from '../tensor.js';
import { classLayer } from './class-target.js';

/** One unit of a layer's output: feature map `feature` at (y, x); y = x = 0 for vector layers. */
export interface Unit {
  feature: number;
  y: number;
  x: number;
}

export interface ProjectionSettings extends BackwardSettings {
  /** Seed with the unit's activation (Zeiler & Fergus) or with 1 (Captum's convention: a pure derivative). */
  seedValue: 'activation' | 'one';
}

export const ZF_SETTINGS: ProjectionSettings = { rule: 'deconvnet', lrn: 'gradient', seedValue: 'activation' };

export interface Projection {
  /** Signal at the input, [1, C, H, W]. */
  projection: Tensor;
  unit: Unit;
  /** The unit's activation on this input. */
  value: number;
}

/** [C, H, W] for map layers; vector layers [F] are treated as [F, 1, 1]. */
function mapShape(shape: number[]): [number, number, number] {
  return shape.length === 3 ? [shape[0], shape[1], shape[2]] : [shape[0], 1, 1];
}

export function checkUnit(engine: Engine, layer: string, unit: Unit): void {
  const [c, h, w] = mapShape(engine.info(layer).outShape);
  if (!Number.isInteger(unit.feature) || unit.feature < 0 || unit.feature >= c) {
    throw new Error(`feature ${unit.feature} is out of range for layer ${layer}, which has ${c} feature maps (0..${c - 1})`);
  }
  if (!Number.isInteger(unit.y) || !Number.isInteger(unit.x) || unit.y < 0 || unit.y >= h || unit.x < 0 || unit.x >= w) {
    throw new Error(`unit (${unit.y},${unit.x}) is outside layer ${layer}'s ${h}x${w} map`);
  }
}

/** The position of the largest activation of one feature map (first in row-major order on ties). */
export function maxUnit(activation: Tensor, item: number, feature: number): { unit: Unit; value: number } {
  const [, h, w] = mapShape(activation.shape.slice(1));
  const per = sizeOf(activation.shape.slice(1));
  const base = item * per + feature * h * w;
  let best = base;
  for (let i = base + 1; i < base + h * w; i++) if (activation.data[i] > activation.data[best]) best = i;
  const pos = best - base;
  return { unit: { feature, y: Math.floor(pos / w), x: pos % w }, value: activation.data[best] };
}

/** A seed mask for a batch with one unit per batch element (the top-9 case: nine different units at once). */
export function unitMask(layerShape: number[], units: Unit[]): Tensor {
  const [, h, w] = mapShape(layerShape);
  const per = sizeOf(layerShape);
  const mask = tensor([units.length, ...layerShape]);
  units.forEach((u, i) => {
    mask.data[i * per + (u.feature * h + u.y) * w + u.x] = 1;
  });
  return mask;
}

/**
 * Projects one unit per batch element to pixel space, all in one engine call. `inputs` is [N, C, H, W] with
 * N = units.length (repeat an image to project several of its units).
 */
export async function projectUnits(engine: Engine, inputs: Tensor, layer: string, units: Unit[], settings: ProjectionSettings): Promise<Projection[]> {
  if (inputs.shape[0] !== units.length) throw new Error(`projectUnits: ${inputs.shape[0]} inputs for ${units.length} units`);
  for (const u of units) checkUnit(engine, layer, u);
  const info = engine.info(layer);
  const mask = unitMask(info.outShape, units);
  const { projection, activation } = await engine.backward(inputs, { layer, mask, value: settings.seedValue }, settings);
  return units.map((unit, i) => {
    const per = sizeOf(info.outShape);
    const [, h, w] = mapShape(info.outShape);
    return { projection: copy(batchItem(projection, i)), unit, value: activation.data[i * per + (unit.feature * h + unit.y) * w + unit.x] };
  });
}

function copy(t: Tensor): Tensor {
  return { shape: [...t.shape], data: t.data.slice() };
}

/**
 * Projects one unit of one image: the given position, or (`'max'`) the strongest activation of the feature map,
 * as the paper does.
 */
export async function projectUnit(
  engine: Engine,
  input: Tensor,
  layer: string,
  feature: number,
  position: 'max' | [number, number],
  settings: ProjectionSettings,
): Promise<Projection> {
  if (input.shape[0] !== 1) throw new Error('projectUnit takes one image; use projectUnits for a batch');
  if (position !== 'max') {
    const [result] = await projectUnits(engine, input, layer, [{ feature, y: position[0], x: position[1] }], settings);
    return result;
  }
  // One engine call: the graph seeds the map's first maximum, the same unit maxUnit finds in the returned activation.
  checkUnit(engine, layer, { feature, y: 0, x: 0 });
  const shape = engine.info(layer).outShape;
  const [, h, w] = mapShape(shape);
  const mask = tensor([1, ...shape]);
  mask.data.fill(1, feature * h * w, (feature + 1) * h * w);
  const { projection, activation } = await engine.backward(input, { layer, mask, value: settings.seedValue, at: 'max' }, settings);
  const { unit, value } = maxUnit(activation, 0, feature);
  return { projection, unit, value };
}

/** Gradient / deconvnet / guided map of one class score (the last layer's output, before any softmax), seeded with 1. */
export async function projectClass(engine: Engine, input: Tensor, target: number, settings: BackwardSettings): Promise<Tensor> {
  const [p] = await projectUnits(engine, input, classLayer(engine), [{ feature: target, y: 0, x: 0 }], { ...settings, seedValue: 'one' });
  return p.projection;
}
