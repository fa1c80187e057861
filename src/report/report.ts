// `convscope report`: the run folder of `convscope demo` (or of the single commands, laid out the same way) as one
// HTML page. Each section reads what its command wrote; a step that did not run is reported as missing.
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, rmSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { writeFileAtomic } from '../util/fs.js';
import { renderReport, type ReportFigure, type ReportSection } from './html.js';

/** Where each step of the demo writes, relative to the run folder. */
export const RUN_LAYOUT = {
  train: 'train',
  topk: 'topk',
  evolution: 'evolution',
  invariance: 'invariance',
  architecture: 'compare-arch',
  occlusion: 'occlusion',
  correspondence: 'correspondence',
  probe: 'probe',
  ablate: 'ablate',
  attribution: 'attribution',
  report: 'report',
} as const;

/** A run folder's record of the steps it left out on purpose, by RUN_LAYOUT key, with the reason. */
export const SKIPPED_FILE = 'skipped.json';
export type SkippedSteps = Partial<Record<keyof typeof RUN_LAYOUT, string>>;

interface Ctx {
  run: string;
  reportDir: string;
  skipped: SkippedSteps;
}

/** Folder inside the report that holds copies of the run's figures, so the report can be moved or zipped alone. */
const FILES_DIR = 'files';

/** A run file shown in the report: copied under report/files/ (its path in the run kept), with its pixel size. */
function figure(ctx: Ctx, path: string, caption: string): ReportFigure {
  const inRun = relative(ctx.run, path).split('\\').join('/');
  const copy = join(ctx.reportDir, FILES_DIR, inRun);
  mkdirSync(dirname(copy), { recursive: true });
  copyFileSync(path, copy);
  return { src: `${FILES_DIR}/${inRun}`, caption, ...pngSize(path) };
}

/** Width and height from a PNG's header (IHDR), so the page lays out before the images load. */
function pngSize(path: string): { width?: number; height?: number } {
  const head = Buffer.alloc(24);
  const fd = openSync(path, 'r');
  try {
    readSync(fd, head, 0, 24, 0);
  } finally {
    closeSync(fd);
  }
  return head.toString('latin1', 12, 16) === 'IHDR' ? { width: head.readUInt32BE(16), height: head.readUInt32BE(20) } : {};
}

function figuresIn(ctx: Ctx, dir: string, pattern: RegExp, caption: (file: string) => string): ReportFigure[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => pattern.test(f)).sort().map((f) => figure(ctx, join(dir, f), caption(f)));
}

function readText(path: string): string | undefined {
  return existsSync(path) ? readFileSync(path, 'utf8') : undefined;
}

function missing(ctx: Ctx, key: keyof typeof RUN_LAYOUT, step: string, dir: string): string {
  const reason = ctx.skipped[key];
  if (reason) return `Not run: ${reason}.`;
  return `No output: ${dir} does not exist. Run \`convscope ${step}\` (or \`convscope demo\`) to produce it.`;
}

function trainingSection(ctx: Ctx): ReportSection {
  const dir = join(ctx.run, RUN_LAYOUT.train);
  const base = { id: 'training', title: 'Training (paper Sec. 3)', text: trainingText(readText(join(dir, 'checkpoint.json'))) };
  if (!existsSync(join(dir, 'curves.png'))) return { ...base, figures: [], missing: missing(ctx, 'train', 'train', dir) };
  const log = readText(join(dir, 'log.jsonl'));
  let markdown: string | undefined;
  if (log) {
    const rows = log.trim().split('\n').map((l) => JSON.parse(l) as { epoch: number; trainLoss: number; trainAccuracy: number; valAccuracy?: number; seconds: number });
    markdown = ['| epoch | train loss | train accuracy | validation accuracy | seconds |', '|---|---|---|---|---|',
      ...rows.map((r) => `| ${r.epoch} | ${r.trainLoss.toFixed(3)} | ${(100 * r.trainAccuracy).toFixed(1)}% | ${r.valAccuracy === undefined ? '' : `${(100 * r.valAccuracy).toFixed(1)}%`} | ${r.seconds.toFixed(1)} |`)].join('\n');
  }
  return { ...base, figures: [figure(ctx, join(dir, 'curves.png'), 'training curves')], markdown };
}

/** What the run's training did, from the configuration its checkpoint records. */
function trainingText(checkpoint: string | undefined): string {
  const c = checkpoint ? (JSON.parse(checkpoint) as { config?: { batchSize: number; lr: number; momentum: number; weightDecay: number; dropout: boolean; renormCap: number | null } }).config : undefined;
  const how = c
    ? `SGD (batch ${c.batchSize}, learning rate ${c.lr}, momentum ${c.momentum}, weight decay ${c.weightDecay}${c.dropout ? ', dropout where the model has it' : ''}${c.renormCap !== null ? `, conv filters renormalised to RMS ${c.renormCap}` : ''})`
    : 'SGD';
  return `Loss and accuracy per epoch of the model trained with ${how}; the curves name the model and the data. Validation accuracy is measured on a held-out split after every epoch.`;
}

