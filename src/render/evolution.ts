import type { LayerEvolution } from '../analysis/evolution.js';
import { blankImage, type RgbImage } from '../data/image.js';
import { grid, hstack, label, projectionToImage, upscale, vstack } from './figure.js';

const WHITE: [number, number, number] = [255, 255, 255];

/** Fig. 4 for one layer: one row per feature, one column per snapshot, each cell the strongest activation's projection. */
export async function evolutionFigure(evo: LayerEvolution, epochs: number[], dataName: string): Promise<RgbImage> {
  const biggest = Math.max(...evo.tracks.flatMap((t) => t.views.map((v) => Math.max(v.projection.shape[1], v.projection.shape[2]))));
  const factor = Math.max(1, Math.round(56 / biggest));
  const cellSize = biggest * factor;
  const header = await Promise.all(epochs.map((e) => label(blankImage(cellSize, 1, 3, 255), `epoch ${e}`, { position: 'top', fontSize: 12 })));
  const rows: RgbImage[] = [hstack([blankImage(64, 1, 3, 255), grid(header, epochs.length, { gap: 4, background: WHITE })], { gap: 4, background: WHITE })];
  for (const t of evo.tracks) {
    const cells = t.views.map((v) => upscale(projectionToImage(v.projection), factor));
    const name = await label(blankImage(64, cellSize, 3, 255), `#${t.feature}`, { position: 'top', fontSize: 12 });
    rows.push(hstack([name, grid(cells, epochs.length, { gap: 4, background: WHITE })], { gap: 4, background: WHITE }));
  }
  const converged = evo.convergedEpoch === null ? 'not yet stable at the last snapshot' : `stable from epoch ${evo.convergedEpoch}`;
  const fig = await label(vstack(rows, { gap: 4, background: WHITE }), `${evo.layer}: strongest activation over ${dataName} at each snapshot`, { position: 'top', fontSize: 14 });
  return label(fig, `${converged} (median correlation of consecutive projections >= 0.9); each projection scaled by its own max |value|, zero = mid-grey`, { position: 'bottom', fontSize: 11, color: [70, 70, 70] });
}
