// What the viewer can ask of one model: images, activation maps, projections, top-9 views, occlusion jobs. Every
// engine call goes through one SerialQueue; the HTTP layer (server.ts) only parses requests and encodes answers.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { attribute, ATTRIBUTION_METHODS, type Attribution, type AttributionMethod } from '../analysis/attribution.js';
import { topClasses } from '../analysis/class-target.js';
import { occlusionMaps, type PaperMaps } from '../analysis/occlusion.js';
import { synthesize } from '../analysis/synthesize.js';
import { maxUnit, projectUnit, ZF_SETTINGS, type Projection } from '../analysis/project.js';
import { scanTopk, type LayerTopk } from '../analysis/topk.js';
import { featureViews, type TopkView } from '../analysis/topk-views.js';
import type { Dataset } from '../data/dataset.js';
import { fitImage, imageToInput, inputToImage, type RgbImage } from '../data/image.js';
import type { BackwardRule } from '../engine/compile.js';
import { Engine } from '../engine/engine.js';
import { Landmarks } from '../model/landmarks.js';
import type { Model } from '../model/layers.js';
import type { LayerInfo } from '../model/shapes.js';
import { grid, heatmap, overlay, projectionToImage, viridis } from '../render/figure.js';
import { mapToPixels } from '../render/occlusion.js';
import { readTopkIndex, readTopkProjections, type TopkIndex } from '../report/topk.js';
import { decodeNpy, sizeOf, type Tensor } from '../tensor.js';
import { errorLine } from '../util/errors.js';
import { HttpError } from './http.js';
import { LaneGate, SerialQueue } from './queue.js';

export interface ViewerOptions {
  model: Model;
  data?: Dataset;
  /** A `convscope topk` output folder (index.json, LAYER/projections.npy, LAYER/page-NN.png). */
  topkDir?: string;
  /** Images scanned for a live top-9 when there is --data but no --topk (default 500). */
  scanLimit?: number;
  /** Uploaded or picked images kept in memory; the oldest is forgotten first (default 64). */
  keepImages?: number;
}

export interface StoredImage {
  id: string;
  name: string;
  label?: number;
  input: Tensor;
  image: RgbImage;
}

export interface TopkAnswer {
  layer: string;
  feature: number;
  source: 'topk' | 'live';
  entries: { rank: number; value: number; image: number; name: string; y: number; x: number; hasPatch: boolean }[];
  /** The topk folder's page that shows this feature, relative to the folder; when there is one. */
  page?: string;
}

export type JobState = 'queued' | 'running' | 'done' | 'error' | 'cancelled';

export interface OcclusionJob {
  id: string;
  image: string;
  state: JobState;
  done: number;
  total: number;
  error?: string;
  result?: PaperMaps;
  /** Cancels the job: skipped when queued, stopped between batches when running. */
  abort: AbortController;
}

const KEEP_JOBS = 16;
/** Layers whose projection graphs the viewer keeps compiled (the most recently projected). */
const VIEWER_PROJECTION_LAYERS = 4;
/**
 * Occlusion jobs queued or running at once. Each takes seconds of engine time (in the background lane, which the
 * page's requests overtake between batches): a page posting jobs in a loop must not queue unbounded work.
 */
export const MAX_ACTIVE_JOBS = 4;

/** The attribution methods the viewer computes on request: occlusion has its own job, as it takes seconds. */
export const VIEWER_METHODS: readonly AttributionMethod[] = ATTRIBUTION_METHODS.filter((m) => m !== 'occlusion');

