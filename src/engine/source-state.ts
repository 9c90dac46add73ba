import { Accounting } from '../core/accounting.ts';
import { ShellLedger } from '../core/ledger.ts';
import { NetEstimator } from '../core/net-estimator.ts';
import { PageSet } from '../core/pageset.ts';
import type { EpochDecision, Geometry } from '../core/types.ts';
import { DirtyScanner } from '../guest/dirty-scanner.ts';
import type { SourceImage } from '../guest/ram-image.ts';

/** Pages and bytes one send put on the wire. */
export interface Sent {
  readonly bytes: number;
  readonly pages: number;
}

/** The pages a switchover decision sends just ahead of the pause, while the guest still runs. */
export interface AheadOfPause {
  readonly d: EpochDecision;
  readonly t0: number;
  readonly dirtyPages: number;
  /** The send, once started. */
  sending?: Promise<Sent>;
}

/**
 * Everything one source migration knows while it runs, in one place: what
 * the target holds (digests of what was sent), what it lacks (stale), the
 * scanner, the ledger and accounting, and where the switchover stands. The
 * phases (source-phases.ts) read and change it; nothing else keeps state.
 */
export class SourceState {
  readonly geometry: Geometry;
  readonly pageCount: number;
  readonly pageSize: number;
  readonly scanner: DirtyScanner;
  readonly acct: Accounting;
  readonly ledger: ShellLedger;
  /** Digest of what the target holds or will hold once in-flight batches land. */
  readonly sentDigests: BigUint64Array;
  /** Pages whose current content the target lacks and that are not on their way. */
  readonly stale: PageSet;
  /** Pages sent at least once. */
  readonly everSent: PageSet;
  everSentCount = 0;
  /** Pages that differed from the target at the first scan and have not been sent since. */
  initialPending: PageSet | null = null;
  initialLeft = -1;
  epoch = 0;
  /** The guest is paused (the controller's pause returned). */
  paused = false;
  /** A pause the policy asked to start early (startPause), still taking effect or done. */
  pausing: Promise<void> | undefined;
  /** When the guest stopped, ms since the migration started; -1 before. */
  pausedAt = -1;
  residualPagesAtLaunch = 0;
  converged = true;
  liveRounds = 0;
  handoverSent = false;
  aheadOfPause: AheadOfPause | undefined;

  constructor(
    readonly reader: SourceImage,
    readonly est: NetEstimator,
  ) {
    this.geometry = reader.geometry;
    this.pageCount = reader.geometry.pageCount;
    this.pageSize = reader.geometry.pageSize;
    this.scanner = new DirtyScanner(reader);
    this.acct = new Accounting(this.pageCount);
    this.ledger = new ShellLedger(this.pageSize);
    this.sentDigests = new BigUint64Array(this.pageCount);
    this.stale = new PageSet(this.pageCount);
    this.everSent = new PageSet(this.pageCount);
  }

  /** Re-derives `stale` for `pages` (null: every page) from the scanner's digests and what was sent. */
  refreshStale(pages: Iterable<number> | null): void {
    const { scanner, sentDigests, stale } = this;
    if (pages === null) {
      for (let p = 0; p < this.pageCount; p++) {
        if (scanner.digests[p] !== sentDigests[p]) stale.add(p);
        else stale.delete(p);
      }
      return;
    }
    for (const p of pages) {
      if (scanner.digests[p] !== sentDigests[p]) stale.add(p);
      else stale.delete(p);
    }
  }

  /** Page `p` is on its way to the target. */
  markSent(p: number): void {
    this.stale.delete(p);
    this.acct.onPageSent(p);
    if (!this.everSent.has(p)) {
      this.everSent.add(p);
      this.everSentCount++;
      if (this.initialPending?.has(p) === true) this.initialLeft--;
    }
  }

  /** Pages stale at the first scan: the initial copy is done once they have all been sent. */
  startInitialCopy(): void {
    this.initialPending = PageSet.copyOf(this.stale);
    this.initialLeft = this.initialPending.count();
  }
}