function topkSection(ctx: Ctx): ReportSection {
  const dir = join(ctx.run, RUN_LAYOUT.topk);
  const index = readText(join(dir, 'index.json'));
  const scanned = index ? (JSON.parse(index) as { layers: { layer: string }[] }).layers.map((l) => l.layer) : [];
  const which = scanned.length > 0 ? `each of the ${scanned.length} layers scanned (${scanned.length > 2 ? `${scanned[0]} to ${scanned[scanned.length - 1]}` : scanned.join(' and ')})` : 'the scanned layers';
  const base = {
    id: 'topk', title: 'Fig. 2: top-9 activations per feature map',
    text: `For each feature map of ${which}, the 9 strongest activations over the validation images (at most one per image), each projected to pixel space by the deconvnet beside the image patch under its receptive field. Projections are scaled by their own max |value| with zero at mid-grey.`,
  };
  if (!existsSync(dir)) return { ...base, figures: [], missing: missing(ctx, 'topk', 'topk', dir) };
  const layers = readdirSync(dir).filter((f) => existsSync(join(dir, f, 'page-01.png'))).sort();
  // The first page of each layer in the report; the others are listed as links.
  const figures = layers.map((l) => figure(ctx, join(dir, l, 'page-01.png'), `${l}, first page`));
  const more = layers.map((l) => {
    const pages = figuresIn(ctx, join(dir, l), /^page-\d+\.png$/, (f) => f.replace('.png', ''));
    return `${l}: ${pages.map((p) => `[${p.caption}](${p.src})`).join(', ')}`;
  });
  return { ...base, figures, markdown: more.join('\n') };
}

function evolutionSection(ctx: Ctx): ReportSection {
  const dir = join(ctx.run, RUN_LAYOUT.evolution);
  const base = {
    id: 'evolution', title: 'Fig. 4: feature evolution during training',
    text: 'For randomly chosen feature maps of each layer, the projection of the strongest activation over the training images at each snapshot (columns: epochs). A layer counts as settled from the first epoch after which the median correlation between consecutive projections stays at or above 0.9.',
  };
  const summary = readText(join(dir, 'evolution.json'));
  if (!summary) return { ...base, figures: [], missing: missing(ctx, 'evolution', 'evolve', dir) };
  const parsed = JSON.parse(summary) as { epochs: number[]; layers: { layer: string; convergedEpoch: number | null; medianCorrelation: number[] }[] };
  const markdown = ['| layer | settled from epoch | median correlation per step |', '|---|---|---|',
    ...parsed.layers.map((l) => `| ${l.layer} | ${l.convergedEpoch ?? 'not yet'} | ${l.medianCorrelation.map((c) => c.toFixed(2)).join(', ')} |`)].join('\n');
  return { ...base, figures: figuresIn(ctx, dir, /^evolution-.*\.png$/, (f) => f.replace(/^evolution-|\.png$/g, '')), markdown };
}

function simpleSection(ctx: Ctx, id: keyof typeof RUN_LAYOUT, title: string, text: string, step: string, dirName: string, pngs: RegExp, mdFile?: string): ReportSection {
  const dir = join(ctx.run, dirName);
  const figures = figuresIn(ctx, dir, pngs, (f) => f.replace('.png', ''));
  if (figures.length === 0) return { id, title, text, figures: [], missing: missing(ctx, id, step, dir) };
  return { id, title, text, figures, markdown: mdFile ? readText(join(dir, mdFile)) : undefined };
}

function attributionSection(ctx: Ctx): ReportSection {
  const dir = join(ctx.run, RUN_LAYOUT.attribution);
  const base = {
    id: 'attribution', title: 'Beyond the paper: attribution methods and their faithfulness',
    text: 'Every class attribution convscope computes (the paper\'s deconvnet and occlusion, saliency, guided backpropagation, Grad-CAM, Guided Grad-CAM, Integrated Gradients, SmoothGrad) on held-out images, and a measured ranking of the methods on this model and data: deletion and insertion curves (how fast p(class) falls as the highest-scoring pixels are removed, and rises as they are restored onto a blurred copy) and the pointing game (is the highest-scoring pixel on the object?).',
  };
  const runs = existsSync(dir) ? readdirSync(dir).filter((f) => existsSync(join(dir, f, 'attributions.png'))).sort() : [];
  const figures = [
    ...runs.map((r) => figure(ctx, join(dir, r, 'attributions.png'), r)),
    ...(existsSync(join(dir, 'faithfulness.png')) ? [figure(ctx, join(dir, 'faithfulness.png'), 'deletion and insertion curves')] : []),
  ];
  if (figures.length === 0) return { ...base, figures: [], missing: missing(ctx, 'attribution', 'attribute and faithfulness', dir) };
  return { ...base, figures, markdown: readText(join(dir, 'faithfulness.md')) };
}