export class Viewer {
  readonly engine: Engine;
  /** Requests of the page, one at a time; occlusion jobs, one at a time, in their own queue and the background lane. */
  readonly queue = new SerialQueue();
  private readonly jobQueue = new SerialQueue();
  private readonly lanes = new LaneGate();
  private readonly images = new Map<string, StoredImage>();
  private readonly jobs = new Map<string, OcclusionJob>();
  private readonly index?: TopkIndex;
  private readonly npyCache = new Map<string, Tensor>();
  private readonly liveTopk = new Map<string, Promise<LayerTopk>>();
  private readonly viewCache = new Map<string, Promise<TopkView[]>>();
  private readonly syntheticCache = new Map<string, Promise<{ image: RgbImage; value: number; source: 'topk' | 'live' }>>();

  constructor(private readonly options: ViewerOptions) {
    // A user browsing the layers of a large model would otherwise keep every layer's projection graph compiled.
    this.engine = new Engine(options.model, { gate: this.lanes, projectionLayers: VIEWER_PROJECTION_LAYERS });
    if (options.topkDir) this.index = readTopkIndex(options.topkDir);
  }

  get model(): Model {
    return this.options.model;
  }

  get data(): Dataset | undefined {
    return this.options.data;
  }

  get topkDir(): string | undefined {
    return this.options.topkDir;
  }

  async dispose(): Promise<void> {
    for (const job of this.jobs.values()) job.abort.abort(new Error('the viewer is closing'));
    await this.jobQueue.run(async () => undefined);
    return this.queue.run(() => this.engine.dispose());
  }

  // ------------------------------------------------------------ model

  layerInfo(name: string): LayerInfo {
    const info = this.engine.infos.find((i) => i.layer.name === name);
    if (!info) throw new HttpError(404, `no layer '${name}' in model ${this.model.name}`);
    return info;
  }

  /** A layer with [C, H, W] output: the only kind with maps to show and units to click. */
  mapLayer(name: string): LayerInfo & { outShape: [number, number, number] } {
    const info = this.layerInfo(name);
    if (info.outShape.length !== 3) throw new HttpError(400, `layer '${name}' outputs a vector [${info.outShape}], not feature maps`);
    return info as LayerInfo & { outShape: [number, number, number] };
  }

  /** Layers the top-9 panel can show: those in the topk folder, or every map layer when it can scan live. */
  topkLayers(): string[] {
    if (this.index) return this.index.layers.map((l) => l.layer);
    if (this.data) return new Landmarks(this.model, this.engine.infos).featureMaps();
    return [];
  }

  modelInfo(): object {
    return {
      name: this.model.name,
      input: this.model.input,
      classes: this.model.classes ?? null,
      layers: this.engine.infos.map((i) => ({ name: i.layer.name, type: i.layer.type, outShape: i.outShape, receptiveField: i.rf })),
      data: this.data ? { name: this.data.name, size: this.data.size, classes: this.data.classes } : null,
      topk: { layers: this.topkLayers(), source: this.index ? 'topk' : this.data ? 'live' : null },
      rules: ['deconvnet', 'gradient', 'guided'],
      attributionMethods: VIEWER_METHODS,
    };
  }

  // ------------------------------------------------------------ images

  private store(entry: Omit<StoredImage, 'id'>): StoredImage {
    const stored = { id: randomUUID().slice(0, 12), ...entry };
    this.images.set(stored.id, stored);
    const keep = this.options.keepImages ?? 64;
    while (this.images.size > keep) this.images.delete(this.images.keys().next().value!);
    return stored;
  }

  /** Fits a decoded image to the model's input the paper's way (short side, centre crop, mean subtracted). */
  addImage(image: RgbImage, name: string, label?: number): StoredImage {
    const [C, H, W] = this.model.input;
    if (C !== 1 && C !== 3) throw new HttpError(400, `model input has ${C} channels; images give 1 or 3`);
    const fitted = fitImage(image, [H, W], C);
    return this.store({ name, label, input: imageToInput(fitted, this.model.preprocess), image: fitted });
  }

