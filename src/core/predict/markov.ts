import { ErrorCodes, PresyncError } from '../errors.ts';
import type { ReadonlyPageSet } from '../pageset.ts';
import type { RewritePredictor } from './types.ts';

/**
 * Two-state Markov model per page: each epoch a page is dirty (written) or
 * clean, and the next epoch's state depends only on the current one through
 * a = P(dirty next | dirty now) and b = P(dirty next | clean now).
 *
 * Both are estimated from transition counts. Counting clean→clean
 * transitions for every page every epoch would cost O(guest size), so the
 * counts are kept implicitly: a page stores how many epochs it was dirty (nD),
 * how many of those followed a dirty epoch (nDD) and its last dirty epoch;
 * with T transitions observed so far (every page starts in a virtual clean
 * epoch just before the first observation):
 *   from-dirty = nD − [dirty in the latest epoch],  dirty→dirty = nDD,
 *   from-clean = T − from-dirty,                    clean→dirty = nD − nDD.
 * observe() therefore costs O(dirty pages) plus a scan of the bitmap's words.
 *
 * Pages with little history borrow strength from their region (REGION_PAGES
 * neighbouring pages, which tend to belong to the same buffer or heap arena)
 * and regions from the whole guest, by shrinkage with pseudo-counts:
 *   a_page = (nDD + k_page·a_region) / (from-dirty + k_page).
 *
 * P(written within h epochs) = 1 − (1−a)(1−b)^(h−1) when dirty now,
 *                             1 − (1−b)^h             when clean now.
 */
export interface MarkovConfig {
  /** Pages per pooling region. Default 64 (256 KiB of 4 KiB pages). */
  readonly regionPages: number;
  /** Pseudo-transitions of the region estimate mixed into each page's. Default 4. */
  readonly pageStrength: number;
  /** Pseudo-transitions of the global estimate mixed into each region's. Default 8. */
  readonly regionStrength: number;
  /** Prior P(dirty | dirty) before anything is seen, and its weight. Default 0.5, 1. */
  readonly priorA: number;
  /** Prior P(dirty | clean) before anything is seen. Default 0.01. */
  readonly priorB: number;
  readonly priorStrength: number;
}

export const DEFAULT_MARKOV: MarkovConfig = {
  regionPages: 64,
  pageStrength: 4,
  regionStrength: 8,
  priorA: 0.5,
  priorB: 0.01,
  priorStrength: 1,
};

const U16_MAX = 0xffff;

export class MarkovPredictor implements RewritePredictor {
  readonly name = 'markov';
  readonly cfg: MarkovConfig;
  private first = -1;
  private latest = -1;
  /** Last dirty epoch + 1 (0 = never dirty). */
  private readonly lastPlus1: Uint32Array;
  /** Dirty epochs; saturates (the estimate then freezes, after ~1.8 h of 100 ms epochs). */
  private readonly nD: Uint16Array;
  private readonly nDD: Uint16Array;
  private readonly rD: Float64Array;
  private readonly rDD: Float64Array;
  /** Pages of the region dirty in the latest epoch; valid when rStamp equals the latest epoch + 1. */
  private readonly rNow: Uint16Array;
  private readonly rStamp: Uint32Array;
  private readonly rSize: Uint16Array;
  private gD = 0;
  private gDD = 0;
  private gNow = 0;

