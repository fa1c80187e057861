// The PyTorch peer (bench/peer.py) as a child process: one JSON request per line on its stdin, one reply per line
// on its stdout. Requests are strictly sequential, so the peer never runs while convscope does.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface, type Interface } from 'node:readline';

export type Reply = Record<string, unknown>;

export class PeerProcess {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly lines: Interface;
  private readonly pending: ((line: string | undefined) => void)[] = [];
  private readonly queued: string[] = [];
  private exited = false;
  /** The reply of the last `setup`: torch version and thread counts. */
  info: Reply | undefined;

  constructor(
    /** Label in the tables: 'PyTorch', 'PyTorch+OpenBLAS'. */
    readonly label: string,
    script: string,
    env: NodeJS.ProcessEnv = process.env,
    python = '/usr/bin/python3',
  ) {
    this.child = spawn(python, [script], { stdio: ['pipe', 'pipe', 'pipe'], env });
    this.child.stderr.on('data', (d: Buffer) => process.stderr.write(`[${label}] ${d.toString()}`));
    this.lines = createInterface({ input: this.child.stdout });
    this.lines.on('line', (line) => {
      const waiter = this.pending.shift();
      if (waiter) waiter(line);
      else this.queued.push(line);
    });
    this.child.on('exit', () => {
      this.exited = true;
      for (const w of this.pending.splice(0)) w(undefined);
    });
    this.child.on('error', (e) => {
      console.error(`cannot start ${python} ${script}: ${e.message}`);
      this.exited = true;
      for (const w of this.pending.splice(0)) w(undefined);
    });
  }

  async request(msg: Reply): Promise<Reply> {
    if (this.exited) throw new Error('the PyTorch peer has exited');
    const line = new Promise<string | undefined>((resolve) => {
      const q = this.queued.shift();
      if (q !== undefined) resolve(q);
      else this.pending.push(resolve);
    });
    this.child.stdin.write(`${JSON.stringify(msg)}\n`);
    const text = await line;
    if (text === undefined) throw new Error(`the PyTorch peer exited during '${String(msg.cmd)}'`);
    const reply = JSON.parse(text) as Reply;
    if (typeof reply.error === 'string') throw new Error(`PyTorch peer, '${String(msg.cmd)}': ${reply.error}`);
    if (msg.cmd === 'setup') this.info = reply;
    return reply;
  }

  async close(): Promise<void> {
    if (this.exited) return;
    const done = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    try {
      await this.request({ cmd: 'quit' });
    } catch {
      // already gone
    }
    this.child.stdin.end();
    await done;
  }
}
