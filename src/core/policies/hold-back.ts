import { ErrorCodes, PresyncError } from '../errors.ts';
import { KeyedQueue } from '../keyed-queue.ts';
import { forEachInRange, PageSet, PageSetMirror, type ReadonlyPageSet } from '../pageset.ts';
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
  /**
   * Every stale page's prediction is recomputed at least this often, epochs
   * (pages written or newly stale at once). Default 16. 1 recomputes all of
   * them every epoch, at a cost that grows with the stale set.
   */
  readonly refreshEpochs: number;
  /**
   * ...but no more than this many pages of the guest are swept for it per
   * epoch (a big guest's sweep takes longer than refreshEpochs). Default 4096.
   */
  readonly refreshPagesPerEpoch: number;
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
  refreshEpochs: 16,
  refreshPagesPerEpoch: 4096,
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
  /** The send order is needed only this far (what the shell can send this epoch); default all of it. */
  readonly maxSend?: number;
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
  /** `send` stops at maxSend: more pages were left to send. */
  readonly cut: boolean;
  /** Pages not held, whether or not `send` goes that far. */
  readonly sendable: number;
}

const BUCKETS = 1024;
const CALIBRATION_MIN = 0.5;
const CALIBRATION_MAX = 100;

export class HoldBack {
  readonly cfg: HoldBackConfig;
  private dirtyAvg = -1;
  private heldPrev: PageSet;
  private heldList: Uint32Array = new Uint32Array(0);
  private readonly heldSince: Uint32Array;
  private expectedPrev = 0;
  private calib = 1;
  /** What the stale set held at the last decision. */
  private readonly seen: PageSetMirror;
  /** Stale pages predicted below the threshold, by send bucket (P(rewrite), as last predicted). */
  private readonly sendQ: KeyedQueue;
  /** Candidates (at or above the threshold) by decreasing duty: the order they are held in. */
  private readonly holdQ: KeyedQueue;
  /** The same candidates by send bucket: the order those not held are sent in. */
  private readonly candQ: KeyedQueue;
  private cursor = 0;
  /** Per page, the last follow() that re-predicted it (once per epoch is enough). */
  private readonly redone: Uint32Array;
  private follows = 0;
  private redo: Uint32Array<ArrayBuffer> = new Uint32Array(1024);
  private q = new Float64Array(1024);
  private duty = new Float64Array(1024);

  constructor(readonly predictor: RewritePredictor, pageCount: number, cfg: Partial<HoldBackConfig> = {}) {
    const c = { ...DEFAULT_HOLD_BACK, ...cfg };
    if (!(Number.isInteger(c.horizonEpochs) && c.horizonEpochs >= 1)) throw bad('horizonEpochs must be a positive integer');
    if (!(c.threshold >= 0 && c.threshold <= 1)) throw bad('threshold must be in [0, 1]');
    if (!(c.addedPauseMs >= 0 && c.residualSlack >= 0 && c.residualFloorPages >= 0 && c.downtimeTargetMs >= 0)) throw bad('addedPauseMs, residualSlack, residualFloorPages and downtimeTargetMs must be non-negative');
    if (!(c.maxHoldEpochs >= 1)) throw bad('maxHoldEpochs must be at least 1');
    if (!(c.dirtyGain > 0 && c.dirtyGain <= 1)) throw bad('dirtyGain must be in (0, 1]');
    if (!(Number.isInteger(c.refreshEpochs) && c.refreshEpochs >= 1)) throw bad('refreshEpochs must be a positive integer');
    if (!(c.refreshPagesPerEpoch >= 1)) throw bad('refreshPagesPerEpoch must be at least 1');
    if (!(c.calibrationGainUp >= 0 && c.calibrationGainUp <= 1 && c.calibrationGainDown >= 0 && c.calibrationGainDown <= 1)) throw bad('calibration gains must be in [0, 1]');
    if (!(c.pauseHeadroom > 0 && c.pauseHeadroom <= 1)) throw bad('pauseHeadroom must be in (0, 1]');
    this.cfg = c;
    this.heldPrev = new PageSet(pageCount);
    this.heldSince = new Uint32Array(pageCount);
    this.seen = new PageSetMirror(pageCount);
    this.redone = new Uint32Array(pageCount);
    this.sendQ = new KeyedQueue(pageCount, BUCKETS);
    this.holdQ = new KeyedQueue(pageCount, BUCKETS);
    this.candQ = new KeyedQueue(pageCount, BUCKETS);
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
    for (const p of this.heldList) if (!dirty.has(p)) kept++;
    const r = Math.min(CALIBRATION_MAX, Math.max(CALIBRATION_MIN, kept / this.expectedPrev));
    // Quick to rise, slow to fall: it follows the worse epochs of a periodic
    // writer (a launch may come at any phase of its period), not their mean.
    this.calib += (r > this.calib ? this.cfg.calibrationGainUp : this.cfg.calibrationGainDown) * (r - this.calib);
  }

