import { formatSeconds, type OnProgress } from '../util/progress.js';
import { flushNotices } from './notices.js';

/**
 * The CLI's progress bar with rate and ETA on stderr: redrawn in place on a terminal, a line every few seconds
 * otherwise. Library functions report through an OnProgress callback; `bar.report` is one.
 */
export class Progress {
  private readonly start = Date.now();
  private lastPrint = 0;
  private readonly tty: boolean;

  constructor(
    private readonly label: string,
    private total: number,
    private readonly unit = 'items',
    private readonly write: (s: string) => void = (s) => process.stderr.write(s),
    tty = process.stderr.isTTY === true,
  ) {
    this.tty = tty;
  }

  /** Draws `done` of the total; a library that learns the total only as it runs passes it here. */
  update(done: number, total = this.total, note = ''): void {
    flushNotices();
    this.total = total;
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
    const line = `${this.label} ${bar} ${done}/${this.total} ${this.unit} ${rate.toFixed(1)}/s ${finished ? `in ${formatSeconds(seconds)}` : `ETA ${formatSeconds(eta)}`}${note ? ` ${note}` : ''}`;
    this.write(this.tty ? `\r${line}\x1b[K${finished ? '\n' : ''}` : `${line}\n`);
  }

  readonly report: OnProgress = (done, total, note) => this.update(done, total, note);
}
