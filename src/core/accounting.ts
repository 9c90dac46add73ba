import { PageSet, type ReadonlyPageSet } from './pageset.ts';
import type { ErrorCode } from './errors.ts';

/** One row of a run's time series (one per epoch or live round). */
export interface SeriesPoint {
  readonly tMs: number;
  readonly phase: 'presync' | 'launched';
  /** Bytes handed to the wire during the step. */
  readonly sentBytes: number;
  readonly sentPages: number;
  /** Bytes the target acknowledged (delivered) during the step. */
  readonly deliveredBytes: number;
  readonly budgetBytes: number;
  readonly dirtyPages: number;
  /** Pages whose current content the target lacks (not counting pages on their way). */
  readonly stalePages: number;
  readonly rttMs: number;
  readonly throughputBytesPerSec: number;
  readonly diag?: Readonly<Record<string, number>>;
}

/** The summary metrics of DESIGN.md, the same fields for every shell. */
export interface MigrationMetrics {
  /** in-doubt: the handover was sent and never confirmed (see PRESYNC_ERR_HANDOVER_IN_DOUBT). */
  readonly outcome: 'done' | 'rolled-back' | 'in-doubt';
  readonly error: { readonly code: ErrorCode; readonly message: string } | null;
  readonly launchToRunningMs: number | null;
  readonly downtimeMs: number | null;
  readonly presyncBytes: number;
  readonly finalBytes: number;
  readonly residualPagesAtLaunch: number;
  readonly wastedPages: number;
  /** Pages sent more than once over the whole migration. */
  readonly resentPages: number;
  readonly guestSlowdown: number;
  readonly verified: boolean;
  /** False when the live rounds gave up converging and paused anyway (or aborted). */
  readonly converged: boolean;
  readonly liveRounds: number;
}

/**
 * Counts what a migration cost. The shells call it as things happen; it
 * decides nothing and reads no clock.
 */
export class Accounting {
  presyncBytes = 0;
  finalBytes = 0;
  wastedPages = 0;
  resentPages = 0;
  private launched = false;
  /** Pages sent during presync and not written since. */
  private readonly sentClean: PageSet;
  /** Pages sent at least once. */
  private readonly everSent: PageSet;
  readonly series: SeriesPoint[] = [];

  constructor(pageCount: number) {
    this.sentClean = new PageSet(pageCount);
    this.everSent = new PageSet(pageCount);
  }

  onLaunch(): void {
    this.launched = true;
  }

  /** Bytes put on the wire (frames, headers included). */
  onBytes(bytes: number): void {
    if (this.launched) this.finalBytes += bytes;
    else this.presyncBytes += bytes;
  }

  onPageSent(page: number): void {
    if (this.everSent.has(page)) this.resentPages++;
    else this.everSent.add(page);
    if (!this.launched) this.sentClean.add(page);
  }

  /** Guest writes: a page sent during presync and written again before launch was wasted. */
  onWrites(dirty: ReadonlyPageSet): void {
    if (this.launched) return;
    const hit = this.sentClean.intersection(dirty);
    this.wastedPages += hit.count();
    this.sentClean.subtract(hit);
  }

  point(p: SeriesPoint): void {
    this.series.push(p);
  }
}