function occlusionSection(ctx: Ctx): ReportSection {
  const dir = join(ctx.run, RUN_LAYOUT.occlusion);
  const base = {
    id: 'occlusion', title: 'Fig. 7: occlusion sensitivity',
    text: 'A grey square slides over each image; for every position the maps show the total activation of the strongest map of the deepest rectified layer (layer 5 on ZFNet), the probability of the class explained (the label, or the predicted class for unlabelled images) and the most probable class, with deconvnet projections of that feature for a few square positions. Low probability where the square covers the object means the model looks at the object, not its surroundings.',
  };
  const runs = existsSync(dir) ? readdirSync(dir).filter((f) => existsSync(join(dir, f, 'figure.png'))).sort() : [];
  if (runs.length === 0) return { ...base, figures: [], missing: missing(ctx, 'occlusion', 'occlude', dir) };
  return { ...base, figures: runs.map((r) => figure(ctx, join(dir, r, 'figure.png'), r)), markdown: readText(join(dir, 'score.md')) };
}

function transferSection(ctx: Ctx): ReportSection {
  const probeDir = join(ctx.run, RUN_LAYOUT.probe);
  const ablateDir = join(ctx.run, RUN_LAYOUT.ablate);
  const [probe, ablation] = [readText(join(probeDir, 'probe.md')), readText(join(ablateDir, 'ablation.md'))];
  const base = {
    id: 'transfer', title: 'Sec. 5 and Table 3: transfer and ablation',
    text: 'Transfer: a linear softmax on the frozen features of each level, trained on a few images per class of classes the features never saw (the paper: ImageNet features on Caltech-101), beside the same architecture with random weights. Ablation: layers removed, their neighbours adapted, every model fine-tuned briefly; the top-1 error before and after (the paper: the fully connected layers can go, the middle convolutions cannot).',
  };
  if (!probe && !ablation) return { ...base, figures: [], missing: missing(ctx, 'probe', 'probe` and `convscope ablate', probeDir) };
  const notRun = (key: 'probe' | 'ablate', what: string) => (ctx.skipped[key] ? `${what} not run: ${ctx.skipped[key]}.` : '');
  return {
    ...base,
    figures: existsSync(join(probeDir, 'probe.png')) ? [figure(ctx, join(probeDir, 'probe.png'), 'probe accuracy per layer')] : [],
    markdown: [probe ?? notRun('probe', 'Transfer'), ablation ?? notRun('ablate', 'Ablation')].filter(Boolean).join('\n\n'),
  };
}

/** Builds `<run>/report/index.html` from a run folder; returns its path. */
export function buildReport(run: string, title = 'convscope report'): string {
  if (!existsSync(run)) throw new Error(`run folder ${run} does not exist`);
  const reportDir = join(run, RUN_LAYOUT.report);
  // Copies of an earlier build may show figures the run no longer has.
  rmSync(join(reportDir, FILES_DIR), { recursive: true, force: true });
  const skippedText = readText(join(run, SKIPPED_FILE));
  const ctx: Ctx = { run, reportDir, skipped: skippedText ? (JSON.parse(skippedText) as SkippedSteps) : {} };
  const sections: ReportSection[] = [
    trainingSection(ctx),
    topkSection(ctx),
    evolutionSection(ctx),
    simpleSection(ctx, 'invariance', 'Fig. 5: invariance to translation, scale and rotation',
      'Euclidean distance between the feature vectors of original and transformed images at layers 1 and 7, relative to the original vector\'s norm, and the probability of the true class, as the image is shifted vertically, scaled and rotated. Uncovered areas are filled with the dataset mean.',
      'invariance', RUN_LAYOUT.invariance, /\.png$/),
    simpleSection(ctx, 'architecture', 'Fig. 6: architecture selection',
      'The first-layer filters of alexnet-small (11x11, stride 4) and zfnet-small (7x7, stride 2) trained on the same data with the same budget, with the number of dead feature maps and the share of filter energy above half the Nyquist frequency. The paper chose the smaller filter and stride because the large ones left dead filters and aliasing.',
      'compare-arch', RUN_LAYOUT.architecture, /\.png$/, 'compare-arch.md'),
    occlusionSection(ctx),
    simpleSection(ctx, 'correspondence', 'Table 1: correspondence',
      'The same part is occluded in several images and the sign pattern of the change in layer-5 and layer-7 features is compared between images (mean normalised Hamming distance Δ over pairs). A lower Δ for the part than for random regions of the same size means the model moves its representation the same way for that part in every image.',
      'correspond', RUN_LAYOUT.correspondence, /\.png$/, 'correspondence.md'),
    transferSection(ctx),
    attributionSection(ctx),
  ];
  const html = renderReport(title, `Zeiler & Fergus, *Visualizing and Understanding Convolutional Networks* (ECCV 2014), reproduced on the run in \`${run}\`.`, sections);
  const path = join(reportDir, 'index.html');
  writeFileAtomic(path, html);
  return path;
}
