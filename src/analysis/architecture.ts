// Fig. 6: the same data and budget for an AlexNet-style first layer (11x11 stride 4) and ZFNet's (7x7 stride 2),
// then the filters and activity of both, so dead filters and aliasing can be compared side by side.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Dataset } from '../data/dataset.js';
import { Engine } from '../engine/engine.js';
import type { Model } from '../model/layers.js';
import { createZooModel } from '../model/zoo.js';
import { train, type EpochLog, type TrainConfig, type TrainRunOptions } from '../train/trainer.js';
import type { OnProgress } from '../util/progress.js';
import { filterReport, type ConvLayerReport } from './filters.js';

export interface ArchitectureResult {
  name: string;
  model: Model;
  history: EpochLog[];
  valAccuracy: number | undefined;
  rows: ConvLayerReport[];
  images: number;
}

/** The two small zoo models the paper's comparison maps to at 64x64. */
export const COMPARED = ['alexnet-small', 'zfnet-small'] as const;

export async function compareArchitectures(
  trainSet: Dataset,
  valSet: Dataset,
  config: TrainConfig,
  outDir: string,
  hooks: Pick<TrainRunOptions, 'log' | 'resume'> & {
    activityIndices?: number[];
    runs?: Partial<Record<(typeof COMPARED)[number], string>>;
    /** Per model: the trainer's progress and epoch hooks, and the activity pass's progress. */
    onRun?: (name: string, dir: string) => Pick<TrainRunOptions, 'onProgress' | 'onEpoch'> & { onActivityProgress?: OnProgress };
  } = {},
): Promise<ArchitectureResult[]> {
  const results: ArchitectureResult[] = [];
  for (const name of COMPARED) {
    const given = hooks.runs?.[name];
    const dir = given ?? join(outDir, name);
    if (given && !existsSync(join(given, 'checkpoint.json'))) throw new Error(`${given} holds no convscope training run of ${name}`);
    hooks.log?.(given ? `using the finished ${name} run in ${given}` : `training ${name}`);
    const model = createZooModel(name, { seed: config.seed, init: 'kaiming', classes: trainSet.classes.length });
    // A given run, or on --resume a started one, continues from its checkpoint (a finished run just loads; a run
    // with no checkpoint yet starts over).
    const resume = given !== undefined || hooks.resume === true;
    const { onActivityProgress, ...runHooks } = hooks.onRun?.(name, dir) ?? {};
    const run = await train(model, trainSet, valSet, config, { outDir: dir, resume, log: hooks.log, ...runHooks });
    const engine = new Engine(run.model);
    try {
      hooks.log?.(`measuring ${name}'s filters and activity on ${valSet.name}`);
      const report = await filterReport(engine, valSet, { onProgress: onActivityProgress, indices: hooks.activityIndices });
      const last = run.history[run.history.length - 1];
      results.push({ name, model: run.model, history: run.history, valAccuracy: last?.valAccuracy, rows: report.rows, images: report.images });
    } finally {
      await engine.dispose();
    }
  }
  return results;
}
