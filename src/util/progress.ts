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