  /**
   * Brings the queues up to date with the stale set and the predictor. A
   * page's prediction moves when it is written (now, or in the epoch before:
   * its "written now" state ends); the rest drift slowly with the model's
   * counts, so the other stale pages are re-predicted a slice at a time, each
   * at least every refreshEpochs.
   */
  private follow(inp: HoldBackInput): void {
    const stale = inp.stale;
    const size = stale.size;
    const mark = ++this.follows;
    const redone = this.redone;
    let n = 0;
    // Typed scratch, kept across epochs: a number[] of the same pages costs more than the predictions.
    const again = (p: number): void => {
      if (redone[p] === mark) return;
      redone[p] = mark;
      if (n === this.redo.length) this.redo = growU32(this.redo, n + 1);
      this.redo[n++] = p;
    };
    this.seen.sync(stale, again, (p) => {
      this.sendQ.remove(p);
      this.holdQ.remove(p);
      this.candQ.remove(p);
    });
    if (inp.dirty) inp.dirty.forEach((p) => {
      if (stale.has(p)) again(p);
    });
    const slice = Math.min(this.cfg.refreshPagesPerEpoch, Math.ceil(size / this.cfg.refreshEpochs));
    if (this.cursor >= size) this.cursor = 0;
    forEachInRange(stale, this.cursor, this.cursor + slice, again);
    this.cursor += slice;
    if (n === 0) return;
    const pages = this.redo.subarray(0, n);
    if (this.q.length < n) this.q = new Float64Array(this.redo.length);
    const q = this.q.subarray(0, n);
    this.predictor.probRewriteMany(pages, this.cfg.horizonEpochs, q);
    let nCand = 0;
    const th = this.cfg.threshold;
    for (let i = 0; i < n; i++) {
      const p = pages[i];
      if (q[i] >= th) {
        // Candidates are packed at the front (i ≥ nCand): their duty is asked for all at once.
        pages[nCand] = p;
        q[nCand++] = q[i];
      } else this.place(p, q[i], 0);
    }
    if (nCand === 0) return;
    const candPages = pages.subarray(0, nCand);
    if (this.duty.length < nCand) this.duty = new Float64Array(this.redo.length);
    const duty = this.duty.subarray(0, nCand);
    this.worthMany(candPages, duty);
    for (let k = 0; k < nCand; k++) this.place(candPages[k], q[k], duty[k]);
  }

  /** What holding each page is worth (its duty, or per cfg.worth the chance of a write next epoch if larger). */
  private worthMany(pages: Uint32Array, out: Float64Array): void {
    this.predictor.dutyMany(pages, out);
    if (this.cfg.worth !== 'next') return;
    const next = new Float64Array(pages.length);
    this.predictor.probRewriteMany(pages, 1, next);
    for (let i = 0; i < pages.length; i++) if (next[i] > out[i]) out[i] = next[i];
  }

  /** Files a stale page by its prediction: below the threshold in the send queue, else a candidate. */
  private place(p: number, q: number, duty: number): void {
    if (q >= this.cfg.threshold) {
      this.sendQ.remove(p);
      this.holdQ.set(p, BUCKETS - 1 - Math.min(BUCKETS - 1, Math.floor(duty * BUCKETS)));
      this.candQ.set(p, sendBucket(q));
    } else {
      this.holdQ.remove(p);
      this.candQ.remove(p);
      this.sendQ.set(p, sendBucket(q));
    }
  }

  /** Stale pages at or above the threshold (as last predicted). */
  get candidates(): number {
    return this.holdQ.size;
  }