  async addDatasetImage(index: number): Promise<StoredImage> {
    const ds = this.data;
    if (!ds) throw new HttpError(404, 'the server was started without --data');
    if (!Number.isInteger(index) || index < 0 || index >= ds.size) throw new HttpError(400, `dataset index must be in 0..${ds.size - 1}, got ${index}`);
    const item = await ds.item(index);
    return this.addImage(item.image, item.name, item.label);
  }

  image(id: string): StoredImage {
    const img = this.images.get(id);
    if (!img) throw new HttpError(404, `no image '${id}' (images are kept in memory; upload it again)`);
    return img;
  }

  // ------------------------------------------------------------ activations and projections

  async activation(id: string, layer: string): Promise<Tensor> {
    this.mapLayer(layer);
    const img = this.image(id);
    const { activations } = await this.queue.run(() => this.engine.forward(img.input, [layer]));
    return activations.get(layer)!;
  }

  /** Per feature map: its maximum and where it is (the viewer's default unit to project). */
  async activationSummary(id: string, layer: string): Promise<object> {
    const act = await this.activation(id, layer);
    const [C, H, W] = act.shape.slice(1);
    const features = Array.from({ length: C }, (_, f) => {
      const { unit, value } = maxUnit(act, 0, f);
      // The map's own range is what its heat map spans (the page draws the colour scale from it).
      const min = act.data.subarray(f * H * W, (f + 1) * H * W).reduce((a, v) => Math.min(a, v), Infinity);
      return { feature: f, max: value, min, y: unit.y, x: unit.x };
    });
    return { image: id, layer, shape: [C, H, W], features };
  }

  /** One feature map as a heat map (viridis, its own range), or every map of the layer in a grid when feature is undefined. */
  async activationImage(id: string, layer: string, feature: number | undefined): Promise<RgbImage> {
    const [C, H, W] = this.mapLayer(layer).outShape;
    if (feature !== undefined && (feature < 0 || feature >= C)) throw new HttpError(400, `feature must be in 0..${C - 1} for ${layer}, got ${feature}`);
    const act = await this.activation(id, layer);
    const map = (f: number) => heatmap(act.data.subarray(f * H * W, (f + 1) * H * W), H, W, viridis);
    if (feature !== undefined) return map(feature);
    return grid(Array.from({ length: C }, (_, f) => map(f)), Math.ceil(Math.sqrt(C)), { gap: 1, background: 255 });
  }

  async project(id: string, layer: string, feature: number, position: 'max' | [number, number], rule: BackwardRule): Promise<Projection> {
    const [C, H, W] = this.mapLayer(layer).outShape;
    if (feature < 0 || feature >= C) throw new HttpError(400, `feature must be in 0..${C - 1} for ${layer}, got ${feature}`);
    if (position !== 'max' && (position[0] < 0 || position[0] >= H || position[1] < 0 || position[1] >= W)) {
      throw new HttpError(400, `unit (${position[0]},${position[1]}) is outside ${layer}'s ${H}x${W} map`);
    }
    const img = this.image(id);
    return this.queue.run(() => projectUnit(this.engine, img.input, layer, feature, position, { ...ZF_SETTINGS, rule }));
  }

  /** The image's most probable classes, with their names where the model has them. */
  async predictions(id: string, top: number): Promise<object> {
    const img = this.image(id);
    const classes = await this.queue.run(() => topClasses(this.engine, img.input, top));
    return { image: id, classes: classes.map((c) => ({ ...c, name: this.model.classes?.[c.class] ?? `class ${c.class}` })) };
  }

  /** A class attribution of a stored image (the predicted class unless a target is given). */
  async attribution(id: string, method: AttributionMethod, target: number | undefined, layer: string | undefined): Promise<{ attribution: Attribution; image: RgbImage }> {
    if (!VIEWER_METHODS.includes(method)) throw new HttpError(400, `method must be one of ${VIEWER_METHODS.join(', ')}, got '${method}'`);
    const classes = this.engine.infos.at(-1)!.outShape[0];
    if (target !== undefined && target >= classes) throw new HttpError(400, `target must be in 0..${classes - 1}, got ${target}`);
    if (layer !== undefined) this.mapLayer(layer);
    const img = this.image(id);
    const attribution = await this.queue.run(() => attribute(this.engine, img.input, method, { target, layer }));
    return { attribution, image: img.image };
  }

