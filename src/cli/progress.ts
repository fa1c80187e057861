import { formatSeconds, type OnProgress } from '../util/progress.js';
import { flushNotices } from './notices.js';

/** Seconds of work after which a sweep's total time is estimated, once, on a line of its own. */
const ESTIMATE_AFTER_SECONDS = 3;

/**
 * The CLI's progress bar with rate and ETA on stderr: redrawn in place on a terminal, a line every few seconds
 * otherwise. Library functions report through an OnProgress callback; `bar.report` is one. A sweep still running
 * after a few seconds also says, once and on a line that stays, how long it will take in all.
 */
export class Progress {
  private readonly start: number;
  private lastPrint = 0;
  private estimated = false;
  private readonly tty: boolean;

  constructor(
    private readonly label: string,
    private total: number,
    private readonly unit = 'items',
    private readonly write: (s: string) => void = (s) => process.stderr.write(s),
    tty = process.stderr.isTTY === true,
    private readonly clock: () => number = Date.now,
  ) {
    this.tty = tty;
    this.start = clock();
  }

  /** Draws `done` of the total; a library that learns the total only as it runs passes it here. */
  update(done: number, total = this.total, note = ''): void {
    flushNotices();
    this.total = total;
    const now = this.clock();
    const finished = done >= this.total;
    if (!finished && !this.estimated && done > 0 && now - this.start >= ESTIMATE_AFTER_SECONDS * 1000) {
      this.estimated = true;
      const all = ((now - this.start) / done) * this.total / 1000;
      this.write(`${this.tty ? '\r\x1b[K' : ''}${this.label}: about ${formatSeconds(all)} in all for ${this.total} ${this.unit} (estimated from the first ${done} in ${formatSeconds((now - this.start) / 1000)})\n`);
      this.lastPrint = 0;
    }
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
