import type { Workload, WorkloadParams } from '../workload.ts';
import { ComposedWorkload } from './composed.ts';
import { guestLayout } from './layout.ts';
import { checkParams, resolveOptions, type OptionSpecs } from './options.ts';
import { OS_OPTIONS, osBackground } from './patterns.ts';

export const IDLE_OPTIONS = {
  ...OS_OPTIONS,
  nonZeroFraction: { default: 0.45, min: 0, max: 1, doc: 'fraction of the guest non-zero at start (booted OS, page cache)' },
} as const satisfies OptionSpecs;

/**
 * `idle`: a booted Linux guest doing nothing.
 *
 * Writes: a tickless kernel still wakes about 25 times a second (timers, RCU,
 * vmstat); each wakeup rewrites the timekeeping page and one of 8 per-CPU
 * pages, so a second touches 1 + 8·(1 − (7/8)^25) ≈ 9.8 distinct pages.
 * Daemons (journald, cron, dbus) wake 0.5 times a second and write 4
 * scattered slab pages each: 2 more pages/s.
 *
 * Dirty rate with defaults, 256 MiB guest: ≈ 11 distinct pages/s (≈ 45 kB/s; 10–12 over seeds),
 * documented range 5–25 pages/s (measured over 1 s windows).
 *
 * Non-zero at start: 45 % of the guest: the kernel (32 MiB, low memory) and
 * three regions of other memory (user space, page cache).
 */
export function createIdle(p: WorkloadParams): Workload {
  const g = checkParams('idle', p);
  const o = resolveOptions('idle', IDLE_OPTIONS, p.options);
  const layout = guestLayout(g.pageCount, g.pageSize, p.seed, [], o.nonZeroFraction);
  const os = osBackground({ seed: p.seed, stream: 1, kernel: layout.region('kernel'), ...o });
  return new ComposedWorkload('idle', g, layout.nonZero, [os], `idle guest: ${o.tickHz} kernel wakeups/s on a 9-page hot set, ${o.daemonWakeupsPerSec} daemon wakeups/s × ${o.daemonPagesPerWakeup} scattered pages`);
}
