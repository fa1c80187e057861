/** A progress line with rate and ETA on stderr: redrawn in place on a terminal, a line every few seconds otherwise. */
export class Progress {
  private readonly start = Date.now();
  private lastPrint = 0;
  private readonly tty: boolean;

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly unit = 'items',
    private readonly write: (s: string) => void = (s) => process.stderr.write(s),
    tty = process.stderr.isTTY === true,
  ) {
    this.tty = tty;
  }

  update(done: number, extra = ''): void {
    const now = Date.now();
    const finished = done >= this.total;
    if (!finished && now - this.lastPrint < (this.tty ? 200 : 5000)) return;
    this.lastPrint = now;
    const seconds = (now - this.start) / 1000;
    const rate = done / Math.max(seconds, 1e-3);
    const eta = rate > 0 ? (this.total - done) / rate : 0;
    const width = 24;
    const filled = Math.round((width * done) / Math.max(this.total, 1));
    const bar = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
    const line = `${this.label} ${bar} ${done}/${this.total} ${this.unit} ${rate.toFixed(1)}/s ${finished ? `in ${formatSeconds(seconds)}` : `ETA ${formatSeconds(eta)}`}${extra ? ` ${extra}` : ''}`;
    this.write(this.tty ? `\r${line}\x1b[K${finished ? '\n' : ''}` : `${line}\n`);
  }
}

export function formatSeconds(s: number): string {
  if (s < 60) return `${s.toFixed(0)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/**
 * How a library function reports progress: `done` of `total` units, and a short note (a loss, a phase). Library code
 * takes one of these and never draws; only the CLI draws bars (src/cli/progress.ts).
 */
export type OnProgress = (done: number, total: number, note?: string) => void;
