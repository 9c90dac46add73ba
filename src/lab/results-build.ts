import type { MigrationMetrics, SeriesPoint } from '../core/accounting.ts';
import type { SimResult } from '../sim/simulator.ts';
import type { Workload } from '../sim/workload.ts';
import { createWorkload } from '../sim/workloads/index.ts';
import type { DirtyHeat, ResultRun, RunSummary } from './results.ts';
import { heatFromWorkload } from './results-heat.ts';
import { runScenario, type Scenario } from './scenario.ts';

/** The DESIGN.md metrics of a run, in the results file's summary shape. */
export function summaryOf(m: MigrationMetrics): RunSummary {
  return {
    outcome: m.outcome,
    error: m.error,
    launchToRunningMs: m.launchToRunningMs,
    downtimeMs: m.downtimeMs,
    presyncBytes: m.presyncBytes,
    finalBytes: m.finalBytes,
    residualPagesAtLaunch: m.residualPagesAtLaunch,
    wastedPages: m.wastedPages,
    resentPages: m.resentPages,
    guestSlowdown: m.guestSlowdown,
    verified: m.verified,
    converged: m.converged,
    liveRounds: m.liveRounds,
  };
}

function seriesOf(points: readonly SeriesPoint[]): ResultRun['series'] {
  return points.map((p) => ({ ...p, ...(p.diag ? { diag: { ...p.diag } } : {}) }));
}

export interface RunMeta {
  readonly label?: string;
  readonly workload: string;
  readonly policy: string;
  readonly seed: number | null;
  readonly launchAtMs?: number | null;
  readonly dirtyHeat?: DirtyHeat;
}

/** One run of any shell: metrics and series as the shells return them. */
export function runRecord(shell: 'sim' | 'real', r: MigrationMetrics & { readonly series: readonly SeriesPoint[] }, m: RunMeta): ResultRun {
  return {
    label: m.label ?? `${m.workload} · ${m.policy}`,
    workload: m.workload,
    policy: m.policy,
    seed: m.seed,
    shell,
    ...(m.launchAtMs !== undefined ? { launchAtMs: m.launchAtMs } : {}),
    summary: summaryOf(r),
    series: seriesOf(r.series),
    ...(m.dirtyHeat ? { dirtyHeat: m.dirtyHeat } : {}),
  };
}

export function simRun(r: SimResult, m: Omit<RunMeta, 'workload' | 'policy'> & { workload?: string; policy?: string }): ResultRun {
  return runRecord('sim', r, { ...m, workload: m.workload ?? r.workload, policy: m.policy ?? r.policy });
}

/**
 * Runs a scenario with its series kept and records it, heatmap included
 * (sampled from the same workload over the presync window).
 */
export function simulateForResults(s: Scenario, label?: string): ResultRun {
  const workload: Workload =
    typeof s.workload === 'string'
      ? createWorkload(s.workload, { geometry: s.geometry, seed: s.seed, ...(s.workloadOptions ? { options: s.workloadOptions } : {}) })
      : s.workload;
  const r = runScenario({ ...s, workload, keepSeries: true });
  return simRun(r, {
    ...(label !== undefined ? { label } : {}),
    workload: typeof s.workload === 'string' ? s.workload : workload.name,
    seed: s.seed,
    launchAtMs: s.launchAtMs,
    dirtyHeat: heatFromWorkload(workload, s.launchAtMs),
  });
}
