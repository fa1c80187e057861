// Small helpers over node:http: typed errors that become one-line JSON 4xx answers, bounded body reading.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { errorLine } from '../util/errors.js';

/** An error that is the client's fault: answered with its status and a one-line message, never fatal. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

export function sendError(res: ServerResponse, status: number, message: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJson(res, status, { error: errorLine(message) });
}

export function sendBytes(res: ServerResponse, type: string, data: Uint8Array, headers: Record<string, string> = {}): void {
  res.writeHead(200, { 'content-type': type, 'content-length': data.byteLength, 'cache-control': 'no-store', ...headers });
  res.end(data);
}

/**
 * The request body, refused with 413 as soon as it passes `limit` bytes (checked on the declared length first, so
 * a large upload is not read at all).
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit) {
      reject(new HttpError(413, `upload is ${declared} bytes; the limit is ${limit}`));
      req.resume();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > limit) {
        failed = true;
        reject(new HttpError(413, `upload is over the limit of ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (!failed) resolve(Buffer.concat(chunks));
    });
    req.on('error', (e) => {
      if (!failed) reject(e);
    });
  });
}

/** A query parameter as an integer in [min, max]; absent -> fallback (or 400 when there is none). */
export function intParam(params: URLSearchParams, name: string, min: number, max: number, fallback?: number): number {
  const raw = params.get(name);
  if (raw === null || raw === '') {
    if (fallback === undefined) throw new HttpError(400, `missing query parameter '${name}'`);
    return fallback;
  }
  if (!/^-?\d+$/.test(raw)) throw new HttpError(400, `'${name}' must be an integer, got '${raw}'`);
  const v = Number(raw);
  if (v < min || v > max) throw new HttpError(400, `'${name}' must be in ${min}..${max}, got ${v}`);
  return v;
}

export function choiceParam<T extends string>(params: URLSearchParams, name: string, choices: readonly T[], fallback: T): T {
  const raw = params.get(name) ?? fallback;
  if (!choices.includes(raw as T)) throw new HttpError(400, `'${name}' must be one of ${choices.join(', ')}, got '${raw}'`);
  return raw as T;
}