  // ------------------------------------------------------------ top-9

  private indexLayer(layer: string): TopkIndex['layers'][number] | undefined {
    return this.index?.layers.find((l) => l.layer === layer);
  }

  private checkTopkFeature(layer: string, feature: number): void {
    if (!this.topkLayers().includes(layer)) {
      const why = this.index ? 'is not in the --topk folder' : this.data ? 'has no feature maps to rank' : 'cannot be ranked: start the server with --topk or --data';
      throw new HttpError(404, `layer '${layer}' ${why}`);
    }
    const C = this.indexLayer(layer)?.shape[0] ?? this.mapLayer(layer).outShape[0];
    if (!(feature >= 0 && feature < C)) throw new HttpError(400, `feature must be in 0..${C - 1} for ${layer}, got ${feature}`);
  }

  /** The layer's ranking: from the topk folder's index when there is one, else scanned over the first images of --data. */
  private layerTopk(layer: string): Promise<LayerTopk> {
    const fromIndex = this.indexLayer(layer);
    if (fromIndex) {
      const features = fromIndex.features.map((f) => f.entries.map((e) => ({ value: e.value, image: e.image, y: e.y, x: e.x })));
      return Promise.resolve({ layer, shape: fromIndex.shape, features });
    }
    let scan = this.liveTopk.get(layer);
    if (!scan) {
      const ds = this.data!;
      const limit = Math.min(ds.size, this.options.scanLimit ?? 500);
      const indices = Array.from({ length: limit }, (_, i) => i);
      scan = this.queue.run(() => scanTopk(this.engine, ds, { layers: [layer], k: 9, indices })).then((r) => r.layers[0]);
      // A failed scan is retried by the next request instead of being remembered.
      scan.catch(() => this.liveTopk.delete(layer));
      this.liveTopk.set(layer, scan);
    }
    return scan;
  }

  /** Projections and patches recomputed from the data (needs --data); cached, a few features at a time. */
  private views(layer: string, feature: number): Promise<TopkView[]> {
    const key = `${layer}/${feature}`;
    let v = this.viewCache.get(key);
    if (!v) {
      v = this.layerTopk(layer).then((topk) => this.queue.run(() => featureViews(this.engine, this.data!, topk, feature)));
      v.catch(() => this.viewCache.delete(key));
      this.viewCache.set(key, v);
      while (this.viewCache.size > 32) this.viewCache.delete(this.viewCache.keys().next().value!);
    }
    return v;
  }

  async topk(layer: string, feature: number): Promise<TopkAnswer> {
    this.checkTopkFeature(layer, feature);
    const fromIndex = this.indexLayer(layer);
    const page = fromIndex?.pages.find((p) => p.features.includes(feature))?.file;
    if (fromIndex && !this.data) {
      const entries = fromIndex.features[feature].entries.map((e) => ({ rank: e.rank, value: e.value, image: e.image, name: e.name, y: e.y, x: e.x, hasPatch: false }));
      return { layer, feature, source: 'topk', entries, page };
    }
    const views = await this.views(layer, feature);
    const entries = views.map((v, rank) => ({ rank, value: v.entry.value, image: v.entry.image, name: v.name, y: v.entry.y, x: v.entry.x, hasPatch: true }));
    return { layer, feature, source: fromIndex ? 'topk' : 'live', entries, page };
  }

