import { PageSet } from '../core/pageset.ts';
import type { Workload } from '../sim/workload.ts';

/**
 * How far any policy that does not know the launch moment can get on a
 * workload, given an added-pause budget: a bound from the workload's own
 * future, to set beside the oracle (which knows the launch moment).
 *
 * Naive sends a page after every epoch in which it was written. A policy
 * saves a send only by not sending after some write, and the page then stays
 * stale until its next write: a skip across a gap of g epochs adds g − 1 page-
 * epochs of residual that naive would not have (a launch in between finds the
 * page stale). Over a window of E epochs, an average added residual of B pages
 * allows B·E page-epochs of such staleness; the most skips that fit are the
 * cheapest gaps first (a fractional knapsack). Skipping after a page's last
 * write is left out (its cost runs to a launch the policy cannot see), which
 * only makes the bound more generous to the policy.
 *
 * Counted in page sends at epoch granularity, from the first epoch to the
 * launch: `firstCopies` (each page that ever needs sending, once: what the
 * oracle sends), `naiveRewrites`, and `boundRewrites`, the fewest rewrite
 * sends within the budget. `boundOracleRatio` = (firstCopies + boundRewrites)
 * ÷ firstCopies estimates the best bytes ÷ oracle reachable (bench paper's
 * `oracleRatio` is in bytes with framing; zero pages make it slightly lower).
 */
export interface PauseBound {
  readonly firstCopies: number;
  readonly naiveRewrites: number;
  readonly boundRewrites: number;
  readonly boundRewriteReduction: number;
  readonly boundOracleRatio: number;
}

export function pauseBound(w: Workload, launchAtMs: number, epochMs: number, budgetPages: number): PauseBound {
  const n = w.geometry.pageCount;
  const epochs = Math.floor(launchAtMs / epochMs);
  const initial = w.initialNonZero();
  const last = new Int32Array(n).fill(-1);
  const everNeeded = PageSet.copyOf(initial);
  // costs[c] = number of gaps whose skip costs c page-epochs.
  const costs = new Float64Array(epochs + 1);
  let naiveRewrites = 0;
  const dirty = new PageSet(n);
  for (let e = 0; e < epochs; e++) {
    dirty.clear();
    w.writes(e * epochMs, (e + 1) * epochMs, dirty);
    dirty.forEach((p) => {
      if (last[p] >= 0) costs[e - last[p] - 1]++;
      // A page's first write is its first copy unless it already held data at the start.
      if (last[p] >= 0 || initial.has(p)) naiveRewrites++;
      last[p] = e;
      everNeeded.add(p);
    });
  }
  let budget = budgetPages * epochs;
  let skips = 0;
  for (let c = 0; c <= epochs && budget >= 0; c++) {
    const k = c === 0 ? costs[c] : Math.min(costs[c], Math.floor(budget / c));
    skips += k;
    budget -= k * c;
    if (k < costs[c]) break;
  }
  const firstCopies = everNeeded.count();
  const boundRewrites = Math.max(0, naiveRewrites - skips);
  return {
    firstCopies,
    naiveRewrites,
    boundRewrites,
    boundRewriteReduction: naiveRewrites > 0 ? 1 - boundRewrites / naiveRewrites : 0,
    boundOracleRatio: firstCopies > 0 ? (firstCopies + boundRewrites) / firstCopies : 1,
  };
}
