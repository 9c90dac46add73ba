import { DEFAULT_SCENARIO, runScenario } from './scenario.ts';

export const DEMO_WORKLOADS = ['text-editing', 'audio', 'movie'] as const;

export interface DemoRow {
  readonly workload: string;
  readonly policy: string;
  readonly launchToRunningMs: number | null;
  readonly downtimeMs: number | null;
  readonly presyncBytes: number;
  readonly finalBytes: number;
  readonly residualPagesAtLaunch: number;
  readonly verified: boolean;
}

export interface DemoOptions {
  readonly workloads: readonly string[];
  readonly policies: readonly string[];
  readonly seed: number;
  readonly launchAtMs?: number;
}

const round1 = (n: number | null): number | null => (n === null ? null : Math.round(n * 10) / 10);

/** The embedded default demo: every workload × policy on DEFAULT_SCENARIO. */
export function runDemo(o: DemoOptions): DemoRow[] {
  const rows: DemoRow[] = [];
  for (const workload of o.workloads) {
    for (const policy of o.policies) {
      const r = runScenario({ ...DEFAULT_SCENARIO, workload, policy, seed: o.seed, launchAtMs: o.launchAtMs ?? DEFAULT_SCENARIO.launchAtMs, keepSeries: false });
      rows.push({
        workload,
        policy,
        launchToRunningMs: round1(r.launchToRunningMs),
        downtimeMs: round1(r.downtimeMs),
        presyncBytes: Math.round(r.presyncBytes),
        finalBytes: Math.round(r.finalBytes),
        residualPagesAtLaunch: r.residualPagesAtLaunch,
        verified: r.verified,
      });
    }
  }
  return rows;
}
