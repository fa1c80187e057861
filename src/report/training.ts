// The training curves of a run folder (curves.png beside the trainer's log.jsonl), redrawn after every epoch.
import { join } from 'node:path';
import { encodePng } from '../render/figure.js';
import { trainingCurves } from '../render/training.js';
import type { EpochLog } from '../train/trainer.js';
import { writeFileAtomic } from '../util/fs.js';

export async function writeTrainingCurves(runDir: string, title: string, history: EpochLog[]): Promise<void> {
  writeFileAtomic(join(runDir, 'curves.png'), await encodePng(await trainingCurves(title, history)));
}
