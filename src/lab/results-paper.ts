import type { Workload } from '../sim/workload.ts';
import type { FrontierRow, PaperResult } from './paper.ts';
import { makeResults, type ResultRun, type ResultsFile, type TableRow } from '../engine/results-file.ts';
import { simulateForResults } from './results-build.ts';
import { DEFAULT_SCENARIO } from './scenario.ts';

export interface PaperResultsOptions {
  readonly createdBy: string;
  readonly workloads: readonly string[];
  readonly policies: readonly string[];
  readonly seeds: number;
  readonly launchMs: readonly number[];
  readonly workloadOf?: (name: string) => Workload | undefined;
  readonly frontier?: readonly FrontierRow[];
  /** Called after each representative run (progress). */
  readonly onRun?: (done: number, total: number) => void;
}

/**
 * The paper's table as a results file. The table holds the aggregated rows
 * (medians over seeds × launch moments, `section: "table"`, plus the
 * competing-flow and frontier rows under their own section); the runs are one
 * representative run per workload × policy (seed 1, the first launch moment)
 * with its full series and heatmap, for the report's charts. Keeping every
 * run's series would make a full bench file hundreds of megabytes.
 */
export function paperResults(res: PaperResult, o: PaperResultsOptions): ResultsFile {
  const table: TableRow[] = [
    ...res.rows.map((r) => ({ section: 'table', ...r })),
    ...res.competing.map((c) => ({ section: 'competing', ...c })),
    ...(o.frontier ?? []).map((f) => ({ section: 'frontier', ...f })),
    ...(res.bounds ?? []).map((b) => ({ section: 'bound', ...b })),
  ].map(finiteRow);
  const launchAtMs = o.launchMs[0] ?? DEFAULT_SCENARIO.launchAtMs;
  const runs: ResultRun[] = [];
  const total = o.workloads.length * o.policies.length;
  for (const w of o.workloads) {
    const workload = o.workloadOf?.(w) ?? w;
    const geometry = typeof workload === 'string' ? DEFAULT_SCENARIO.geometry : workload.geometry;
    for (const policy of o.policies) {
      const run = simulateForResults({ ...DEFAULT_SCENARIO, geometry, workload, policy, seed: 1, launchAtMs });
      runs.push({ ...run, workload: w, label: `${w} · ${policy}` });
      o.onRun?.(runs.length, total);
    }
  }
  return makeResults({
    kind: 'paper',
    createdBy: o.createdBy,
    params: { workloads: o.workloads, policies: o.policies, seeds: o.seeds, launchMs: o.launchMs, geometry: DEFAULT_SCENARIO.geometry, link: DEFAULT_SCENARIO.link, representativeRun: { seed: 1, launchAtMs } },
    runs,
    table,
  });
}

/** JSON has no Infinity: a table cell that is not finite is written as null. */
function finiteRow(r: Record<string, string | number | boolean | null>): TableRow {
  const out: TableRow = {};
  for (const [k, v] of Object.entries(r)) out[k] = typeof v === 'number' && !Number.isFinite(v) ? null : v;
  return out;
}
