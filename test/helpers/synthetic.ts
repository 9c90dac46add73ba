import { PageSet } from '../../src/core/pageset.ts';
import { Rng } from '../../src/core/rng.ts';
import type { Workload } from '../../src/sim/workload.ts';

/**
 * A tiny workload for core tests that must not depend on the generators:
 * `hot` pages rewritten every `periodMs`, plus `randomPerSec` uniform random
 * writes drawn per 10 ms slot (pure in the interval, as Workload requires).
 */
export function syntheticWorkload(o: { pageCount: number; hot: number; periodMs: number; randomPerSec: number; seed: number; nonZero?: number }): Workload {
  const geometry = { pageSize: 4096, pageCount: o.pageCount };
  return {
    name: 'synthetic',
    geometry,
    initialNonZero: () => new PageSet(o.pageCount).addRange(0, Math.max(0, Math.min(o.pageCount, o.nonZero ?? o.pageCount) - 1)),
    writes(from, to, into) {
      if (o.hot > 0) {
        for (let k = Math.ceil(from / o.periodMs); k * o.periodMs < to; k++) into.addRange(0, o.hot - 1);
      }
      if (o.randomPerSec > 0) {
        for (let slot = Math.floor(from / 10); slot * 10 < to; slot++) {
          const rng = new Rng((o.seed * 7919 + slot) >>> 0);
          const n = rng.poisson((o.randomPerSec * 10) / 1000);
          for (let i = 0; i < n; i++) {
            const at = slot * 10 + rng.next() * 10;
            const p = rng.int(o.pageCount);
            if (at >= from && at < to) into.add(p);
          }
        }
      }
    },
    describe: () => `synthetic: ${o.hot} hot pages every ${o.periodMs} ms + ${o.randomPerSec} random writes/s`,
  };
}
