// Where the queue lives: a redis:// or rediss:// URL (password, database, TLS) turned into ioredis clients that
// BullMQ can share. Connection failures become one line naming the server, not ioredis's retry noise.
import { Redis, type RedisOptions } from 'ioredis';

/** The queue every convscope worker listens on; jobs say which run they belong to. */
export const QUEUE_NAME = 'convscope';

export interface QueueAddress {
  host: string;
  port: number;
  db: number;
  username?: string;
  password?: string;
  tls: boolean;
}

/** redis://[[user]:password@]host[:port][/db] or rediss://... (TLS). */
export function parseQueueUrl(text: string): QueueAddress {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error(`--queue must be a URL such as redis://127.0.0.1:6379/0, got '${text}'`);
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') throw new Error(`--queue must be a redis:// or rediss:// URL, got '${url.protocol}//'`);
  if (!url.hostname) throw new Error(`--queue '${text}' names no host`);
  const port = url.port === '' ? 6379 : Number(url.port);
  const dbText = url.pathname.replace(/^\//, '');
  if (dbText !== '' && !/^\d+$/.test(dbText)) throw new Error(`--queue: the database must be a number, got '${dbText}'`);
  if (url.search || url.hash) throw new Error(`--queue '${text}' has a query or fragment convscope does not read`);
  return {
    host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port,
    db: dbText === '' ? 0 : Number(dbText),
    username: url.username ? decodeURIComponent(url.username) : undefined,
    password: url.password ? decodeURIComponent(url.password) : undefined,
    tls: url.protocol === 'rediss:',
  };
}

/** The address without its password, for messages. */
export function describeAddress(a: QueueAddress): string {
  return `${a.tls ? 'rediss' : 'redis'}://${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}/${a.db}`;
}

/**
 * A connected client. BullMQ needs maxRetriesPerRequest null (its blocking commands wait for jobs); the first
 * connection is awaited so that an unreachable server is an error here, in one line.
 */
export async function connect(address: QueueAddress): Promise<Redis> {
  const options: RedisOptions = {
    host: address.host, port: address.port, db: address.db, username: address.username, password: address.password,
    ...(address.tls ? { tls: {} } : {}),
    maxRetriesPerRequest: null,
    lazyConnect: true,
  };
  const client = new Redis(options);
  // After the first connection ioredis reconnects by itself; its error events must not crash the process meanwhile.
  let last: Error | undefined;
  client.on('error', (e: Error) => {
    last = e;
  });
  try {
    await client.connect();
    await client.ping();
  } catch (e) {
    client.disconnect();
    throw new Error(`cannot reach the queue at ${describeAddress(address)}: ${(last ?? (e as Error)).message}`);
  }
  return client;
}
