// The files of `convscope evolve` (Fig. 4): per layer its features x snapshots figure, and evolution.json with the
// correlations, the top-9 overlaps and where each feature's strongest activation is at each snapshot.
import { join } from 'node:path';
import type { EvolutionResult } from '../analysis/evolution.js';
import { evolutionFigure } from '../render/evolution.js';
import { encodePng } from '../render/figure.js';
import { compactJson } from '../util/json.js';
import { writeFileAtomic } from '../util/fs.js';

/** Writes every file once all are encoded, so that a failed figure leaves no output; returns the files' names. */
export async function writeEvolution(result: EvolutionResult, outDir: string): Promise<string[]> {
  const files = new Map<string, Uint8Array | string>();
  for (const layer of result.layers) files.set(`evolution-${layer.layer}.png`, await encodePng(await evolutionFigure(layer, result.epochs, result.data)));
  const layers = result.layers.map((l) => ({
    layer: l.layer,
    convergedEpoch: l.convergedEpoch,
    medianCorrelation: l.medianCorrelation,
    features: l.tracks.map((t) => ({ feature: t.feature, correlation: t.correlation, top9Overlap: t.top9Overlap, strongest: t.views.map((v) => ({ value: v.entry.value, image: v.name, y: v.entry.y, x: v.entry.x })) })),
  }));
  files.set('evolution.json', compactJson({ epochs: result.epochs, data: result.data, images: result.images, layers }));
  for (const [name, bytes] of files) writeFileAtomic(join(outDir, name), bytes);
  return [...files.keys()];
}