  /** The projection of a top-9 entry as the paper shows it (scaled by its own max |value|, zero = mid-grey). */
  async topkProjection(layer: string, feature: number, rank: number): Promise<RgbImage> {
    this.checkTopkFeature(layer, feature);
    const fromIndex = this.indexLayer(layer);
    if (fromIndex && !this.data) {
      const t = this.npy(fromIndex);
      const [F, k, C, h, w] = t.shape;
      if (feature >= F || rank < 0 || rank >= Math.min(k, fromIndex.features[feature].entries.length)) throw new HttpError(404, `no entry ${rank} for ${layer} feature ${feature}`);
      const per = C * h * w;
      const at = (feature * k + rank) * per;
      return projectionToImage({ shape: [C, h, w], data: t.data.subarray(at, at + per) });
    }
    const view = (await this.views(layer, feature))[rank];
    if (!view) throw new HttpError(404, `no entry ${rank} for ${layer} feature ${feature}`);
    return projectionToImage(view.projection);
  }

  async topkPatch(layer: string, feature: number, rank: number): Promise<RgbImage> {
    this.checkTopkFeature(layer, feature);
    if (!this.data) throw new HttpError(404, 'patches need the dataset: start the server with --data');
    const view = (await this.views(layer, feature))[rank];
    if (!view) throw new HttpError(404, `no entry ${rank} for ${layer} feature ${feature}`);
    return view.patch;
  }

  private npy(layer: TopkIndex['layers'][number]): Tensor {
    let t = this.npyCache.get(layer.layer);
    if (!t) {
      t = readTopkProjections(this.topkDir!, layer);
      this.npyCache.set(layer.layer, t);
    }
    return t;
  }

  /**
   * A synthetic image that maximises a feature map's mean: the --topk folder's (topk --synthesize) when it has one,
   * else made on request (cached) with the library's defaults.
   */
  synthetic(layer: string, feature: number): Promise<{ image: RgbImage; value: number; source: 'topk' | 'live' }> {
    const [C] = this.mapLayer(layer).outShape;
    if (!(feature >= 0 && feature < C)) throw new HttpError(400, `feature must be in 0..${C - 1} for ${layer}, got ${feature}`);
    const key = `${layer}/${feature}`;
    let s = this.syntheticCache.get(key);
    if (!s) {
      const fromIndex = this.indexLayer(layer);
      if (fromIndex?.syntheticNpy && fromIndex.features[feature]?.synthetic !== undefined) {
        const t = decodeNpy(readFileSync(join(this.topkDir!, fromIndex.syntheticNpy)), fromIndex.syntheticNpy);
        if (t.shape.length !== 5 || t.shape[0] !== C) throw new HttpError(500, `${fromIndex.syntheticNpy} has shape [${t.shape}], expected [${C}, 1, C, H, W]`);
        const per = sizeOf(t.shape.slice(2));
        const input = { shape: [1, ...t.shape.slice(2)], data: t.data.slice(feature * per, (feature + 1) * per) };
        s = Promise.resolve({ image: inputToImage(input, this.model.preprocess), value: fromIndex.features[feature].synthetic!, source: 'topk' as const });
      } else {
        s = this.queue
          .run(() => synthesize(this.engine, layer, [feature]))
          .then((r) => ({ image: inputToImage(r.images, this.model.preprocess), value: r.final[0], source: 'live' as const }));
      }
      s.catch(() => this.syntheticCache.delete(key));
      this.syntheticCache.set(key, s);
      while (this.syntheticCache.size > 32) this.syntheticCache.delete(this.syntheticCache.keys().next().value!);
    }
    return s;
  }

  // ------------------------------------------------------------ occlusion

