import { ErrorCodes, PresyncError } from '../errors.ts';
import type { ReadonlyPageSet } from '../pageset.ts';
import { checkHorizon, checkPage, clamp01 } from './markov.ts';
import type { RewritePredictor } from './types.ts';

/**
 * Recency/frequency model: each page carries an exponentially weighted write
 * rate r (writes per epoch, 0..1 since an epoch sees a page dirty at most
 * once) with decay d = exp(−1/τ) per epoch. On a write in epoch e after the
 * page's last write in epoch l:  r ← r·d^(e−l) + (1 − d).  A page written
 * every epoch converges to r = 1; a page left alone fades geometrically,
 * so recent writes weigh more than old ones.
 *
 * Decay is lazy: a page's state is touched only when it is written, and the
 * rate now is r·d^(now−l). Writes treated as a Poisson process at that rate
 * give P(at least one write within h epochs) = 1 − exp(−r·h).
 *
 * State: the rate quantised to 16 bits and the last write epoch (6 bytes per page).
 */
export interface EwmaConfig {
  /** Time constant τ of the decay, epochs. Default 20 (2 s of 100 ms epochs). */
  readonly tauEpochs: number;
}

export const DEFAULT_EWMA: EwmaConfig = { tauEpochs: 20 };

const Q = 0xffff;

export class EwmaPredictor implements RewritePredictor {
  readonly name = 'ewma';
  readonly cfg: EwmaConfig;
  private readonly decay: number;
  private latest = -1;
  /** Rate at the last write, × 65535. */
  private readonly rateQ: Uint16Array;
  /** Last write epoch + 1 (0 = never written). */
  private readonly lastPlus1: Uint32Array;

  constructor(readonly pageCount: number, cfg: Partial<EwmaConfig> = {}) {
    this.cfg = { ...DEFAULT_EWMA, ...cfg };
    if (!(this.cfg.tauEpochs > 0 && Number.isFinite(this.cfg.tauEpochs))) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `ewma tauEpochs must be a positive number, got ${this.cfg.tauEpochs}`);
    }
    this.decay = Math.exp(-1 / this.cfg.tauEpochs);
    this.rateQ = new Uint16Array(pageCount);
    this.lastPlus1 = new Uint32Array(pageCount);
  }

  get epoch(): number {
    return this.latest;
  }

  get stateBytes(): number {
    return this.pageCount * 6;
  }

  observe(dirty: ReadonlyPageSet, epoch: number): void {
    if (dirty.size !== this.pageCount) throw new PresyncError(ErrorCodes.GEOMETRY, `dirty set has ${dirty.size} pages, predictor ${this.pageCount}`);
    if (!(Number.isInteger(epoch) && epoch > this.latest && epoch < 0xfffffffe)) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `epochs must increase: got ${epoch} after ${this.latest}`);
    }
    const d = this.decay;
    const gain = 1 - d;
    dirty.forEach((p) => {
      const l1 = this.lastPlus1[p];
      const old = l1 === 0 ? 0 : (this.rateQ[p] / Q) * Math.pow(d, epoch + 1 - l1);
      this.rateQ[p] = Math.min(Q, Math.round((old + gain) * Q));
      this.lastPlus1[p] = epoch + 1;
    });
    this.latest = epoch;
  }

  /** The page's write rate now, writes per epoch. */
  rate(page: number): number {
    checkPage(page, this.pageCount);
    return this.rateNow(page);
  }

  private rateNow(page: number): number {
    const l1 = this.lastPlus1[page];
    if (l1 === 0) return 0;
    return (this.rateQ[page] / Q) * Math.pow(this.decay, this.latest + 1 - l1);
  }

  probRewrite(page: number, horizonEpochs: number): number {
    checkPage(page, this.pageCount);
    checkHorizon(horizonEpochs);
    return clamp01(1 - Math.exp(-this.rateNow(page) * horizonEpochs));
  }

  probRewriteMany(pages: Uint32Array, horizonEpochs: number, out: Float64Array): void {
    checkHorizon(horizonEpochs);
    for (let i = 0; i < pages.length; i++) out[i] = clamp01(1 - Math.exp(-this.rateNow(pages[i]) * horizonEpochs));
  }

  /** The decayed rate is the fraction of recent epochs with a write. */
  dutyMany(pages: Uint32Array, out: Float64Array): void {
    for (let i = 0; i < pages.length; i++) out[i] = clamp01(this.rateNow(pages[i]));
  }
}
