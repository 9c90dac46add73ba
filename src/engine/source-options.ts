import type { Accounting, MigrationMetrics } from '../core/accounting.ts';
import type { Phase } from '../core/phase.ts';
import type { MigrationPolicy } from '../core/types.ts';
import type { GuestController } from '../guest/controller.ts';
import type { SourceSegment } from '../guest/segmented-reader.ts';
import type { Transport, TransportAddress } from '../transport/types.ts';

/** What a source migration is given, what it reports while it runs, and what it returns (SourceMigration, source-session.ts). */

export interface MigrateOptions {
  readonly transport: Transport;
  readonly to: TransportAddress;
  readonly secret: Uint8Array;
  readonly imagePath: string;
  /**
   * The image's files when it is several (e.g. one QEMU RAM backend per NUMA
   * node), in page order, the first at imagePath: synced as one image (one
   * presync, one pause, one verify). One file or none: imagePath alone.
   */
  readonly segments?: readonly SourceSegment[];
  readonly pageSize?: number;
  /** Identity the target files the image under; default derived from the image's real path and size. */
  readonly imageId?: string;
  /**
   * This migration's lineage (32 lowercase hex digits, 16 random bytes),
   * owned by the source: the target resumes only an image of the same
   * lineage. Default: a fresh one per SourceMigration.
   */
  readonly lineageId?: string;
  readonly policy: MigrationPolicy;
  readonly controller: GuestController;
  /** Epoch length during presync, ms. Default 100. */
  readonly epochMs?: number;
  /** A known rate cap (the shaper's), bytes/s: the estimator never assumes more. */
  readonly bandwidthBytesPerSec?: number;
  readonly codec?: 'none' | 'deflate' | 'lz4';
  /**
   * Dirty scans during presync. full: every page every epoch. incremental:
   * pages written in the last epochs plus a rotating eighth of the image, so
   * a change to a cold page shows within 8 epochs. auto (default):
   * incremental until every page has been sent once (the initial sync, when
   * most pages are going to be sent anyway), full afterwards; a sparse image
   * whose zero pages never need sending (QEMU RAM the guest has not touched)
   * stays incremental. After launch scans are full, except the first one
   * (incremental unless `full`), and the final one always is.
   */
  readonly scan?: 'full' | 'incremental' | 'auto';
  /**
   * Run each presync epoch's dirty scan during the previous epoch's sends
   * (hashing on a worker thread), instead of before them. Default true.
   */
  readonly overlapScans?: boolean;
  /**
   * TCP connections to sync over (default 1). Extra ones join the session
   * (authenticated like the first) and carry pages only; a page always goes
   * over the same one, so its versions arrive in order. A target that does
   * not offer multi-stream gets one.
   */
  readonly streams?: number;
  /** Pages per PAGES frame. Default 64. */
  readonly pagesPerFrame?: number;
  /** Reconnect attempts after a connection breaks during presync. Default 8 (backoff 100 ms … 5 s). */
  readonly reconnectAttempts?: number;
  /** Give up waiting for the target at a step after launch, ms. Default 30 000. */
  readonly stepTimeoutMs?: number;
  /** Device state moved at switchover (opaque); default none. */
  readonly deviceState?: () => Promise<Uint8Array>;
  readonly onEvent?: (e: SourceEvent) => void;
}

export type SourceEvent =
  | {
      event: 'connected';
      resume: boolean;
      stalePages: number;
      attempt: number;
      /** Pages whose current content the target already holds. */
      heldPages: number;
      /** Distinct pages sent over earlier connections. */
      sentBeforePages: number;
    }
  | { event: 'disconnected'; error: { code: string; message: string } }
  | { event: 'progress'; status: SourceStatus }
  | { event: 'phase'; phase: Phase; atMs: number }
  /** The guest stopped on the source (the controller's pause returned), ms since the migration started. */
  | { event: 'paused'; atMs: number };

export interface SourceStatus {
  readonly phase: Phase;
  readonly elapsedMs: number;
  readonly pageCount: number;
  /** Pages whose current content the target holds or has on its way: only grows as a share while the guest is quiet. */
  readonly inSyncPages: number;
  readonly inSyncPercent: number;
  readonly stalePages: number;
  readonly rateBytesPerSec: number;
  /** The estimator's view of the available bandwidth, bytes/s. */
  readonly bandwidthBytesPerSec: number;
  readonly presyncBytes: number;
  readonly finalBytes: number;
  /** Expected pause if launched now (core/downtime.ts): stale pages × recent wire bytes per page ÷ bandwidth + one RTT. */
  readonly expectedDowntimeMs: number;
  readonly epoch: number;
  readonly pageSize: number;
  /** Pages the last presync scan found written. */
  readonly dirtyPages: number;
  /** Every page that differed from the target at the start has been sent once. */
  readonly initialCopyDone: boolean;
}

export interface MigrationResult extends MigrationMetrics {
  readonly series: Accounting['series'];
}
