// The main job on the embedded default, with no download: a seeded zfnet-small, the fixtures' test image, and the
// deconvnet projections of the strongest layer-5 features (the paper's Sec. 2.1 on one image).
import { join } from 'node:path';
import { maxUnit, projectUnits, ZF_SETTINGS } from '../analysis/project.js';
import { imageToInput } from '../data/image.js';
import { testPattern } from '../data/pattern.js';
import { Engine } from '../engine/engine.js';
import { createZooModel } from '../model/zoo.js';
import { encodePng, grid, label, projectionToImage, upscale } from '../render/figure.js';
import { projectionFigurePng } from '../render/projection.js';
import { concatBatch, encodeNpy } from '../tensor.js';
import { writeFileAtomic } from '../util/fs.js';

export interface DemoOptions {
  outDir: string;
  /** How many layer-5 features to project (the strongest on the image). */
  features?: number;
  log?: (line: string) => void;
}

export interface DemoResult {
  files: string[];
}

export async function runDemo(options: DemoOptions): Promise<DemoResult> {
  const log = options.log ?? (() => {});
  const count = options.features ?? 4;
  const layer = 'relu5';
  const model = createZooModel('zfnet-small', { seed: 0 });
  const engine = new Engine(model);
  try {
    log(`model zfnet-small (seeded, untrained), input: the 64x64 test pattern`);
    const image = testPattern(model.input[1]);
    const input = imageToInput(image, model.preprocess);
    const act = (await engine.forward(input, [layer])).activations.get(layer)!;
    const channels = act.shape[1];
    const strongest = Array.from({ length: channels }, (_, f) => maxUnit(act, 0, f))
      .sort((a, b) => b.value - a.value)
      .slice(0, count);
    log(`projecting the ${count} strongest ${layer} features in one batch (deconvnet, LRN true gradient, seeded with the activation)`);
    const batch = concatBatch(strongest.map(() => input));
    const projections = await projectUnits(engine, batch, layer, strongest.map((s) => s.unit), ZF_SETTINGS);

    // Everything is encoded in memory first, then written, so an interrupted demo leaves no partial figure.
    const outputs = new Map<string, Uint8Array>();
    outputs.set('input.png', await encodePng(image));
    const tiles = [await label(upscale(image, 4), 'input', { position: 'top', fontSize: 14 })];
    for (const p of projections) {
      const stem = `${layer}_f${p.unit.feature}`;
      const caption = `zfnet-small ${layer} feature ${p.unit.feature} at (${p.unit.y},${p.unit.x}) = ${p.value.toPrecision(4)}`;
      outputs.set(`${stem}.npy`, encodeNpy(p.projection));
      outputs.set(`${stem}.png`, await projectionFigurePng(input, p.projection, model.preprocess, caption));
      tiles.push(await label(upscale(projectionToImage(p.projection), 4), `feature ${p.unit.feature}`, { position: 'top', fontSize: 14 }));
    }
    const overview = await label(grid(tiles, tiles.length, { gap: 8, background: [255, 255, 255] }),
      `${layer} projections of an untrained zfnet-small; each scaled by its own max |value|, zero = mid-grey`, { position: 'bottom', fontSize: 13 });
    outputs.set('overview.png', await encodePng(overview));
    const files: string[] = [];
    for (const [name, bytes] of outputs) {
      const path = join(options.outDir, name);
      writeFileAtomic(path, bytes);
      files.push(path);
    }
    log(`wrote ${files.length} files to ${options.outDir}/ (overview.png shows them all)`);
    return { files };
  } finally {
    await engine.dispose();
  }
}
