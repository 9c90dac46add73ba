import type { PageSet } from '../../core/pageset.ts';
import { addRingBytes, addWrapped, pageAt, type Region } from './layout.ts';
import type { OptionSpecs } from './options.ts';
import { forEachPoissonEvent, forEachTick, hashSeed, keyInt, slotFor, spreadRange } from './time.ts';

/**
 * Write patterns the generators are assembled from. Each returns a function
 * that adds the pages written in [fromMs, toMs) and keeps no state, so a
 * generator is the union of its patterns and stays a pure function of the
 * interval.
 */
export type WriteSource = (fromMs: number, toMs: number, into: PageSet) => void;

/**
 * A pool of `poolSize` buffers of `bufferPages` pages each, laid end to end in
 * `region`; buffer k mod poolSize is rewritten front to back over
 * [t_k, t_k + writeMs), t_k = phaseMs + k·periodMs. Video frames, display
 * buffers, autosave serialisation.
 */
export function periodicBuffers(o: {
  region: Region;
  periodMs: number;
  phaseMs: number;
  bufferPages: number;
  poolSize: number;
  writeMs: number;
}): WriteSource {
  const n = Math.max(1, Math.min(o.bufferPages, o.region.pages));
  return (fromMs, toMs, into) => {
    forEachTick(o.periodMs, o.phaseMs, fromMs - o.writeMs - o.periodMs, toMs, (k, t) => {
      const [i0, i1] = spreadRange(t, o.writeMs, n, fromMs, toMs);
      if (i1 > i0) addWrapped(into, o.region, (k % o.poolSize) * o.bufferPages + i0, i1 - i0);
    });
  };
}

/**
 * A byte stream written sequentially into a ring at `bytesPerSec`, in chunks
 * of `chunkBytes` (chunk k at phaseMs + k·chunk/rate). PCM rings, read-ahead
 * into page cache, bump allocators, append-only logs. With a ring as large as
 * the region and the run shorter than a lap, every page is written once.
 */
export function streamRing(o: {
  region: Region;
  pageSize: number;
  ringBytes: number;
  bytesPerSec: number;
  chunkBytes: number;
  phaseMs: number;
}): WriteSource {
  const chunk = Math.max(1, Math.round(o.chunkBytes));
  const periodMs = o.bytesPerSec > 0 ? (chunk / o.bytesPerSec) * 1000 : 0;
  return (fromMs, toMs, into) => {
    forEachTick(periodMs, o.phaseMs, fromMs, toMs, (k) => {
      addRingBytes(into, o.region, o.pageSize, o.ringBytes, k * chunk, chunk);
    });
  };
}

/**
 * Random writes: Poisson events at `ratePerSec`, each writing `pagesPerEvent`
 * consecutive pages at a uniformly random place in `region` (heap churn,
 * scattered kernel updates).
 */
export function poissonPages(o: { seed: number; stream: number; region: Region; ratePerSec: number; pagesPerEvent: number }): WriteSource {
  const proc = { seed: o.seed, stream: o.stream, ratePerSec: o.ratePerSec, slotMs: slotFor(o.ratePerSec) };
  const span = Math.max(1, o.region.pages);
  return (fromMs, toMs, into) => {
    forEachPoissonEvent(proc, fromMs, toMs, (_t, key) => {
      addWrapped(into, o.region, keyInt(key, 0, span), o.pagesPerEvent);
    });
  };
}

/** Knobs of the OS background that every application workload runs on. */
export const OS_OPTIONS = {
  tickHz: { default: 25, min: 0, max: 1000, doc: 'kernel wakeups per second (NO_HZ idle: timers, RCU, vmstat)' },
  daemonWakeupsPerSec: { default: 0.5, min: 0, max: 1000, doc: 'background daemon wakeups per second (journald, cron, dbus)' },
  daemonPagesPerWakeup: { default: 4, min: 0, max: 4096, integer: true, doc: 'scattered kernel/slab pages a daemon wakeup writes' },
} as const satisfies OptionSpecs;

/** Pages of the kernel region that the timer path rewrites (timekeeping + 8 per-CPU pages). */
export const KERNEL_HOT_PAGES = 9;

/**
 * An idle Linux guest's background: a tickless kernel still wakes ~25 times a
 * second, each wakeup rewriting the timekeeping page and one of 8 per-CPU
 * pages (run queue, RCU, softirq and vmstat counters); daemons wake a few
 * every 2 s or so and touch scattered slab pages. About 11 distinct pages/s
 * with the defaults.
 */
export function osBackground(o: { seed: number; stream: number; kernel: Region; tickHz: number; daemonWakeupsPerSec: number; daemonPagesPerWakeup: number }): WriteSource {
  const periodMs = o.tickHz > 0 ? 1000 / o.tickHz : 0;
  const phaseMs = periodMs * (hashSeed(o.seed, o.stream, 0) / 4294967296);
  const hot = Math.min(KERNEL_HOT_PAGES, o.kernel.pages);
  const daemons: WriteSource = (fromMs, toMs, into) => {
    const proc = { seed: o.seed, stream: o.stream + 1, ratePerSec: o.daemonWakeupsPerSec, slotMs: slotFor(o.daemonWakeupsPerSec) };
    forEachPoissonEvent(proc, fromMs, toMs, (_t, key) => {
      for (let i = 0; i < o.daemonPagesPerWakeup; i++) into.add(pageAt(o.kernel, keyInt(key, i, o.kernel.pages)));
    });
  };
  return (fromMs, toMs, into) => {
    forEachTick(periodMs, phaseMs, fromMs, toMs, (k) => {
      into.add(o.kernel.start);
      if (hot > 1) into.add(o.kernel.start + 1 + (hashSeed(o.seed, o.stream + 2, k) % (hot - 1)));
    });
    daemons(fromMs, toMs, into);
  };
}