  constructor(readonly pageCount: number, cfg: Partial<MarkovConfig> = {}) {
    this.cfg = { ...DEFAULT_MARKOV, ...cfg };
    const c = this.cfg;
    if (!(Number.isInteger(c.regionPages) && c.regionPages >= 1 && c.regionPages <= U16_MAX)) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `markov regionPages must be an integer in [1, 65535], got ${c.regionPages}`);
    }
    for (const k of ['pageStrength', 'regionStrength', 'priorStrength'] as const) {
      if (!(c[k] >= 0 && Number.isFinite(c[k]))) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `markov ${k} must be a finite non-negative number`);
    }
    if (!(c.priorA >= 0 && c.priorA <= 1 && c.priorB >= 0 && c.priorB <= 1)) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, 'markov priors must be probabilities');
    }
    this.lastPlus1 = new Uint32Array(pageCount);
    this.nD = new Uint16Array(pageCount);
    this.nDD = new Uint16Array(pageCount);
    const regions = Math.ceil(pageCount / c.regionPages);
    this.rD = new Float64Array(regions);
    this.rDD = new Float64Array(regions);
    this.rNow = new Uint16Array(regions);
    this.rStamp = new Uint32Array(regions);
    this.rSize = new Uint16Array(regions);
    for (let r = 0; r < regions; r++) this.rSize[r] = Math.min(c.regionPages, pageCount - r * c.regionPages);
  }

  get epoch(): number {
    return this.latest;
  }

  get stateBytes(): number {
    return this.pageCount * 8;
  }

  observe(dirty: ReadonlyPageSet, epoch: number): void {
    if (dirty.size !== this.pageCount) throw new PresyncError(ErrorCodes.GEOMETRY, `dirty set has ${dirty.size} pages, predictor ${this.pageCount}`);
    if (!(Number.isInteger(epoch) && epoch > this.latest && epoch < 0xfffffffe)) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `epochs must increase: got ${epoch} after ${this.latest}`);
    }
    if (this.first < 0) this.first = epoch;
    const prevPlus1 = epoch; // last dirty epoch + 1 of a page also dirty in epoch − 1
    const stamp = epoch + 1;
    const rp = this.cfg.regionPages;
    let now = 0;
    dirty.forEach((p) => {
      now++;
      const r = Math.floor(p / rp);
      if (this.rStamp[r] !== stamp) {
        this.rStamp[r] = stamp;
        this.rNow[r] = 0;
      }
      this.rNow[r]++;
      if (this.nD[p] === U16_MAX) {
        this.lastPlus1[p] = stamp;
        return;
      }
      const dd = this.lastPlus1[p] === prevPlus1 && prevPlus1 > 0 && this.latest === epoch - 1;
      this.nD[p]++;
      this.rD[r]++;
      this.gD++;
      if (dd) {
        this.nDD[p]++;
        this.rDD[r]++;
        this.gDD++;
      }
      this.lastPlus1[p] = stamp;
    });
    this.gNow = now;
    this.latest = epoch;
  }

  /** Transitions each page has been through: from the virtual clean epoch before the first one to the latest. */
  private transitions(): number {
    return this.first < 0 ? 0 : this.latest - this.first + 1;
  }

  /** [a, b] for one page. */
  private params(page: number, t: number, g: { a: number; b: number }, out: Float64Array): void {
    const c = this.cfg;
    const r = Math.floor(page / c.regionPages);
    const rNow = this.rStamp[r] === this.latest + 1 ? this.rNow[r] : 0;
    const rFromDirty = this.rD[r] - rNow;
    const rFromClean = this.rSize[r] * t - rFromDirty;
    const aR = (this.rDD[r] + c.regionStrength * g.a) / (rFromDirty + c.regionStrength || 1);
    const bR = (this.rD[r] - this.rDD[r] + c.regionStrength * g.b) / (rFromClean + c.regionStrength || 1);
    const nD = this.nD[page];
    const nowDirty = this.latest >= 0 && this.lastPlus1[page] === this.latest + 1;
    const fromDirty = nD - (nowDirty ? 1 : 0);
    const fromClean = t - fromDirty;
    out[0] = (this.nDD[page] + c.pageStrength * aR) / (fromDirty + c.pageStrength || 1);
    out[1] = (nD - this.nDD[page] + c.pageStrength * bR) / (fromClean + c.pageStrength || 1);
    out[2] = nowDirty ? 1 : 0;
  }

  private globalParams(t: number): { a: number; b: number } {
    const c = this.cfg;
    const fromDirty = this.gD - this.gNow;
    const fromClean = this.pageCount * t - fromDirty;
    return {
      a: (this.gDD + c.priorStrength * c.priorA) / (fromDirty + c.priorStrength || 1),
      b: (this.gD - this.gDD + c.priorStrength * c.priorB) / (fromClean + c.priorStrength || 1),
    };
  }

  /** The model's transition probabilities for a page (for tests and diagnostics). */
  transitionProbs(page: number): { a: number; b: number; dirtyNow: boolean } {
    checkPage(page, this.pageCount);
    const t = this.transitions();
    const o = new Float64Array(3);
    this.params(page, t, this.globalParams(t), o);
    return { a: o[0], b: o[1], dirtyNow: o[2] === 1 };
  }

  probRewrite(page: number, horizonEpochs: number): number {
    checkPage(page, this.pageCount);
    const one = new Float64Array(1);
    this.probRewriteMany(Uint32Array.of(page), horizonEpochs, one);
    return one[0];
  }

  probRewriteMany(pages: Uint32Array, horizonEpochs: number, out: Float64Array): void {
    checkHorizon(horizonEpochs);
    const t = this.transitions();
    const g = this.globalParams(t);
    const o = new Float64Array(3);
    for (let i = 0; i < pages.length; i++) {
      this.params(pages[i], t, g, o);
      const a = o[0];
      const b = o[1];
      const quiet = o[2] === 1 ? (1 - a) * Math.pow(1 - b, horizonEpochs - 1) : Math.pow(1 - b, horizonEpochs);
      out[i] = clamp01(1 - quiet);
    }
  }

  /** Stationary P(dirty) of the page's chain: b / (1 − a + b). */
  dutyMany(pages: Uint32Array, out: Float64Array): void {
    const t = this.transitions();
    const g = this.globalParams(t);
    const o = new Float64Array(3);
    for (let i = 0; i < pages.length; i++) {
      this.params(pages[i], t, g, o);
      const den = 1 - o[0] + o[1];
      out[i] = den > 0 ? clamp01(o[1] / den) : 1;
    }
  }
}

export function checkPage(page: number, pageCount: number): void {
  if (!(Number.isInteger(page) && page >= 0 && page < pageCount)) {
    throw new PresyncError(ErrorCodes.PAGE_RANGE, `page ${page} out of range [0, ${pageCount})`);
  }
}

export function checkHorizon(h: number): void {
  if (!(Number.isInteger(h) && h >= 1)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `horizon must be a positive integer of epochs, got ${h}`);
}

export function clamp01(x: number): number {
  return x < 0 ? 0 : x > 1 ? 1 : x;
}
