import { ErrorCodes, PresyncError } from '../errors.ts';
import { PageSet, type ReadonlyPageSet } from '../pageset.ts';
import type { RewritePredictor } from '../predict/types.ts';

/**
 * The decision rule on top of a predictor: which stale pages to hold back this
 * epoch, and in which order to send the rest.
 *
 * A stale page is a candidate for holding when P(rewritten within
 * `horizonEpochs`) ≥ `threshold`: sending it now would probably be wasted.
 * Holding costs residual: a held page that is not written again before a
 * launch is one more page to copy at launch, and one a naive sync would not
 * have left (naive leaves only what was written during the last epoch).
 * With write duty u (long-run fraction of epochs the page is written), holding
 * a page saves about u sends per epoch and adds about 1 − u pages to the
 * expected residual (naive leaves it stale at a launch only when it was
 * written in the last epoch), so a held page's worth is u ÷ (1 − u): sends
 * saved per page of added pause. Candidates are taken in that order
 * (decreasing duty) until the expected extra residual Σ(1 − u) reaches the
 * budget, whose default is the pause it may add at the link rate:
 *   budget = 0.9 × addedPauseMs × link rate ÷ bytes per page
 *            (+ residualSlack × pages written per epoch + residualFloorPages)
 * i.e. a launch at any moment pauses about addedPauseMs (5 ms) longer than
 * naive's would. Σ(1 − u) is only the predictor's expectation: the held pages
 * the guest then leaves alone for an epoch are the extra residual a launch
 * would really find, so the rule keeps a moving average of realized ÷
 * expected (rising fast, falling slowly: the bad phases of a periodic writer
 * count, not the mean) and divides the budget by it (clamped to [0.5, 100]): a predictor
 * that overrates duty (periodic writers seen through a 100 ms epoch) holds
 * fewer pages instead of overrunning the pause. Two caps make it bounded whatever the predictor
 * says: the held set never exceeds what the link moves in `downtimeTargetMs`
 * (so the expected pause if launched now stays under it), and a page held for
 * `maxHoldEpochs` in a row is sent anyway (the staleness cap). Pages over a
 * cap are sent coldest (lowest duty) first.
 *
 * Pages sent are ordered least likely to be rewritten first, so that when the
 * budget cuts the list it cuts the pages most likely to be wasted.
 */
export interface HoldBackConfig {
  /** Horizon of the rewrite prediction, epochs. Default 10 (1 s of 100 ms epochs). */
  readonly horizonEpochs: number;
  /** Hold a page only when P(rewrite within the horizon) is at least this. Default 0.2 (about duty 0.02: below it a held page saves too little per ms of pause it adds). */
  readonly threshold: number;
  /** Expected extra pause allowed at the link rate, ms (the budget's main term). Default 5. */
  readonly addedPauseMs: number;
  /** Expected extra residual allowed besides, as a fraction of the pages written per epoch. Default 0. */
  readonly residualSlack: number;
  /** Expected extra residual always allowed, pages. Default 0. */
  readonly residualFloorPages: number;
  /** The held set must fit the link in this time. Default 200 ms. */
  readonly downtimeTargetMs: number;
  /** A page held this many epochs in a row is sent anyway. Default 100 (10 s). */
  readonly maxHoldEpochs: number;
  /** Gain of the moving average of pages written per epoch. Default 0.1. */
  readonly dirtyGain: number;
  /** Gains of the realized ÷ expected extra residual average, rising and falling. Defaults 0.1 and 0.02. */
  readonly calibrationGainUp: number;
  readonly calibrationGainDown: number;
  /** The budget aims at this fraction of addedPauseMs. Default 0.9. */
  readonly pauseHeadroom: number;
  /**
   * What a held page is worth: 'duty' (long-run write duty u: saves u sends
   * an epoch for 1 − u pages of residual), or 'next' (the larger of u and
   * P(written in the next epoch), so a page in the middle of a burst of writes
   * is held for the burst however rarely it is written on average). Default 'duty'.
   */
  readonly worth: 'duty' | 'next';
}

