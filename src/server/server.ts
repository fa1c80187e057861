// The HTTP API and the static viewer over one Viewer, with node:http only. Routes are matched on the raw path so
// that encoded tricks ('%2e%2e', '%2f') reach the static resolver undecoded and are judged there.
import { existsSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkSameDataset } from '../data/dataset.js';
import { decodeImageBuffer } from '../data/image.js';
import { readTopkIndex } from '../report/topk.js';
import { BACKWARD_RULES } from '../engine/compile.js';
import { attributionPanel } from '../render/attribution.js';
import { encodePng, projectionToImage } from '../render/figure.js';
import { choiceParam, HttpError, intParam, readBody, sendBytes, sendError, sendJson } from './http.js';
import { checkRequest, SECURITY_HEADERS, type GuardOptions } from './guard.js';
import { readStatic, staticRoot, type StaticRoot } from './static.js';
import { Viewer, VIEWER_METHODS, type ViewerOptions } from './viewer.js';

export const DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024;

export interface ServeOptions extends ViewerOptions {
  /** Default 127.0.0.1: the viewer has no authentication, so it is not exposed unless asked. */
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  uploadLimit?: number;
  /** Host names (besides IP literals and localhost) the viewer answers to; see guard.ts. */
  allowHosts?: readonly string[];
  /** The viewer's folder (default: web/ of this package). */
  webDir?: string;
}

export interface RunningServer {
  url: string;
  server: Server;
  viewer: Viewer;
  close(): Promise<void>;
}

/** web/ beside src/ (tsx) or beside dist/ (built): the first ancestor of this module that has web/index.html. */
export function defaultWebDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, 'web', 'index.html'))) return join(dir, 'web');
    dir = dirname(dir);
  }
  throw new Error('cannot find the viewer folder web/ (with index.html) above the server module');
}

interface Context {
  viewer: Viewer;
  web: StaticRoot;
  topk?: StaticRoot;
  uploadLimit: number;
}

type Handler = (ctx: Context, req: IncomingMessage, res: ServerResponse, match: string[], query: URLSearchParams) => Promise<void>;

interface Route {
  method: 'GET' | 'POST' | 'DELETE';
  pattern: RegExp;
  handler: Handler;
}

const SEGMENT = '([A-Za-z0-9_.-]+)';

async function sendPng(res: ServerResponse, image: Parameters<typeof encodePng>[0], headers: Record<string, string> = {}): Promise<void> {
  sendBytes(res, 'image/png', await encodePng(image), headers);
}

function imageJson(img: { id: string; name: string; label?: number }): object {
  return { id: img.id, name: img.name, label: img.label ?? null, url: `/api/images/${img.id}/image.png` };
}

/** Optional feature: absent means every map (a grid). */
function optionalInt(q: URLSearchParams, name: string, max: number): number | undefined {
  return q.has(name) && q.get(name) !== '' ? intParam(q, name, 0, max) : undefined;
}

