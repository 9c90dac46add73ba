import type { SourceStatus } from './source-session.ts';

/**
 * A migration's progress as people and metrics read it: pure bookkeeping,
 * no clock and no terminal access (the caller passes the status events).
 *
 * Migration progress, and what is honest about it: the share of pages whose
 * current content the target holds falls whenever the guest writes faster
 * than the sync sends, so a raw "in sync" figure runs backwards, and a
 * percentage that runs backwards reads as a fault. The line therefore shows
 * the high-water mark ("in sync N %", never decreasing: how far the sync
 * has ever got) and, beside it, the figures that do move both ways and say
 * where the sync stands now: the bytes still to send and the downtime to
 * expect if launched now. Launch-ready means the initial copy is done (every
 * page that differed at the start has crossed once) and that expected
 * downtime is at or below the ready threshold (default 300 ms, QEMU's
 * default downtime limit); the ETA extrapolates the recent drain of stale
 * pages to that point and is "—" while they are not draining. Rates are
 * smoothed (an exponentially weighted moving average over ~2 s), since one
 * epoch's sends swing from a few pages to a full window.
 */

export interface MigrationProgress {
  readonly phase: string;
  readonly elapsedMs: number;
  /** Highest share of pages in sync seen so far, %. Never decreases. */
  readonly inSyncPercent: number;
  /** The current share, % (may fall while the guest writes). */
  readonly inSyncNowPercent: number;
  readonly stalePages: number;
  /** Bytes sent so far (presync and after launch). */
  readonly bytesSent: number;
  /** Bytes of the pages the target does not hold yet (stale pages × page size). */
  readonly bytesRemaining: number;
  /** Send rate, smoothed, bytes/s. */
  readonly rateBytesPerSec: number;
  /** Rate at which the guest dirties pages, smoothed, bytes/s. */
  readonly dirtyRateBytesPerSec: number;
  readonly expectedDowntimeMs: number;
  readonly initialCopyDone: boolean;
  readonly ready: boolean;
  /** Time until launch-ready at the recent drain rate; 0 when ready; null when not draining. */
  readonly etaToReadyMs: number | null;
  /** Time left until the planned launch (--launch-after); null when none is planned. */
  readonly launchInMs: number | null;
}

export interface TrackerOptions {
  /** Expected downtime at or below which the migration counts as launch-ready, ms. Default 300. */
  readonly readyDowntimeMs?: number;
  /** How far back the drain rate looks, ms. Default 5000. */
  readonly windowMs?: number;
  /** Time constant of the rate averages, ms. Default 2000. */
  readonly rateTauMs?: number;
}

/** Exponentially weighted moving average over time: samples further apart weigh more. */
export class Ewma {
  private v: number | null = null;
  private lastMs = 0;
  constructor(private readonly tauMs: number) {}

  update(x: number, tMs: number): number {
    if (this.v === null) this.v = x;
    else {
      const a = 1 - Math.exp(-Math.max(0, tMs - this.lastMs) / this.tauMs);
      this.v += a * (x - this.v);
    }
    this.lastMs = tMs;
    return this.v;
  }

  get value(): number {
    return this.v ?? 0;
  }
}

/** Follows a migration's status events and derives what the progress line shows. */
export class MigrationProgressTracker {
  private peak = 0;
  private readonly samples: Array<{ t: number; stale: number }> = [];
  private readyMs: number;
  private readonly windowMs: number;
  private readonly rate: Ewma;
  private readonly dirtyRate: Ewma;
  private lastT = Number.NaN;

  constructor(o: TrackerOptions = {}) {
    this.readyMs = o.readyDowntimeMs ?? 300;
    this.windowMs = o.windowMs ?? 5000;
    this.rate = new Ewma(o.rateTauMs ?? 2000);
    this.dirtyRate = new Ewma(o.rateTauMs ?? 2000);
  }

  /** The downtime limit changed (an operator's `set --downtime-limit`). */
  setReadyDowntimeMs(ms: number): void {
    this.readyMs = ms;
  }

  get readyDowntimeMs(): number {
    return this.readyMs;
  }

  /** `launchAtMs`: when the planned launch comes, on the migration's clock (elapsedMs). */
  update(s: SourceStatus, launchAtMs: number | null = null): MigrationProgress {
    const now = s.pageCount > 0 ? (100 * s.inSyncPages) / s.pageCount : 0;
    this.peak = Math.max(this.peak, Math.floor(now * 10) / 10);
    this.samples.push({ t: s.elapsedMs, stale: s.stalePages });
    while (this.samples.length > 2 && this.samples[0].t < s.elapsedMs - this.windowMs) this.samples.shift();
    const epochMs = Number.isNaN(this.lastT) ? 0 : s.elapsedMs - this.lastT;
    this.lastT = s.elapsedMs;
    const rate = this.rate.update(s.rateBytesPerSec, s.elapsedMs);
    const dirty = epochMs > 0 ? this.dirtyRate.update((s.dirtyPages * s.pageSize * 1000) / epochMs, s.elapsedMs) : this.dirtyRate.value;
    const ready = s.initialCopyDone && s.expectedDowntimeMs <= this.readyMs;
    return {
      phase: s.phase,
      elapsedMs: s.elapsedMs,
      inSyncPercent: this.peak,
      inSyncNowPercent: now,
      stalePages: s.stalePages,
      bytesSent: s.presyncBytes + s.finalBytes,
      bytesRemaining: s.stalePages * s.pageSize,
      rateBytesPerSec: rate,
      dirtyRateBytesPerSec: dirty,
      expectedDowntimeMs: s.expectedDowntimeMs,
      initialCopyDone: s.initialCopyDone,
      ready,
      etaToReadyMs: ready ? 0 : this.eta(s),
      launchInMs: launchAtMs === null ? null : Math.max(0, launchAtMs - s.elapsedMs),
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

/** The `--json` progress event: the engine's status plus the derived figures (exact numbers). */
export interface ProgressEvent extends SourceStatus {
  readonly event: 'progress';
  readonly inSyncPeakPercent: number;
  readonly bytesSent: number;
  readonly bytesRemaining: number;
  /** Smoothed send rate, bytes/s (`rawRateBytesPerSec`: the last epoch's). */
  readonly rateBytesPerSec: number;
  readonly rawRateBytesPerSec: number;
  readonly dirtyRateBytesPerSec: number;
  readonly ready: boolean;
  readonly etaToReadyMs: number | null;
  readonly launchInMs: number | null;
}

export function progressEvent(s: SourceStatus, p: MigrationProgress): ProgressEvent {
  return {
    event: 'progress',
    ...s,
    inSyncPeakPercent: p.inSyncPercent,
    bytesSent: p.bytesSent,
    bytesRemaining: p.bytesRemaining,
    rateBytesPerSec: Math.round(p.rateBytesPerSec),
    rawRateBytesPerSec: Math.round(s.rateBytesPerSec),
    dirtyRateBytesPerSec: Math.round(p.dirtyRateBytesPerSec),
    ready: p.ready,
    etaToReadyMs: p.etaToReadyMs === null ? null : Math.round(p.etaToReadyMs),
    launchInMs: p.launchInMs === null ? null : Math.round(p.launchInMs),
  };
}