  /** Starts an occlusion run (paper mode) in the queue; its progress is polled through job(id). */
  startOcclusion(id: string, options: { layer?: string; window?: number; stride?: number; target?: number }): OcclusionJob {
    const img = this.image(id);
    const classes = this.engine.infos.at(-1)!.outShape[0];
    if (options.target !== undefined && options.target >= classes) throw new HttpError(400, `target must be in 0..${classes - 1}, got ${options.target}`);
    const [, H, W] = this.model.input;
    for (const key of ['window', 'stride'] as const) {
      const v = options[key];
      if (v !== undefined && !(v >= 1 && v <= Math.min(H, W))) throw new HttpError(400, `${key} must be in 1..${Math.min(H, W)}, got ${v}`);
    }
    const layer = options.layer ?? new Landmarks(this.model, this.engine.infos).lastFeatureMap();
    this.mapLayer(layer);
    const active = [...this.jobs.values()].filter((j) => j.state === 'queued' || j.state === 'running').length;
    if (active >= MAX_ACTIVE_JOBS) throw new HttpError(429, `${active} occlusion jobs are queued or running; wait for one to finish`);
    const job: OcclusionJob = { id: randomUUID().slice(0, 12), image: id, state: 'queued', done: 0, total: 0, abort: new AbortController() };
    this.jobs.set(job.id, job);
    // Forget the oldest finished jobs beyond KEEP_JOBS; a job still queued or running keeps its id.
    for (const [key, j] of this.jobs) {
      if (this.jobs.size <= KEEP_JOBS) break;
      if (j.state === 'done' || j.state === 'error' || j.state === 'cancelled') this.jobs.delete(key);
    }
    void this.jobQueue
      .run(() => this.lanes.background(async () => {
        // Cancelled while it waited: the engine is not touched.
        if (job.abort.signal.aborted) throw job.abort.signal.reason;
        job.state = 'running';
        return occlusionMaps(this.engine, img.input, {
          mode: 'paper', layer, window: options.window, stride: options.stride, target: options.target, signal: job.abort.signal,
          onProgress: (done, total) => {
            job.done = done;
            job.total = total;
          },
        });
      }))
      .then(
        (result) => {
          job.result = result;
          job.state = 'done';
        },
        (e: unknown) => {
          if (job.abort.signal.aborted) {
            job.state = 'cancelled';
            return;
          }
          job.error = errorLine(e);
          job.state = 'error';
        },
      );
    return job;
  }

  /** Cancels a queued or running job; a finished one is left as it is. */
  cancelJob(id: string): OcclusionJob {
    const job = this.job(id);
    if (job.state === 'queued' || job.state === 'running') job.abort.abort(new Error('cancelled'));
    return job;
  }

  job(id: string): OcclusionJob {
    const job = this.jobs.get(id);
    if (!job) throw new HttpError(404, `no job '${id}'`);
    return job;
  }

  /** (b) or (d) of Fig. 7 spread over the image and laid over it; p(target) on a fixed 0..1 scale so runs compare. */
  occlusionImage(id: string, which: 'probability' | 'activation'): RgbImage {
    const job = this.job(id);
    if (job.state !== 'done' || !job.result) throw new HttpError(409, `job '${id}' is ${job.state}, not done`);
    const r = job.result;
    const img = this.image(job.image).image;
    const values = which === 'probability' ? r.probability.data : r.activation.data;
    const pixels = mapToPixels(values, r.grid, img.height, img.width);
    const heat = heatmap(pixels, img.height, img.width, viridis, which === 'probability' ? { min: 0, max: 1 } : {});
    return overlay(img, heat, 0.7);
  }

  /** The job as JSON: progress, and the numbers of the result once done. */
  jobJson(job: OcclusionJob): object {
    const base = { id: job.id, image: job.image, state: job.state, done: job.done, total: job.total, error: job.error };
    const r = job.result;
    if (!r) return base;
    const name = (c: number) => this.model.classes?.[c] ?? `class ${c}`;
    return {
      ...base,
      result: {
        layer: r.layer, feature: r.feature, target: r.target, targetName: name(r.target), predicted: r.predicted, predictedName: name(r.predicted),
        unoccluded: r.unoccluded, rows: r.grid.ys.length, cols: r.grid.xs.length, window: r.grid.window, stride: r.grid.stride,
        minProbability: Math.min(...r.probability.data),
      },
    };
  }
}
