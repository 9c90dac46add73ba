import type { SourceStatus } from '../engine/source-session.ts';
import { formatRate } from '../transport/rate.ts';

/**
 * Progress display for long commands: pure formatting and bookkeeping, no
 * clock and no terminal access (the caller passes time and writes lines).
 *
 * Migration progress, and what is honest about it: the share of pages whose
 * current content the target holds falls whenever the guest writes faster
 * than the sync sends, so a raw "in sync" figure runs backwards, and a
 * percentage that runs backwards reads as a fault. The line therefore shows
 * the high-water mark ("in sync: N %", never decreasing: how far the sync
 * has ever got) and, beside it, the figures that do move both ways and say
 * where the sync stands now: the stale pages and the downtime to expect if
 * launched now. Launch-ready means that expected downtime is at or below the
 * ready threshold (default 300 ms, QEMU's default downtime limit); the ETA
 * extrapolates the recent drain of stale pages to that point and is "—"
 * while they are not draining.
 */

export interface MigrationProgress {
  readonly phase: string;
  readonly elapsedMs: number;
  /** Highest share of pages in sync seen so far, %. Never decreases. */
  readonly inSyncPercent: number;
  /** The current share, % (may fall while the guest writes). */
  readonly inSyncNowPercent: number;
  readonly stalePages: number;
  readonly rateBytesPerSec: number;
  readonly expectedDowntimeMs: number;
  readonly ready: boolean;
  /** Time until launch-ready at the recent drain rate; 0 when ready; null when not draining. */
  readonly etaToReadyMs: number | null;
}

export interface TrackerOptions {
  /** Expected downtime at or below which the migration counts as launch-ready, ms. Default 300. */
  readonly readyDowntimeMs?: number;
  /** How far back the drain rate looks, ms. Default 5000. */
  readonly windowMs?: number;
}

/** Follows a migration's status events and derives what the progress line shows. */
export class MigrationProgressTracker {
  private peak = 0;
  private readonly samples: Array<{ t: number; stale: number }> = [];
  private readonly readyMs: number;
  private readonly windowMs: number;

  constructor(o: TrackerOptions = {}) {
    this.readyMs = o.readyDowntimeMs ?? 300;
    this.windowMs = o.windowMs ?? 5000;
  }

  update(s: SourceStatus): MigrationProgress {
    const now = s.pageCount > 0 ? (100 * s.inSyncPages) / s.pageCount : 0;
    this.peak = Math.max(this.peak, Math.floor(now * 10) / 10);
    this.samples.push({ t: s.elapsedMs, stale: s.stalePages });
    while (this.samples.length > 2 && this.samples[0].t < s.elapsedMs - this.windowMs) this.samples.shift();
    const ready = s.expectedDowntimeMs <= this.readyMs;
    return {
      phase: s.phase,
      elapsedMs: s.elapsedMs,
      inSyncPercent: this.peak,
      inSyncNowPercent: now,
      stalePages: s.stalePages,
      rateBytesPerSec: s.rateBytesPerSec,
      expectedDowntimeMs: s.expectedDowntimeMs,
      ready,
      etaToReadyMs: ready ? 0 : this.eta(s),
    };
  }

  private eta(s: SourceStatus): number | null {
    const first = this.samples[0];
    const dt = s.elapsedMs - first.t;
    const drained = first.stale - s.stalePages;
    if (!(dt > 0) || !(drained > 0) || !(s.expectedDowntimeMs > 0)) return null;
    // Expected downtime is proportional to the stale pages (plus an RTT): scale to the ready point.
    const readyStale = s.stalePages * Math.min(1, this.readyMs / s.expectedDowntimeMs);
    return ((s.stalePages - readyStale) / drained) * dt;
  }
}

export function formatDuration(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms)) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

/** One status line: phase, in sync (high-water mark), stale now, rate, ETA to launch-ready, expected downtime. */
export function formatMigrationProgress(p: MigrationProgress): string {
  const eta = p.phase !== 'presync' ? '' : p.ready ? '  launch-ready' : `  ready in ${formatDuration(p.etaToReadyMs)}`;
  return (
    `${p.phase}  in sync: ${p.inSyncPercent.toFixed(1)} %  stale ${p.stalePages} pages  rate ${formatRate(p.rateBytesPerSec)}` +
    `${eta}  downtime if launched now ${formatDuration(p.expectedDowntimeMs)}`
  );
}

/** The `--json` progress event: the engine's status plus the derived figures. */
export function progressEvent(s: SourceStatus, p: MigrationProgress): Record<string, unknown> {
  return { event: 'progress', ...s, inSyncPeakPercent: p.inSyncPercent, ready: p.ready, etaToReadyMs: p.etaToReadyMs === null ? null : Math.round(p.etaToReadyMs) };
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
