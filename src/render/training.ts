import type { EpochLog } from '../train/trainer.js';
import type { RgbImage } from '../data/image.js';
import { hstack } from './figure.js';
import { linePlot } from './plot.js';

/** Loss and accuracy per epoch, train beside validation. */
export async function trainingCurves(title: string, history: EpochLog[]): Promise<RgbImage> {
  const x = history.map((h) => h.epoch);
  const val = history.filter((h) => h.valAccuracy !== undefined);
  const loss = await linePlot({
    title: `${title}: loss`, xLabel: 'epoch', yLabel: 'cross-entropy',
    series: [
      { name: 'train', x, y: history.map((h) => h.trainLoss) },
      ...(val.length ? [{ name: 'validation', x: val.map((h) => h.epoch), y: val.map((h) => h.valLoss!), dashed: true }] : []),
    ],
  });
  const accuracy = await linePlot({
    title: `${title}: accuracy`, xLabel: 'epoch', yLabel: 'accuracy', yRange: [0, 1],
    series: [
      { name: 'train', x, y: history.map((h) => h.trainAccuracy) },
      ...(val.length ? [{ name: 'validation', x: val.map((h) => h.epoch), y: val.map((h) => h.valAccuracy!), dashed: true }] : []),
    ],
  });
  return hstack([loss, accuracy], { gap: 8, background: [255, 255, 255] });
}
