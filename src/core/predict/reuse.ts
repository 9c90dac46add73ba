import { ErrorCodes, PresyncError } from '../errors.ts';
import type { ReadonlyPageSet } from '../pageset.ts';
import { checkHorizon, checkPage, clamp01 } from './markov.ts';
import type { RewritePredictor } from './types.ts';

/**
 * Reuse-distance model: when will this page be written next? Each page keeps
 * the epoch of its last write and a moving average ĝ of the gaps between its
 * writes (in epochs); each region of `regionPages` pages keeps the same
 * average over its pages' gaps, and stands in for a page that has not been
 * written twice yet: memory a program has just allocated (a compressor's
 * match finder, a sorter's buffer, a database's fresh pages) is predicted by
 * its neighbours' reuse, not by a blank history.
 *
 * A page last written a epochs ago with average gap ĝ is expected to be
 * written again in r = ĝ − a epochs while a < ĝ; once overdue (a ≥ ĝ) the
 * wait is taken as long as it has already been (r = a + 1): the longer a page
 * is quiet, the less it is likely to be written soon. Writes are taken as a
 * Poisson process of mean wait r' = max(1/3, r − 2/3), on schedule, or
 * r' = a + 1 overdue: P(write within h) = 1 − exp(−h ÷ r'), so a page
 * written every epoch is near certain (0.95) to be written in the next. Duty: 1 ÷ max(1, ĝ) (1 ÷ (a + 1) once overdue).
 *
 * What it captures that Markov does not: the phase of a periodic writer (a
 * page written every 5 epochs is likely in epoch 4 after a write, unlikely in
 * epoch 1) and fresh memory judged by its region. Where it fails: gaps that
 * vary widely (ĝ is their mean; a burst followed by a long pause reads as a
 * middling gap) and writers whose regions mix hot and cold pages.
 *
 * State: last write epoch (4 B) and ĝ (4 B, float) per page; observe() costs
 * O(dirty pages).
 */
export interface ReuseConfig {
  /** Gain of the moving average of a page's gaps. Default 0.3. */
  readonly gapGain: number;
  /** Pages per region for the stand-in average. Default 64. */
  readonly regionPages: number;
  /** Gap assumed where nothing is known yet, epochs. Default 50. */
  readonly priorGapEpochs: number;
}

export const DEFAULT_REUSE: ReuseConfig = { gapGain: 0.3, regionPages: 64, priorGapEpochs: 50 };

export class ReusePredictor implements RewritePredictor {
  readonly name = 'reuse';
  readonly cfg: ReuseConfig;
  private latest = -1;
  /** Last write epoch + 1 (0 = never written). */
  private readonly lastPlus1: Uint32Array;
  /** Average gap between writes, epochs (0 = fewer than two writes). */
  private readonly gap: Float32Array;
  private readonly regionGap: Float32Array;

  constructor(readonly pageCount: number, cfg: Partial<ReuseConfig> = {}) {
    this.cfg = { ...DEFAULT_REUSE, ...cfg };
    const c = this.cfg;
    if (!(c.gapGain > 0 && c.gapGain <= 1)) throw bad(`gapGain must be in (0, 1], got ${c.gapGain}`);
    if (!(Number.isInteger(c.regionPages) && c.regionPages >= 1)) throw bad(`regionPages must be a positive integer, got ${c.regionPages}`);
    if (!(c.priorGapEpochs >= 1 && Number.isFinite(c.priorGapEpochs))) throw bad(`priorGapEpochs must be at least 1, got ${c.priorGapEpochs}`);
    this.lastPlus1 = new Uint32Array(pageCount);
    this.gap = new Float32Array(pageCount);
    this.regionGap = new Float32Array(Math.ceil(pageCount / c.regionPages));
  }

  get epoch(): number {
    return this.latest;
  }

  get stateBytes(): number {
    return this.pageCount * 8 + this.regionGap.length * 4;
  }

  observe(dirty: ReadonlyPageSet, epoch: number): void {
    if (dirty.size !== this.pageCount) throw new PresyncError(ErrorCodes.GEOMETRY, `dirty set has ${dirty.size} pages, predictor ${this.pageCount}`);
    if (!(Number.isInteger(epoch) && epoch > this.latest && epoch < 0xfffffffe)) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `epochs must increase: got ${epoch} after ${this.latest}`);
    }
    const k = this.cfg.gapGain;
    const rp = this.cfg.regionPages;
    dirty.forEach((p) => {
      const l1 = this.lastPlus1[p];
      if (l1 !== 0) {
        const g = epoch + 1 - l1;
        this.gap[p] = this.gap[p] === 0 ? g : this.gap[p] + k * (g - this.gap[p]);
        const r = Math.floor(p / rp);
        this.regionGap[r] = this.regionGap[r] === 0 ? g : this.regionGap[r] + k * (g - this.regionGap[r]);
      }
      this.lastPlus1[p] = epoch + 1;
    });
    this.latest = epoch;
  }

  /** The expected gap of a page: its own, else its region's, else the prior. */
  private gapOf(page: number): number {
    const g = this.gap[page];
    if (g > 0) return g;
    const rg = this.regionGap[Math.floor(page / this.cfg.regionPages)];
    return rg > 0 ? rg : this.cfg.priorGapEpochs;
  }

  /** Epochs until the page's next write is expected (at least 1). */
  expectedWait(page: number): number {
    checkPage(page, this.pageCount);
    return this.waitOf(page);
  }

  private waitOf(page: number): number {
    const l1 = this.lastPlus1[page];
    const g = this.gapOf(page);
    if (l1 === 0) return Math.max(1, g);
    const age = this.latest + 1 - l1; // 0: written in the latest epoch
    return Math.max(1, age < g ? g - age : age + 1);
  }

  private probOf(page: number, h: number): number {
    const l1 = this.lastPlus1[page];
    const g = this.gapOf(page);
    const age = l1 === 0 ? g : this.latest + 1 - l1;
    // The epoch of an expected write counts as a third of an epoch away: a page written every epoch is
    // near certain (0.95) to be written in the next.
    if (age < g) return clamp01(1 - Math.exp(-h / Math.max(1 / 3, g - age - 2 / 3)));
    return clamp01(1 - Math.exp(-h / (age + 1)));
  }

  probRewrite(page: number, horizonEpochs: number): number {
    checkPage(page, this.pageCount);
    checkHorizon(horizonEpochs);
    return this.probOf(page, horizonEpochs);
  }

  probRewriteMany(pages: Uint32Array, horizonEpochs: number, out: Float64Array): void {
    checkHorizon(horizonEpochs);
    for (let i = 0; i < pages.length; i++) out[i] = this.probOf(pages[i], horizonEpochs);
  }

  dutyMany(pages: Uint32Array, out: Float64Array): void {
    for (let i = 0; i < pages.length; i++) {
      const p = pages[i];
      const g = this.gapOf(p);
      const l1 = this.lastPlus1[p];
      const age = l1 === 0 ? 0 : this.latest + 1 - l1;
      out[i] = clamp01(1 / Math.max(1, g, age + 1 > g ? age + 1 : 0));
    }
  }
}

function bad(msg: string): PresyncError {
  return new PresyncError(ErrorCodes.BAD_ARGUMENT, `reuse predictor: ${msg}`);
}