const ROUTES: Route[] = [
  {
    method: 'GET', pattern: /^\/api\/model$/,
    handler: async (ctx, _req, res) => sendJson(res, 200, ctx.viewer.modelInfo()),
  },
  {
    method: 'POST', pattern: /^\/api\/images$/,
    handler: async (ctx, req, res) => {
      const body = await readBody(req, ctx.uploadLimit);
      if (body.length === 0) throw new HttpError(400, 'empty upload: send the image bytes as the request body');
      let decoded;
      try {
        decoded = await decodeImageBuffer(body, 'upload');
      } catch (e) {
        throw new HttpError(400, (e as Error).message);
      }
      const name = String(req.headers['x-filename'] ?? 'upload').slice(0, 200);
      sendJson(res, 201, imageJson(ctx.viewer.addImage(decoded, name)));
    },
  },
  {
    method: 'POST', pattern: /^\/api\/dataset\/(\d+)$/,
    handler: async (ctx, _req, res, m) => sendJson(res, 201, imageJson(await ctx.viewer.addDatasetImage(Number(m[1])))),
  },
  {
    method: 'GET', pattern: new RegExp(`^/api/images/${SEGMENT}/image\\.png$`),
    handler: async (ctx, _req, res, m) => sendPng(res, ctx.viewer.image(m[1]).image),
  },
  {
    method: 'GET', pattern: new RegExp(`^/api/images/${SEGMENT}/predictions$`),
    handler: async (ctx, _req, res, m, q) => sendJson(res, 200, await ctx.viewer.predictions(m[1], optionalInt(q, 'top', 1000) ?? 5)),
  },
  {
    method: 'GET', pattern: new RegExp(`^/api/images/${SEGMENT}/activations$`),
    handler: async (ctx, _req, res, m, q) => sendJson(res, 200, await ctx.viewer.activationSummary(m[1], layerParam(q))),
  },
  {
    method: 'GET', pattern: new RegExp(`^/api/images/${SEGMENT}/activation\\.png$`),
    handler: async (ctx, _req, res, m, q) => sendPng(res, await ctx.viewer.activationImage(m[1], layerParam(q), optionalInt(q, 'feature', 1 << 20))),
  },
  {
    method: 'GET', pattern: new RegExp(`^/api/images/${SEGMENT}/projection\\.png$`),
    handler: async (ctx, _req, res, m, q) => {
      const feature = intParam(q, 'feature', 0, 1 << 20);
      const hasY = q.has('y'), hasX = q.has('x');
      if (hasY !== hasX) throw new HttpError(400, "give both 'y' and 'x', or neither (the map's strongest unit)");
      const position: 'max' | [number, number] = hasY ? [intParam(q, 'y', 0, 1 << 20), intParam(q, 'x', 0, 1 << 20)] : 'max';
      const rule = choiceParam(q, 'rule', BACKWARD_RULES, 'deconvnet');
      const p = await ctx.viewer.project(m[1], layerParam(q), feature, position, rule);
      // The unit and its value travel in a header so that the image stays a plain PNG the page can show.
      await sendPng(res, projectionToImage(p.projection), { 'x-convscope-unit': JSON.stringify({ ...p.unit, value: p.value, rule }) });
    },
  },
  {
    method: 'GET', pattern: new RegExp(`^/api/images/${SEGMENT}/attribution\\.png$`),
    handler: async (ctx, _req, res, m, q) => {
      const method = choiceParam(q, 'method', VIEWER_METHODS, 'gradcam');
      const layer = q.get('layer') || undefined;
      const { attribution: a, image } = await ctx.viewer.attribution(m[1], method, optionalInt(q, 'target', 1 << 20), layer);
      const name = (c: number) => ctx.viewer.model.classes?.[c] ?? `class ${c}`;
      const about = { method, target: a.target, targetName: name(a.target), predicted: a.predicted, predictedName: name(a.predicted), ms: a.seconds * 1000, layer: a.gradcam?.layer, delta: a.ig?.delta };
      await sendPng(res, await attributionPanel(image, a, name), { 'x-convscope-attribution': JSON.stringify(about) });
    },
  },
  {
    method: 'GET', pattern: new RegExp(`^/api/synthetic/${SEGMENT}/(\\d+)\\.png$`),
    handler: async (ctx, _req, res, m) => {
      const s = await ctx.viewer.synthetic(m[1], Number(m[2]));
      await sendPng(res, s.image, { 'x-convscope-synthetic': JSON.stringify({ value: s.value, source: s.source }) });
    },
  },
  {
    method: 'POST', pattern: new RegExp(`^/api/images/${SEGMENT}/occlusion$`),
    handler: async (ctx, _req, res, m, q) => {
      const job = ctx.viewer.startOcclusion(m[1], {
        layer: q.get('layer') ?? undefined,
        window: optionalInt(q, 'window', 4096),
        stride: optionalInt(q, 'stride', 4096),
        target: optionalInt(q, 'target', 1 << 20),
      });
      sendJson(res, 202, { ...ctx.viewer.jobJson(job), url: `/api/jobs/${job.id}` });
    },
  },
  {
    method: 'GET', pattern: new RegExp(`^/api/jobs/${SEGMENT}$`),
    handler: async (ctx, _req, res, m) => sendJson(res, 200, ctx.viewer.jobJson(ctx.viewer.job(m[1]))),
  },
  {
    method: 'DELETE', pattern: new RegExp(`^/api/jobs/${SEGMENT}$`),
    handler: async (ctx, _req, res, m) => sendJson(res, 202, ctx.viewer.jobJson(ctx.viewer.cancelJob(m[1]))),
  },
  {
    method: 'GET', pattern: new RegExp(`^/api/jobs/${SEGMENT}/(probability|activation)\\.png$`),
    handler: async (ctx, _req, res, m) => sendPng(res, ctx.viewer.occlusionImage(m[1], m[2] as 'probability' | 'activation')),
  },
  {
    method: 'GET', pattern: new RegExp(`^/api/topk/${SEGMENT}/(\\d+)$`),
    handler: async (ctx, _req, res, m) => sendJson(res, 200, await ctx.viewer.topk(m[1], Number(m[2]))),
  },
  {
    method: 'GET', pattern: new RegExp(`^/api/topk/${SEGMENT}/(\\d+)/(\\d+)/(projection|patch)\\.png$`),
    handler: async (ctx, _req, res, m) => {
      const [layer, feature, rank] = [m[1], Number(m[2]), Number(m[3])];
      const img = m[4] === 'projection' ? await ctx.viewer.topkProjection(layer, feature, rank) : await ctx.viewer.topkPatch(layer, feature, rank);
      await sendPng(res, img);
    },
  },
];

