import { ErrorCodes, PresyncError } from '../errors.ts';

/**
 * Slow-start synchronization adaptive policy (the paper's idea 4), after TCP's
 * slow start and congestion avoidance (RFC 5681) with window validation for
 * an application that often has little to send (RFC 7661).
 *
 * The window is the budget for one epoch, in bytes. It starts at
 * `initialWindowBytes`, doubles every epoch in which it was used while below
 * `ssthresh` (slow start), then grows by `additiveIncreaseBytes` per epoch
 * (congestion avoidance). A sign that the network or the guest is hurting cuts
 * it: window ← max(minWindow, window·cutFactor), ssthresh ← that value. When
 * there is nothing to send for `idleAfterEpochs` epochs, it goes back to the
 * initial window (TCP's restart after idle): a later burst starts gently.
 */
export interface SlowStartConfig {
  /** Window at start and after idle, bytes. Default 64 pages of 4 KiB with framing (263 168 B). */
  readonly initialWindowBytes: number;
  /** Floor for cuts, bytes. Default = initialWindowBytes. */
  readonly minWindowBytes: number;
  /** Initial slow-start threshold, bytes. Default Infinity: double until the first sign of trouble. */
  readonly initialSsthreshBytes: number;
  /** Growth per used epoch in congestion avoidance, bytes. Default 64 pages' worth. */
  readonly additiveIncreaseBytes: number;
  /** Multiplicative decrease on a signal. Default 0.5. */
  readonly cutFactor: number;
  /**
   * Link signal: the previous epoch delivered less than (1 − tolerance) of
   * what was offered while bytes wait in the send queue. Default 0.05.
   */
  readonly deliveryTolerance: number;
  /** Bytes in flight tolerated before "delivered < offered" counts (absorbs the pipe itself). Default 256 KiB. */
  readonly queueToleranceBytes: number;
  /** RTT signal: rtt > baseline·rttFactor + rttSlackMs. Default 1.5 and 5 ms. */
  readonly rttFactor: number;
  readonly rttSlackMs: number;
  /** Smoothing of the RTT baseline upwards (it follows decreases at once: a min filter with slow release). Default 0.01. */
  readonly rttBaselineGain: number;
  /**
   * Guest signal: slowdown above the tracking floor by more than this fraction.
   * Default 0.05 (5 %). The floor is the smallest slowdown seen over the last
   * `slowdownFloorEpochs` epochs: dirty tracking costs the guest the same
   * whatever we send, so only the part above it is ours to reduce; cutting
   * for the rest would starve the sync and grow the residual for nothing.
   */
  readonly slowdownBudget: number;
  /** Window of the slowdown floor, epochs. Default 50. */
  readonly slowdownFloorEpochs: number;
  /** After a cut, signals are ignored for this many epochs while the queue drains. Default 2. */
  readonly cutHoldEpochs: number;
  /** Epochs with nothing to send before the window restarts from the initial value. Default 10. */
  readonly idleAfterEpochs: number;
  /** The window grows only when the previous epoch used at least this fraction of it. Default 0.5. */
  readonly minUseToGrow: number;
}

const PAGE_WIRE = 4096 + 16 + 20 / 64;

export const DEFAULT_SLOW_START: SlowStartConfig = {
  initialWindowBytes: Math.round(64 * PAGE_WIRE),
  minWindowBytes: Math.round(64 * PAGE_WIRE),
  initialSsthreshBytes: Infinity,
  additiveIncreaseBytes: Math.round(64 * PAGE_WIRE),
  cutFactor: 0.5,
  deliveryTolerance: 0.05,
  queueToleranceBytes: 256 * 1024,
  rttFactor: 1.5,
  rttSlackMs: 5,
  rttBaselineGain: 0.01,
  slowdownBudget: 0.05,
  slowdownFloorEpochs: 50,
  cutHoldEpochs: 2,
  idleAfterEpochs: 10,
  minUseToGrow: 0.5,
};

/** What the controller learns about the previous epoch. */
export interface RateSignal {
  /** Bytes we handed to the transport in the previous epoch. */
  readonly offeredBytes: number;
  /** Bytes the target acknowledged in the previous epoch. */
  readonly deliveredBytes: number;
  /** Bytes sent and not yet acknowledged. */
  readonly bytesInFlight: number;
  readonly rttMs: number;
  /** Guest slowdown over the previous epoch, 0..1. */
  readonly guestSlowdown: number;
  /** Is there anything to send this epoch? */
  readonly sendable: boolean;
}

export type RateState = 'slow-start' | 'avoidance' | 'idle';
export type CutReason = 'link' | 'rtt' | 'guest';

export interface RateDecision {
  /** Bytes allowed this epoch (0 when idle). */
  readonly windowBytes: number;
  readonly state: RateState;
  /** Why the window was cut this epoch, if it was. */
  readonly cut: CutReason | null;
}

