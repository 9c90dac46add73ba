import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { PageSet, popcount32, type ReadonlyPageSet } from '../core/pageset.ts';
import type { Workload } from '../sim/workload.ts';
import type { DirtyHeat } from '../engine/results-file.ts';

/** Regions across the guest in a heatmap: enough to see layout, few enough to stay small in a results file. */
export const HEAT_REGIONS = 64;

/**
 * Builds a dirty-page heatmap (region × time bin, distinct pages written)
 * from dirty sets as they come: a simulated workload's writes() or a real
 * image's DirtyScanner scans. Regions are whole 32-page words so counting is
 * a popcount per word, not per page.
 */
export class HeatAccumulator {
  readonly regionPages: number;
  readonly regions: number;
  private readonly rows: number[][] = [];

  constructor(readonly pageCount: number, readonly binMs: number, regions = HEAT_REGIONS) {
    if (!(Number.isInteger(pageCount) && pageCount > 0)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `heatmap needs a positive page count, got ${pageCount}`);
    if (!(binMs > 0)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `heatmap bin must be positive, got ${binMs} ms`);
    this.regionPages = Math.max(32, Math.ceil(pageCount / regions / 32) * 32);
    this.regions = Math.ceil(pageCount / this.regionPages);
  }

  /** Adds pages dirtied at time tMs (ms from the start). Pages seen twice in a bin count twice. */
  add(tMs: number, dirty: ReadonlyPageSet): void {
    if (dirty.size !== this.pageCount) throw new PresyncError(ErrorCodes.GEOMETRY, `dirty set has ${dirty.size} pages, the heatmap ${this.pageCount}`);
    const bin = Math.max(0, Math.floor(tMs / this.binMs));
    while (this.rows.length <= bin) this.rows.push(new Array<number>(this.regions).fill(0));
    const row = this.rows[bin];
    const words = dirty.words();
    const wordsPerRegion = this.regionPages / 32;
    for (let w = 0; w < words.length; w++) {
      const x = words[w];
      if (x !== 0) row[Math.floor(w / wordsPerRegion)] += popcount32(x);
    }
  }

  toJSON(): DirtyHeat {
    return { regionPages: this.regionPages, binMs: this.binMs, pageCount: this.pageCount, counts: this.rows.map((r) => [...r]) };
  }
}

/** A bin length giving about `columns` columns over `spanMs`, in whole multiples of `stepMs`. */
export function heatBinMs(spanMs: number, stepMs = 100, columns = 80): number {
  return Math.max(stepMs, Math.ceil(spanMs / columns / stepMs) * stepMs);
}

/**
 * Samples a workload's writes over [0, untilMs) bin by bin. writes() is a pure
 * function of the interval (Workload's contract), so this sees exactly the
 * writes the simulator saw, without a hook in the simulator.
 */
export function heatFromWorkload(w: Workload, untilMs: number, binMs = heatBinMs(untilMs)): DirtyHeat {
  const acc = new HeatAccumulator(w.geometry.pageCount, binMs);
  const s = new PageSet(w.geometry.pageCount);
  for (let t = 0; t < untilMs; t += binMs) {
    s.clear();
    w.writes(t, Math.min(untilMs, t + binMs), s);
    acc.add(t, s);
  }
  return acc.toJSON();
}
