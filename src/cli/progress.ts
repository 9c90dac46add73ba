import { formatRate } from '../transport/rate.ts';

export { Ewma, MigrationProgressTracker, progressEvent, type MigrationProgress, type TrackerOptions } from '../engine/progress-tracker.ts';
import type { MigrationProgress } from '../engine/progress-tracker.ts';

/** Progress display for long commands: pure formatting (see engine/progress-tracker.ts for what the figures mean). */
export function formatDuration(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms)) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

/** Bytes for people, in binary units: `512 B`, `3.2 KiB`, `40.1 MiB`, `1.25 GiB`. */
export function formatBytes(bytes: number): string {
  const units: Array<[number, string]> = [[2 ** 40, 'TiB'], [2 ** 30, 'GiB'], [2 ** 20, 'MiB'], [2 ** 10, 'KiB']];
  for (const [f, u] of units) {
    if (Math.abs(bytes) >= f) return `${Number((bytes / f).toPrecision(3))} ${u}`;
  }
  return `${Math.round(bytes)} B`;
}

/** One status line: phase, elapsed, in sync (high-water mark), sent and to go, rates, launch countdown or readiness, expected downtime. */
export function formatMigrationProgress(p: MigrationProgress): string {
  let when = '';
  if (p.phase === 'presync') {
    const readiness = !p.initialCopyDone ? 'initial copy' : p.ready ? 'launch-ready' : `ready in ${formatDuration(p.etaToReadyMs)}`;
    when = `  ${readiness}${p.launchInMs !== null ? `  launch in ${formatDuration(p.launchInMs)}` : ''}`;
  }
  return (
    `${p.phase}  ${formatDuration(p.elapsedMs)}  in sync ${p.inSyncPercent.toFixed(1)} %  sent ${formatBytes(p.bytesSent)}, ${formatBytes(p.bytesRemaining)} to go` +
    `  rate ${formatRate(p.rateBytesPerSec)}  dirty ${formatBytes(p.dirtyRateBytesPerSec)}/s${when}  downtime if launched now ${formatDuration(p.expectedDowntimeMs)}`
  );
}

/** `[########------------]  40 %  12/30  label` */
export function formatBar(done: number, total: number, width = 24, label = ''): string {
  const f = total > 0 ? Math.min(1, Math.max(0, done / total)) : 1;
  const full = Math.round(f * width);
  return `[${'#'.repeat(full)}${'-'.repeat(width - full)}] ${String(Math.floor(f * 100)).padStart(3)} %  ${done}/${total}${label ? `  ${label}` : ''}`;
}

/**
 * Progress of a counted job (runs of a bench). On a terminal one bar redrawn
 * in place; otherwise a plain line at each tenth, so logs stay short.
 */
export class BarProgress {
  private lastTenth = -1;
  private lastDrawMs = Number.NEGATIVE_INFINITY;
  private finished = false;

  constructor(
    private readonly write: (text: string) => void,
    private readonly tty: boolean,
    private readonly label: string,
  ) {}

  /** `nowMs` throttles terminal redraws to ~10/s; pass the caller's clock. */
  update(done: number, total: number, nowMs = 0): void {
    if (this.finished) return;
    const last = done >= total;
    if (this.tty) {
      if (!last && nowMs - this.lastDrawMs < 100) return;
      this.lastDrawMs = nowMs;
      this.write(`\r${formatBar(done, total, 24, this.label)}\x1b[K${last ? '\n' : ''}`);
    } else {
      const tenth = total > 0 ? Math.floor((10 * done) / total) : 10;
      if (tenth === this.lastTenth) return;
      this.lastTenth = tenth;
      this.write(`${this.label}: ${done}/${total} (${tenth * 10} %)\n`);
    }
    if (last) this.finished = true;
  }
}
