import { createPolicy, needsFuture } from '../core/policies/registry.ts';
import type { PolicyOptions } from '../core/policies/options.ts';
import { PageSet } from '../core/pageset.ts';
import type { FutureKnowledge, Geometry } from '../core/types.ts';
import type { LinkConfig } from '../sim/network.ts';
import { simulate, type SimResult } from '../sim/simulator.ts';
import type { Workload } from '../sim/workload.ts';
import { createWorkload } from '../sim/workloads/index.ts';

/** One simulated migration, fully described: the same scenario gives the same result. */
export interface Scenario {
  readonly workload: string | Workload;
  readonly policy: string;
  readonly seed: number;
  readonly geometry: Geometry;
  readonly link: LinkConfig;
  readonly launchAtMs: number;
  readonly epochMs?: number;
  readonly policyOptions?: PolicyOptions;
  readonly workloadOptions?: Readonly<Record<string, number>>;
  readonly keepSeries?: boolean;
}

export const GiB = 1024 ** 3;
export const MiB = 1024 ** 2;

/** The demo's embedded default: 256 MiB guest, 1 Gbit/s, 1 ms RTT, 30 s of presync. */
export const DEFAULT_SCENARIO = {
  geometry: { pageSize: 4096, pageCount: (256 * MiB) / 4096 },
  link: { bandwidthBytesPerSec: 1e9 / 8, rttMs: 1 },
  launchAtMs: 30_000,
  epochMs: 100,
} as const;

function futureOf(w: Workload, launchAtMs: number): FutureKnowledge {
  return {
    launchAtMs,
    writes(fromMs: number, toMs: number) {
      const s = new PageSet(w.geometry.pageCount);
      w.writes(fromMs, toMs, s);
      return s;
    },
  };
}

export function runScenario(s: Scenario): SimResult {
  const workload =
    typeof s.workload === 'string'
      ? createWorkload(s.workload, { geometry: s.geometry, seed: s.seed, ...(s.workloadOptions ? { options: s.workloadOptions } : {}) })
      : s.workload;
  const ctx = needsFuture(s.policy)
    ? { geometry: s.geometry, seed: s.seed, future: futureOf(workload, s.launchAtMs) }
    : { geometry: s.geometry, seed: s.seed };
  const policy = createPolicy(s.policy, ctx, s.policyOptions ?? {});
  return simulate({
    workload,
    policy,
    link: s.link,
    launchAtMs: s.launchAtMs,
    ...(s.epochMs !== undefined ? { epochMs: s.epochMs } : {}),
    ...(s.keepSeries !== undefined ? { keepSeries: s.keepSeries } : {}),
  });
}
