import type { ReadonlyPageSet } from '../pageset.ts';

/**
 * Memory change probabilistic prediction (the paper's idea 3): from each
 * page's dirty history, the probability that it is written again within the
 * next `horizonEpochs` epochs. A page likely to be rewritten soon is worth
 * holding back, since sending it now would probably be wasted.
 *
 * Epoch numbers are the caller's: `observe(dirty, e)` says "these pages were
 * written during epoch e". Epochs must strictly increase; an epoch that is
 * skipped counts as one in which nothing was written. Queries are about the
 * epochs after the latest observed one.
 */
export interface RewritePredictor {
  readonly name: string;
  /** Latest epoch observed, or -1 before the first observation. */
  readonly epoch: number;
  observe(dirty: ReadonlyPageSet, epoch: number): void;
  /** P(page is written at least once in the next horizonEpochs epochs), 0..1. */
  probRewrite(page: number, horizonEpochs: number): number;
  /** Batch form: out[i] = probRewrite(pages[i], horizonEpochs). */
  probRewriteMany(pages: Uint32Array, horizonEpochs: number, out: Float64Array): void;
  /**
   * Long-run fraction of epochs in which the page is written ("write duty"),
   * 0..1: out[i] for pages[i]. Holding a page back for good saves about this
   * many sends per epoch and leaves it differing at a launch with probability
   * about 1 − duty; the hold-back rule ranks pages by it.
   */
  dutyMany(pages: Uint32Array, out: Float64Array): void;
  /** Bytes of per-page state, for the memory budget (a few bytes per page). */
  readonly stateBytes: number;
}

export type PredictorName = 'markov' | 'ewma' | 'reuse';
export const PREDICTOR_NAMES: readonly PredictorName[] = ['markov', 'ewma', 'reuse'];
