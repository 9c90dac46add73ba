/**
 * The simulator as a library: one migration of a synthetic workload over a
 * modelled link, deterministic for a given seed (what `presync demo` runs).
 */
import { runScenario, DEFAULT_SCENARIO } from '../lab/scenario.ts';
import type { SimResult } from '../sim/simulator.ts';
import { canonicalWorkload } from './workload-names.ts';
import { toBytesPerSec, toMs, type Duration, type Rate } from './options.ts';

export type { SimResult } from '../sim/simulator.ts';

export interface SimulateOptions {
  /** `text`, `audio`, `movie` (the paper's), `idle`, `uniform`, `hotspot`. Default `text`. */
  readonly workload?: string;
  /** Policy name, default `presync`. */
  readonly policy?: string;
  readonly seed?: number;
  /** Guest RAM, MiB (default 256). */
  readonly memoryMiB?: number;
  /** Link bandwidth (default 1 Gbit/s). */
  readonly bandwidth?: Rate;
  /** Round-trip time (default 1 ms). */
  readonly rtt?: Duration;
  /** Launch after this much presync (default 30 s). */
  readonly launchAfter?: Duration;
  readonly epoch?: Duration;
  readonly downtimeLimit?: Duration;
}

/** Runs one simulated migration; synchronous and deterministic. */
export function simulate(o: SimulateOptions = {}): SimResult {
  const pageSize = DEFAULT_SCENARIO.geometry.pageSize;
  return runScenario({
    workload: canonicalWorkload(o.workload ?? 'text'),
    policy: o.policy ?? 'presync',
    seed: o.seed ?? 1,
    geometry: { pageSize, pageCount: o.memoryMiB !== undefined ? Math.max(1, Math.round((o.memoryMiB * 2 ** 20) / pageSize)) : DEFAULT_SCENARIO.geometry.pageCount },
    link: {
      bandwidthBytesPerSec: o.bandwidth !== undefined ? toBytesPerSec(o.bandwidth, 'bandwidth') : DEFAULT_SCENARIO.link.bandwidthBytesPerSec,
      rttMs: o.rtt !== undefined ? toMs(o.rtt, 'rtt') : DEFAULT_SCENARIO.link.rttMs,
    },
    launchAtMs: o.launchAfter !== undefined ? toMs(o.launchAfter, 'launchAfter') : DEFAULT_SCENARIO.launchAtMs,
    epochMs: o.epoch !== undefined ? toMs(o.epoch, 'epoch') : DEFAULT_SCENARIO.epochMs,
    ...(o.downtimeLimit !== undefined ? { policyOptions: { downtimeLimitMs: toMs(o.downtimeLimit, 'downtimeLimit') } } : {}),
    keepSeries: false,
  });
}
