/**
 * Fluid model of one bottleneck link shared with an optional bulk flow.
 *
 * Our bytes wait in a FIFO send queue; each step the link serves our fair
 * share of its capacity. A competing bulk flow (always backlogged while on)
 * takes an equal share when we want more than half, and everything we leave
 * otherwise, as two long-lived TCP flows do on one bottleneck.
 */
export interface LinkConfig {
  /** Link capacity, bytes/s. */
  readonly bandwidthBytesPerSec: number;
  /** Base round-trip time, ms. */
  readonly rttMs: number;
  /** Competing bulk flow active in [fromMs, toMs). */
  readonly competing?: { readonly fromMs: number; readonly toMs: number };
}

export interface LinkStep {
  /** Bytes of ours the link carried in the step. */
  readonly delivered: number;
  /** Bytes the competing flow carried in the step. */
  readonly competingDelivered: number;
}

export class SimLink {
  private queued = 0;
  constructor(readonly cfg: LinkConfig) {
    if (!(cfg.bandwidthBytesPerSec > 0)) throw new RangeError('link bandwidth must be positive');
    if (!(cfg.rttMs >= 0)) throw new RangeError('link RTT must be non-negative');
  }

  get queuedBytes(): number {
    return this.queued;
  }

  enqueue(bytes: number): void {
    this.queued += bytes;
  }

  competingActive(atMs: number): boolean {
    const c = this.cfg.competing;
    return c !== undefined && atMs >= c.fromMs && atMs < c.toMs;
  }

  /** Our share of the link, bytes/s, at a moment, given what we want to send. */
  shareAt(atMs: number, wantBytesPerSec: number): number {
    const cap = this.cfg.bandwidthBytesPerSec;
    if (!this.competingActive(atMs)) return cap;
    return Math.max(cap / 2, Math.min(wantBytesPerSec, cap));
  }

  /** Advances the link by dtMs starting at atMs. */
  step(atMs: number, dtMs: number): LinkStep {
    const cap = (this.cfg.bandwidthBytesPerSec * dtMs) / 1000;
    const competing = this.competingActive(atMs);
    // Max-min fairness: with a backlogged rival we get at most half the link.
    const delivered = Math.min(this.queued, competing ? cap / 2 : cap);
    this.queued -= delivered;
    if (this.queued < 1e-6) this.queued = 0;
    return { delivered, competingDelivered: competing ? cap - delivered : 0 };
  }

  /** Time to drain what is queued plus `extraBytes`, ms, at our share from `atMs`. */
  drainMs(atMs: number, extraBytes = 0): number {
    const bytes = this.queued + extraBytes;
    if (bytes <= 0) return 0;
    const share = this.shareAt(atMs, Infinity);
    return (bytes / share) * 1000;
  }

  /** Queueing delay added to the base RTT by what we have queued. */
  rttNow(atMs: number): number {
    return this.cfg.rttMs + this.drainMs(atMs);
  }
}
