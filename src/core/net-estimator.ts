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

/** Taken when a batch is sent; handed back when it is acknowledged. */
export interface SendStamp {
  readonly deliveredAtSend: number;
  readonly deliveredTimeAtSend: number;
}

export class NetEstimator {
  private srtt = -1;
  private minRtt = Infinity;
  private readonly samples: number[] = [];
  private sent = 0;
  private delivered = 0;
  private deliveredTime = -1;

  constructor(private cfg: NetEstimatorConfig = DEFAULT_NET_ESTIMATOR) {}

  /**
   * A new hard cap (an operator changed the limit). A raised cap also drops
   * the delivery samples, which measured the old limit, and assumes the new
   * cap until fresh samples come in.
   */
  setCap(capBytesPerSec: number): void {
    const raised = capBytesPerSec > this.cfg.capBytesPerSec;
    this.cfg = {
      ...this.cfg,
      capBytesPerSec,
      ...(Number.isFinite(capBytesPerSec) ? { initialBandwidthBytesPerSec: capBytesPerSec } : {}),
    };
    if (raised) this.samples.length = 0;
  }

  /**
   * A batch of `bytes` leaves now. Delivery-rate samples follow BBR: the rate
   * over the interval from when the batch's predecessors had been delivered
   * to when the batch itself is, so clumped acknowledgements still measure
   * the path, and a flight that starts after an idle spell does not count the
   * idle time.
   */
  onSent(bytes: number, nowMs: number): SendStamp {
    if (this.sent === this.delivered) this.deliveredTime = nowMs;
    this.sent += bytes;
    return { deliveredAtSend: this.delivered, deliveredTimeAtSend: this.deliveredTime };
  }

  onAcked(bytes: number, stamp: SendStamp, nowMs: number): void {
    this.delivered += bytes;
    this.deliveredTime = nowMs;
    const dt = nowMs - stamp.deliveredTimeAtSend;
    if (dt >= this.cfg.minSampleMs) {
      this.samples.push(((this.delivered - stamp.deliveredAtSend) / dt) * 1000);
      if (this.samples.length > this.cfg.windowSamples) this.samples.shift();
    }
  }

  /** Forget what is in flight (the connection it was on is gone). */
  resetFlight(): void {
    this.sent = this.delivered;
  }

  private rttSampleCount = 0;

  /** How many RTT samples have been taken; before the first, rttMs is a 1 ms prior. */
  get rttSamples(): number {
    return this.rttSampleCount;
  }

  onRttSample(ms: number): void {
    if (!(ms >= 0)) return;
    this.rttSampleCount++;
    this.minRtt = Math.min(this.minRtt, ms);
    this.srtt = this.srtt < 0 ? ms : this.srtt * 0.875 + ms * 0.125;
  }

  get bytesInFlight(): number {
    return Math.max(0, this.sent - this.delivered);
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
