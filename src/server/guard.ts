// The viewer answers only its own pages. It has no login, so what keeps another web page out is the browser's
// same-origin rules, and two attacks step around those: DNS rebinding (a page on evil.test whose name now resolves
// to 127.0.0.1 reads our answers as its own origin) and cross-site requests (a page anywhere may POST to us blind).
// The first is stopped by the Host header, the second by Origin / Sec-Fetch-Site and a header that only a
// same-origin script can add without a CORS preflight, which this server never grants.
import { isIP } from 'node:net';
import type { IncomingMessage } from 'node:http';
import { HttpError } from './http.js';

/** The header every state-changing request must carry; the viewer's page sends it. */
export const REQUEST_HEADER = 'x-convscope';

/** Headers on every answer: no sniffing, no framing, no third-party anything on the page. */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-resource-policy': 'same-origin',
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
};

export interface GuardOptions {
  /** Host names the viewer may be reached by besides IP literals and localhost (`--allow-host`). */
  allowHosts: readonly string[];
}

/** The name part of a Host header value (`[::1]:8080` -> `::1`, `Example.test:80` -> `example.test`). */
function hostName(host: string): string {
  const h = host.trim().toLowerCase();
  if (h.startsWith('[')) return h.slice(1, h.indexOf(']') > 0 ? h.indexOf(']') : undefined);
  const colon = h.lastIndexOf(':');
  return colon >= 0 && h.indexOf(':') === colon ? h.slice(0, colon) : h;
}

/**
 * Refuses a request that did not come from the viewer's own pages: a Host that is not an IP literal, `localhost`
 * or an allowed name (a rebinding DNS name cannot be an IP literal); and, for anything but GET and HEAD, an Origin
 * other than this Host, a Sec-Fetch-Site other than same-origin, or a missing REQUEST_HEADER.
 */
export function checkRequest(req: IncomingMessage, options: GuardOptions): void {
  const host = req.headers.host;
  if (!host) throw new HttpError(400, 'missing Host header');
  const name = hostName(host);
  if (!(isIP(name) !== 0 || name === 'localhost' || options.allowHosts.includes(name))) {
    throw new HttpError(403, `Host '${host}' is not this viewer's address; start serve with --allow-host ${name} to reach it by that name`);
  }
  if (req.method === 'GET' || req.method === 'HEAD') return;
  const origin = req.headers.origin;
  if (origin !== undefined && origin !== `http://${host}`) throw new HttpError(403, `${req.method} from origin '${origin}' refused: only the viewer's own page may change its state`);
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin' && site !== 'none') throw new HttpError(403, `${req.method} from a ${site} page refused: only the viewer's own page may change its state`);
  if (req.headers[REQUEST_HEADER] !== '1') throw new HttpError(403, `${req.method} needs the header '${REQUEST_HEADER}: 1' (the viewer's page sends it; other pages cannot without our consent)`);
}
