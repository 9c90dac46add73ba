import type { SimResult } from '../sim/simulator.ts';
import type { Workload } from '../sim/workload.ts';
import { createWorkload } from '../sim/workloads/index.ts';
import { runRecord, type ResultRun, type RunMeta } from '../engine/results-file.ts';
import { heatFromWorkload } from './results-heat.ts';
import { runScenario, type Scenario } from './scenario.ts';

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