  decide(inp: HoldBackInput): HoldBackResult {
    const c = this.cfg;
    this.dirtyAvg = this.dirtyAvg < 0 ? inp.dirtyPages : this.dirtyAvg + c.dirtyGain * (inp.dirtyPages - this.dirtyAvg);
    if (inp.dirty) this.calibrate(inp.dirty);
    this.follow(inp);

    const pagesPerMs = inp.bandwidthBytesPerSec / 1000 / Math.max(1, inp.wireBytesPerPage);
    // Headroom under the cap: the calibration lags a writer whose phase shifts.
    const budget = (c.pauseHeadroom * c.addedPauseMs * pagesPerMs + c.residualFloorPages + c.residualSlack * this.dirtyPerEpoch) / this.calib;
    const capPages = Math.floor(c.downtimeTargetMs * pagesPerMs);
    // Candidates by decreasing duty (ties by page), held until the budget or the cap says stop;
    // a page held maxHoldEpochs in a row is no candidate this epoch.
    const heldList: number[] = [];
    let extra = 0;
    let capped = 0;
    let want = 64;
    let stopped = false;
    let demoted = 0;
    const seen = new Set<number>();
    const one = new Float64Array(1);
    const dutyNow = new Float64Array(1);
    while (!stopped && seen.size < this.holdQ.size + demoted) {
      const order = this.holdQ.take(want);
      for (let at = 0; at < order.length; at++) {
        const p = order[at];
        if (seen.has(p)) continue;
        seen.add(p);
        if (this.heldPrev.has(p) && inp.epoch - this.heldSince[p] >= c.maxHoldEpochs) {
          capped++;
          continue;
        }
        // What is held is predicted afresh: a candidate whose prediction fell below the threshold
        // since it was filed goes back to the send queue.
        const page = order.subarray(at, at + 1);
        this.predictor.probRewriteMany(page, c.horizonEpochs, one);
        this.worthMany(page, dutyNow);
        if (one[0] < c.threshold) {
          this.place(p, one[0], dutyNow[0]);
          demoted++;
          continue;
        }
        const cost = 1 - dutyNow[0];
        if (extra + cost > budget || heldList.length + 1 > capPages) {
          stopped = true;
          break;
        }
        extra += cost;
        heldList.push(p);
        if (!this.heldPrev.has(p)) this.heldSince[p] = inp.epoch;
      }
      if (order.length < want) break;
      want *= 4;
    }
    const nCand = this.holdQ.size - capped;
    for (const p of this.heldList) this.heldPrev.delete(p);
    this.heldList = Uint32Array.from(heldList);
    for (const p of this.heldList) this.heldPrev.add(p);
    this.expectedPrev = extra;

    // The rest, least likely to be rewritten first: the send queue's head, then
    // (merged by bucket) the candidates not held.
    const limit = inp.maxSend ?? Infinity;
    const head = this.sendQ.take(limit);
    const headKeys = Uint16Array.from(head, (p) => this.sendQ.key(p));
    // The candidates not held come after (nearly) every page of the queue.
    const others = this.holdQ.size - heldList.length;
    const rest = head.length < limit && others > 0 ? this.candQ.take(limit + heldList.length).filter((p) => !this.heldPrev.has(p)) : new Uint32Array(0);
    const restKeys = Uint16Array.from(rest, (p) => this.candQ.key(p));
    const send = mergeByKey(head, headKeys, rest, restKeys, limit);
    const cut = this.sendQ.size + others > send.length;
    return { send, held: heldList.length, expectedExtraResidual: extra, budgetPages: budget, forced: nCand - heldList.length, cut, sendable: this.sendQ.size + others };
  }
}

/**
 * The first `limit` of two lists ordered by key, merged; within a key `a`'s
 * entries before `b`'s, each in its own order.
 */
function mergeByKey(a: Uint32Array, ka: Uint16Array, b: Uint32Array, kb: Uint16Array, limit: number): Uint32Array {
  const n = Math.min(a.length + b.length, limit);
  const out = new Uint32Array(n);
  let i = 0;
  let j = 0;
  for (let k = 0; k < n; k++) {
    if (j >= b.length || (i < a.length && ka[i] <= kb[j])) out[k] = a[i++];
    else out[k] = b[j++];
  }
  return out;
}

function growU32(a: Uint32Array, need: number): Uint32Array<ArrayBuffer> {
  const b = new Uint32Array(Math.max(need, a.length * 2));
  b.set(a);
  return b;
}

function sendBucket(q: number): number {
  return Math.min(BUCKETS - 1, Math.floor(q * BUCKETS));
}

function bad(msg: string): PresyncError {
  return new PresyncError(ErrorCodes.BAD_ARGUMENT, `hold-back: ${msg}`);
}