export const DEFAULT_HOLD_BACK: HoldBackConfig = {
  horizonEpochs: 10,
  threshold: 0.2,
  addedPauseMs: 5,
  residualSlack: 0,
  residualFloorPages: 0,
  downtimeTargetMs: 200,
  maxHoldEpochs: 100,
  dirtyGain: 0.1,
  calibrationGainUp: 0.1,
  calibrationGainDown: 0.02,
  pauseHeadroom: 0.9,
  worth: 'duty',
};

export interface HoldBackInput {
  readonly epoch: number;
  readonly stale: ReadonlyPageSet;
  readonly dirtyPages: number;
  /** The pages written in the epoch just observed; without it the budget is not calibrated. */
  readonly dirty?: ReadonlyPageSet;
  readonly bandwidthBytesPerSec: number;
  readonly wireBytesPerPage: number;
}

export interface HoldBackResult {
  /** Pages to send, least likely to be rewritten first. */
  readonly send: Uint32Array;
  readonly held: number;
  /** Σ(1 − duty) over the held pages. */
  readonly expectedExtraResidual: number;
  readonly budgetPages: number;
  /** Candidates sent because of a cap. */
  readonly forced: number;
}

const BUCKETS = 1024;
const CALIBRATION_MIN = 0.5;
const CALIBRATION_MAX = 100;

export class HoldBack {
  readonly cfg: HoldBackConfig;
  private dirtyAvg = -1;
  private heldPrev: PageSet;
  private readonly heldSince: Uint32Array;
  private expectedPrev = 0;
  private calib = 1;

  constructor(readonly predictor: RewritePredictor, pageCount: number, cfg: Partial<HoldBackConfig> = {}) {
    const c = { ...DEFAULT_HOLD_BACK, ...cfg };
    if (!(Number.isInteger(c.horizonEpochs) && c.horizonEpochs >= 1)) throw bad('horizonEpochs must be a positive integer');
    if (!(c.threshold >= 0 && c.threshold <= 1)) throw bad('threshold must be in [0, 1]');
    if (!(c.addedPauseMs >= 0 && c.residualSlack >= 0 && c.residualFloorPages >= 0 && c.downtimeTargetMs >= 0)) throw bad('addedPauseMs, residualSlack, residualFloorPages and downtimeTargetMs must be non-negative');
    if (!(c.maxHoldEpochs >= 1)) throw bad('maxHoldEpochs must be at least 1');
    if (!(c.dirtyGain > 0 && c.dirtyGain <= 1)) throw bad('dirtyGain must be in (0, 1]');
    if (!(c.calibrationGainUp >= 0 && c.calibrationGainUp <= 1 && c.calibrationGainDown >= 0 && c.calibrationGainDown <= 1)) throw bad('calibration gains must be in [0, 1]');
    if (!(c.pauseHeadroom > 0 && c.pauseHeadroom <= 1)) throw bad('pauseHeadroom must be in (0, 1]');
    this.cfg = c;
    this.heldPrev = new PageSet(pageCount);
    this.heldSince = new Uint32Array(pageCount);
  }

  get dirtyPerEpoch(): number {
    return Math.max(0, this.dirtyAvg);
  }

  /** Moving average of the extra residual holding really left ÷ what the predictor expected. */
  get calibration(): number {
    return this.calib;
  }

  private calibrate(dirty: ReadonlyPageSet): void {
    if (!(this.expectedPrev > 0)) return;
    let kept = 0;
    this.heldPrev.forEach((p) => {
      if (!dirty.has(p)) kept++;
    });
    const r = Math.min(CALIBRATION_MAX, Math.max(CALIBRATION_MIN, kept / this.expectedPrev));
    // Quick to rise, slow to fall: it follows the worse epochs of a periodic
    // writer (a launch may come at any phase of its period), not their mean.
    this.calib += (r > this.calib ? this.cfg.calibrationGainUp : this.cfg.calibrationGainDown) * (r - this.calib);
  }