function layerParam(q: URLSearchParams): string {
  const layer = q.get('layer');
  if (!layer) throw new HttpError(400, "missing query parameter 'layer'");
  return layer;
}

async function serveStatic(root: StaticRoot, rest: string, res: ServerResponse): Promise<void> {
  const { type, data } = await readStatic(root, rest);
  sendBytes(res, type, data);
}

async function route(ctx: Context, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const raw = req.url ?? '/';
  const q = raw.indexOf('?');
  const path = q >= 0 ? raw.slice(0, q) : raw;
  const query = new URLSearchParams(q >= 0 ? raw.slice(q + 1) : '');
  if (!path.startsWith('/')) throw new HttpError(400, 'request path must start with /');
  if (path.startsWith('/api/')) {
    const matching = ROUTES.filter((r) => r.pattern.test(path));
    const hit = matching.find((r) => r.method === req.method);
    if (!hit) {
      if (matching.length > 0) throw new HttpError(405, `${req.method} is not allowed on ${path}`);
      throw new HttpError(404, `no API route ${path}`);
    }
    await hit.handler(ctx, req, res, hit.pattern.exec(path)!, query);
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') throw new HttpError(405, `${req.method} is not allowed on ${path}`);
  if (path.startsWith('/topk/')) {
    if (!ctx.topk) throw new HttpError(404, 'the server was started without --topk');
    return serveStatic(ctx.topk, path.slice('/topk/'.length), res);
  }
  return serveStatic(ctx.web, path === '/' ? 'index.html' : path.slice(1), res);
}

/** Starts the viewer's server; resolves once it listens. */
export async function startServer(options: ServeOptions): Promise<RunningServer> {
  const viewer = new Viewer(options);
  // A --topk folder of other data would answer every top-9 request with the wrong patches, or fail on each.
  if (options.topkDir && options.data) {
    try {
      await checkSameDataset(options.data, readTopkIndex(options.topkDir).datasetId, `--topk ${options.topkDir}`);
    } catch (e) {
      await viewer.dispose();
      throw e;
    }
  }
  const ctx: Context = {
    viewer,
    web: staticRoot(options.webDir ?? defaultWebDir()),
    topk: options.topkDir ? staticRoot(options.topkDir) : undefined,
    uploadLimit: options.uploadLimit ?? DEFAULT_UPLOAD_LIMIT,
  };
  const guard: GuardOptions = { allowHosts: (options.allowHosts ?? []).map((h) => h.toLowerCase()) };
  const server = createServer((req, res) => {
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
    Promise.resolve().then(() => {
      checkRequest(req, guard);
      return route(ctx, req, res);
    }).catch((e: unknown) => {
      // Only HttpErrors are the client's fault; anything else is ours, reported as 500 and the server carries on.
      if (e instanceof HttpError) sendError(res, e.status, e.message);
      else sendError(res, 500, e instanceof Error ? e.message : String(e));
    });
  });
  // A client that sends garbage gets 400 from node:http itself; the socket error must not become an uncaught one.
  server.on('clientError', (_e, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
  });
  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const shown = host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${shown}:${port}/`,
    server,
    viewer,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await viewer.dispose();
    },
  };
}
