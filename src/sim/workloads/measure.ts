import { PageSet } from '../../core/pageset.ts';
import type { Workload } from '../workload.ts';

export interface DirtyRate {
  /** Mean distinct pages written per window, scaled to one second. */
  readonly pagesPerSec: number;
  readonly bytesPerSec: number;
  /** Distinct pages over the whole duration. */
  readonly distinctPages: number;
  readonly windowMs: number;
  readonly durationMs: number;
}

/**
 * The dirty rate a migration sees: distinct pages per window (a page written
 * ten times in one window counts once), averaged over the run. With 1 s
 * windows this is the figure the generators document.
 */
export function measureDirtyRate(w: Workload, durationMs = 60_000, windowMs = 1000): DirtyRate {
  const n = w.geometry.pageCount;
  const win = new PageSet(n);
  const all = new PageSet(n);
  let sum = 0;
  let windows = 0;
  for (let t = 0; t < durationMs; t += windowMs) {
    win.clear();
    w.writes(t, Math.min(t + windowMs, durationMs), win);
    sum += win.count();
    all.unionWith(win);
    windows++;
  }
  const pagesPerSec = windows > 0 ? (sum / windows) * (1000 / windowMs) : 0;
  return { pagesPerSec, bytesPerSec: pagesPerSec * w.geometry.pageSize, distinctPages: all.count(), windowMs, durationMs };
}