export class SlowStartController {
  readonly cfg: SlowStartConfig;
  private win: number;
  private thresh: number;
  private st: RateState = 'slow-start';
  private baseRtt = Infinity;
  private hold = 0;
  private idleFor = 0;
  /** Window granted last epoch: growth is judged against it. */
  private granted = 0;
  private cuts = { link: 0, rtt: 0, guest: 0 };
  private readonly slowRing: Float64Array;
  private slowN = 0;

  constructor(cfg: Partial<SlowStartConfig> = {}) {
    const c = { ...DEFAULT_SLOW_START, ...cfg };
    if (cfg.minWindowBytes === undefined && cfg.initialWindowBytes !== undefined) c.minWindowBytes = cfg.initialWindowBytes;
    const positive = ['initialWindowBytes', 'minWindowBytes', 'initialSsthreshBytes', 'additiveIncreaseBytes', 'rttFactor'] as const;
    for (const k of positive) if (!(c[k] > 0)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `slow-start ${k} must be positive, got ${c[k]}`);
    if (!(c.cutFactor > 0 && c.cutFactor < 1)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `slow-start cutFactor must be in (0, 1), got ${c.cutFactor}`);
    if (!(c.slowdownBudget > 0 && c.slowdownBudget <= 1)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `slow-start slowdownBudget must be in (0, 1]`);
    if (!(Number.isInteger(c.slowdownFloorEpochs) && c.slowdownFloorEpochs >= 1)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, 'slow-start slowdownFloorEpochs must be a positive integer');
    this.cfg = c;
    this.slowRing = new Float64Array(c.slowdownFloorEpochs);
    this.win = c.initialWindowBytes;
    this.thresh = c.initialSsthreshBytes;
  }

  get windowBytes(): number {
    return this.win;
  }
  get ssthreshBytes(): number {
    return this.thresh;
  }
  get state(): RateState {
    return this.st;
  }
  get baselineRttMs(): number {
    return this.baseRtt;
  }
  get cutCounts(): Readonly<{ link: number; rtt: number; guest: number }> {
    return this.cuts;
  }

  /** Called once per epoch, before sending: judges the previous epoch and returns this epoch's window. */
  update(s: RateSignal): RateDecision {
    const c = this.cfg;
    if (Number.isFinite(s.rttMs) && s.rttMs >= 0) {
      this.baseRtt = s.rttMs < this.baseRtt ? s.rttMs : this.baseRtt + c.rttBaselineGain * (s.rttMs - this.baseRtt);
    }
    const g = Number.isFinite(s.guestSlowdown) ? Math.max(0, s.guestSlowdown) : 0;
    this.slowRing[this.slowN++ % this.slowRing.length] = g;
    const reason = this.signal(s, g);
    let cut: CutReason | null = null;
    const held = this.hold > 0;
    if (held) this.hold--;
    if (reason && !held) {
      cut = reason;
      this.cuts[reason]++;
      this.win = Math.max(c.minWindowBytes, this.win * c.cutFactor);
      this.thresh = this.win;
      this.hold = c.cutHoldEpochs;
      if (this.st !== 'idle') this.st = 'avoidance';
    } else if (!reason && !held && this.granted > 0 && s.offeredBytes >= this.granted * c.minUseToGrow) {
      if (this.win < this.thresh) {
        this.win = Math.min(this.win * 2, Math.max(this.thresh, this.win));
        this.st = this.win >= this.thresh ? 'avoidance' : 'slow-start';
      } else {
        this.win += c.additiveIncreaseBytes;
        this.st = 'avoidance';
      }
    }
    if (!s.sendable) {
      this.idleFor++;
      if (this.idleFor >= c.idleAfterEpochs) {
        this.win = c.initialWindowBytes;
        this.st = 'idle';
      }
      this.granted = 0;
      return { windowBytes: this.st === 'idle' ? 0 : this.win, state: this.st, cut };
    }
    this.idleFor = 0;
    if (this.st === 'idle') this.st = this.win < this.thresh ? 'slow-start' : 'avoidance';
    this.granted = this.win;
    return { windowBytes: this.win, state: this.st, cut };
  }

  /** Smallest slowdown over the last slowdownFloorEpochs epochs (the current one included). */
  get slowdownFloor(): number {
    const n = Math.min(this.slowN, this.slowRing.length);
    let m = Infinity;
    for (let i = 0; i < n; i++) m = Math.min(m, this.slowRing[i]);
    return n > 0 ? m : 0;
  }

  private signal(s: RateSignal, slowdown: number): CutReason | null {
    const c = this.cfg;
    if (s.offeredBytes > 0 && s.deliveredBytes < s.offeredBytes * (1 - c.deliveryTolerance) && s.bytesInFlight > c.queueToleranceBytes) return 'link';
    if (Number.isFinite(this.baseRtt) && s.rttMs > this.baseRtt * c.rttFactor + c.rttSlackMs) return 'rtt';
    if (s.offeredBytes > 0 && slowdown - this.slowdownFloor > c.slowdownBudget) return 'guest';
    return null;
  }
}
