import { PageSet, type ReadonlyPageSet } from '../../src/core/pageset.ts';
import { DEFAULT_HOLD_BACK, type HoldBackConfig, type HoldBackInput, type HoldBackResult } from '../../src/core/policies/hold-back.ts';
import type { RewritePredictor } from '../../src/core/predict/types.ts';

/**
 * The hold-back rule as it was before it became incremental: every stale page
 * predicted afresh and sorted every epoch (O(stale) per epoch). Kept as the
 * reference the incremental HoldBack is checked against.
 */
const BUCKETS = 1024;
const CALIBRATION_MIN = 0.5;
const CALIBRATION_MAX = 100;

export class ReferenceHoldBack {
  readonly cfg: HoldBackConfig;
  private dirtyAvg = -1;
  private heldPrev: PageSet;
  private readonly heldSince: Uint32Array;
  private expectedPrev = 0;
  private calib = 1;

  constructor(readonly predictor: RewritePredictor, pageCount: number, cfg: Partial<HoldBackConfig> = {}) {
    const c = { ...DEFAULT_HOLD_BACK, ...cfg };
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

  decide(inp: HoldBackInput): Omit<HoldBackResult, 'cut' | 'sendable'> {
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

