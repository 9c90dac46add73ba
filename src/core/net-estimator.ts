/**
 * Network estimates for the real shell, from timestamps the shell passes in
 * (this module reads no clock). Delivery rate is acknowledged bytes over time,
 * kept as a windowed maximum as BBR does, so that idle epochs (nothing to
 * send) do not drag the estimate down; RTT is smoothed as TCP does (RFC 6298).
 */
export interface NetEstimatorConfig {
  /** Bandwidth to assume before any measurement, bytes/s (a configured --bandwidth, or a guess). */
  readonly initialBandwidthBytesPerSec: number;
  /** How many recent delivery samples the max filter spans. */
  readonly windowSamples: number;
  /** Ignore delivery samples shorter than this (timer noise), ms. */
  readonly minSampleMs: number;
  /** Hard cap: a configured shaper rate, bytes/s (Infinity when unshaped). */
  readonly capBytesPerSec: number;
}

export const DEFAULT_NET_ESTIMATOR: NetEstimatorConfig = {
  initialBandwidthBytesPerSec: 125_000_000,
  windowSamples: 10,
  minSampleMs: 5,
  capBytesPerSec: Infinity,
};

export class NetEstimator {
  private srtt = -1;
  private minRtt = Infinity;
  private readonly samples: number[] = [];
  private sent = 0;
  private acked = 0;
  private lastAckAt = -1;
  private lastAckBytes = 0;

  constructor(private readonly cfg: NetEstimatorConfig = DEFAULT_NET_ESTIMATOR) {}

  onSent(bytes: number): void {
    this.sent += bytes;
  }

  /** Cumulative bytes the target has acknowledged, at time nowMs. */
  onAcked(totalAckedBytes: number, nowMs: number, busy: boolean): void {
    if (totalAckedBytes < this.acked) return;
    this.acked = totalAckedBytes;
    if (this.lastAckAt < 0) {
      this.lastAckAt = nowMs;
      this.lastAckBytes = totalAckedBytes;
      return;
    }
    const dt = nowMs - this.lastAckAt;
    // Only intervals in which we kept the pipe full measure the link.
    if (dt >= this.cfg.minSampleMs) {
      if (busy) {
        this.samples.push(((totalAckedBytes - this.lastAckBytes) / dt) * 1000);
        if (this.samples.length > this.cfg.windowSamples) this.samples.shift();
      }
      this.lastAckAt = nowMs;
      this.lastAckBytes = totalAckedBytes;
    }
  }

  onRttSample(ms: number): void {
    if (!(ms >= 0)) return;
    this.minRtt = Math.min(this.minRtt, ms);
    this.srtt = this.srtt < 0 ? ms : this.srtt * 0.875 + ms * 0.125;
  }

  get bytesInFlight(): number {
    return Math.max(0, this.sent - this.acked);
  }

  get rttMs(): number {
    return this.srtt < 0 ? 1 : this.srtt;
  }

  get minRttMs(): number {
    return Number.isFinite(this.minRtt) ? this.minRtt : this.rttMs;
  }

  get bandwidthBytesPerSec(): number {
    const measured = this.samples.length ? Math.max(...this.samples) : this.cfg.initialBandwidthBytesPerSec;
    return Math.min(measured, this.cfg.capBytesPerSec);
  }
}
