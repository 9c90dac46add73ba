import { DEFAULT_WIRE_COST, fullPageWireBytes, type WireCostModel } from './cost.ts';
import { DEFAULT_SWITCHOVER_COSTS, estimateDowntime, type SwitchoverCosts } from './downtime.ts';

/** The fields of an EpochObservation that come from the ledger. */
export interface LedgerFields {
  readonly consumed: number;
  readonly wireBytesPerPage: number;
  readonly offeredBytes: number;
  readonly deliveredBytes: number;
}

/**
 * What a shell put on the wire and got delivered, in the terms the policies
 * observe. Both shells keep one and take the observation's ledger fields from
 * it, so a policy sees the same numbers for the same sends whichever shell
 * runs it. It reads no clock: the shell says when a step ends (observe).
 */
export class ShellLedger {
  /** Wire bytes and pages of recent sends, each send weighing twice the one before it. */
  private recentBytes = 0;
  private recentPages = 0;
  private offered = 0;
  private delivered = 0;
  private consumed = 0;

  constructor(
    private readonly pageSize: number,
    private readonly wire: WireCostModel = DEFAULT_WIRE_COST,
  ) {}

  /**
   * One send of a decision's list: `bytes` on the wire for `pages` pages,
   * having got through `consumed` entries of the list (sent, or skipped as no
   * longer stale).
   */
  onSend(bytes: number, pages: number, consumed: number): void {
    this.offered += bytes;
    this.consumed = consumed;
    this.recentBytes = this.recentBytes * 0.5 + bytes;
    this.recentPages = this.recentPages * 0.5 + pages;
  }

  /** Bytes the target acknowledged (the engine) or the link delivered (the simulator). */
  onDelivered(bytes: number): void {
    this.delivered += bytes;
  }

  /**
   * Wire bytes per page sent recently (header and framing included, after
   * elision and compression); a full page's until about a page's worth of
   * recent sends says otherwise.
   */
  get wireBytesPerPage(): number {
    return this.recentPages > 0.5 ? this.recentBytes / this.recentPages : fullPageWireBytes(this.pageSize, this.wire);
  }

  /** Ends a step: the ledger fields of the observation that follows it, with offered and delivered counted since the last one. */
  observe(): LedgerFields {
    const f = { consumed: this.consumed, wireBytesPerPage: this.wireBytesPerPage, offeredBytes: this.offered, deliveredBytes: this.delivered };
    this.offered = 0;
    this.delivered = 0;
    return f;
  }

  /** The expected pause if `pendingPages` were left at the switchover (core/downtime.ts). */
  expectedDowntimeMs(pendingPages: number, bandwidthBytesPerSec: number, rttMs: number, costs: SwitchoverCosts = DEFAULT_SWITCHOVER_COSTS): number {
    return estimateDowntime(pendingPages, this.wireBytesPerPage, bandwidthBytesPerSec, rttMs, costs).expectedDowntimeMs;
  }
}