  decide(inp: HoldBackInput): HoldBackResult {
    const c = this.cfg;
    this.dirtyAvg = this.dirtyAvg < 0 ? inp.dirtyPages : this.dirtyAvg + c.dirtyGain * (inp.dirtyPages - this.dirtyAvg);
    if (inp.dirty) this.calibrate(inp.dirty);
    const pages = inp.stale.toArray();
    const n = pages.length;
    const q = new Float64Array(n);
    const duty = new Float64Array(n);
    this.predictor.probRewriteMany(pages, c.horizonEpochs, q);
    this.predictor.dutyMany(pages, duty);
    if (c.worth === 'next') {
      const next = new Float64Array(n);
      this.predictor.probRewriteMany(pages, 1, next);
      for (let i = 0; i < n; i++) if (next[i] > duty[i]) duty[i] = next[i];
    }

    // Candidates, by decreasing duty (bucket sort: linear and deterministic).
    const candBucket = new Int32Array(n).fill(-1);
    let nCand = 0;
    for (let i = 0; i < n; i++) {
      if (q[i] < c.threshold) continue;
      const p = pages[i];
      if (this.heldPrev.has(p) && inp.epoch - this.heldSince[p] >= c.maxHoldEpochs) continue;
      candBucket[i] = BUCKETS - 1 - Math.min(BUCKETS - 1, Math.floor(duty[i] * BUCKETS));
      nCand++;
    }
    const candOrder = bucketOrder(candBucket, nCand);
    const pagesPerMs = inp.bandwidthBytesPerSec / 1000 / Math.max(1, inp.wireBytesPerPage);
    // Headroom under the cap: the calibration lags a writer whose phase shifts.
    const budget = (c.pauseHeadroom * c.addedPauseMs * pagesPerMs + c.residualFloorPages + c.residualSlack * this.dirtyPerEpoch) / this.calib;
    const capPages = Math.floor(c.downtimeTargetMs * pagesPerMs);
    const held = new PageSet(inp.stale.size);
    const isHeld = new Uint8Array(n);
    let extra = 0;
    let nHeld = 0;
    for (let k = 0; k < candOrder.length; k++) {
      const i = candOrder[k];
      const cost = 1 - duty[i];
      if (extra + cost > budget || nHeld + 1 > capPages) break;
      extra += cost;
      nHeld++;
      isHeld[i] = 1;
      const p = pages[i];
      held.add(p);
      if (!this.heldPrev.has(p)) this.heldSince[p] = inp.epoch;
    }
    this.heldPrev = held;
    this.expectedPrev = extra;

    // The rest, least likely to be rewritten first.
    const sendBucket = new Int32Array(n).fill(-1);
    for (let i = 0; i < n; i++) if (!isHeld[i]) sendBucket[i] = Math.min(BUCKETS - 1, Math.floor(q[i] * BUCKETS));
    const order = bucketOrder(sendBucket, n - nHeld);
    const send = new Uint32Array(order.length);
    for (let k = 0; k < order.length; k++) send[k] = pages[order[k]];
    return { send, held: nHeld, expectedExtraResidual: extra, budgetPages: budget, forced: nCand - nHeld };
  }
}

/** Indices with bucket ≥ 0, by ascending bucket, ties by index (a stable counting sort). */
function bucketOrder(bucket: Int32Array, count: number): Uint32Array {
  const starts = new Uint32Array(BUCKETS + 1);
  for (let i = 0; i < bucket.length; i++) if (bucket[i] >= 0) starts[bucket[i] + 1]++;
  for (let b = 0; b < BUCKETS; b++) starts[b + 1] += starts[b];
  const out = new Uint32Array(count);
  for (let i = 0; i < bucket.length; i++) if (bucket[i] >= 0) out[starts[bucket[i]]++] = i;
  return out;
}

function bad(msg: string): PresyncError {
  return new PresyncError(ErrorCodes.BAD_ARGUMENT, `hold-back: ${msg}`);
}
