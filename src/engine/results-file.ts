import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { z } from 'zod';
import type { MigrationMetrics, SeriesPoint } from '../core/accounting.ts';
import { ErrorCodes, PresyncError, describeJsonError } from '../core/errors.ts';

/**
 * Results files, `presync-results/1`: what every bench and migration writes
 * with `--out FILE` and what `presync report` reads. One JSON object:
 *
 * ```
 * { "format": "presync-results/1",
 *   "kind": "sim" | "migration" | "paper" | "qemu-bench",
 *   "createdBy": "presync bench paper --quick",      // the command, free text
 *   "createdAt": "2025-01-01T00:00:00.000Z",         // optional, ISO 8601
 *   "params": { ... },                               // the run's knobs, free form
 *   "runs": [ { "label", "workload", "policy", "seed", "shell": "sim" | "real",
 *               "launchAtMs"?,                       // ms from the run's start; else the first "launched" point
 *               "summary": { DESIGN.md metrics },
 *               "series": [ SeriesPoint, ... ],      // per epoch / live round (src/core/accounting.ts)
 *               "dirtyHeat"?: { "regionPages", "binMs", "counts": [[...per region] per time bin] } } ],
 *   "table"?: [ { column: string | number | boolean | null, ... } ] }  // aggregated rows (e.g. the paper's table)
 * ```
 *
 * Summary: `outcome`, `launchToRunningMs`, `downtimeMs`, `presyncBytes`,
 * `finalBytes` and `verified` are required; the other DESIGN.md metrics are
 * optional because a stock QEMU migration cannot know them (a policy named
 * `qemu-stock` or `precopy` in a `qemu-bench` file is the stock baseline).
 * Extra summary fields are kept. Non-finite numbers are written as null
 * (that is what JSON.stringify does), so every number field admits null
 * where a run may lack it.
 */
export const RESULTS_FORMAT = 'presync-results/1';

const num = z.number();
const optNum = z.number().nullable().optional();

export const SeriesPointSchema = z.object({
  tMs: num,
  phase: z.enum(['presync', 'launched']),
  sentBytes: num,
  sentPages: num,
  deliveredBytes: num,
  budgetBytes: num,
  dirtyPages: num,
  stalePages: num,
  rttMs: num.nullable(),
  throughputBytesPerSec: num.nullable(),
  diag: z.record(z.string(), num.nullable()).optional(),
});

export const SummarySchema = z.looseObject({
  outcome: z.enum(['done', 'rolled-back', 'in-doubt']),
  error: z.object({ code: z.string(), message: z.string() }).nullable().optional(),
  launchToRunningMs: num.nullable(),
  downtimeMs: num.nullable(),
  presyncBytes: num,
  finalBytes: num,
  residualPagesAtLaunch: optNum,
  wastedPages: optNum,
  resentPages: optNum,
  guestSlowdown: optNum,
  verified: z.boolean(),
  converged: z.boolean().optional(),
  liveRounds: optNum,
});

/** Pages written per region (rows: time bins of binMs from t=0; columns: regions of regionPages pages). */
export const DirtyHeatSchema = z.object({
  regionPages: z.number().int().positive(),
  binMs: z.number().positive(),
  pageCount: z.number().int().positive(),
  counts: z.array(z.array(z.number().int().nonnegative())),
});

export const RunSchema = z.object({
  label: z.string(),
  workload: z.string(),
  policy: z.string(),
  seed: z.number().nullable(),
  shell: z.enum(['sim', 'real']),
  launchAtMs: optNum,
  summary: SummarySchema,
  series: z.array(SeriesPointSchema),
  dirtyHeat: DirtyHeatSchema.optional(),
});

const Cell = z.union([z.string(), z.number(), z.boolean(), z.null()]);

export const ResultsSchema = z.object({
  format: z.literal(RESULTS_FORMAT),
  kind: z.enum(['sim', 'migration', 'paper', 'qemu-bench']),
  createdBy: z.string(),
  createdAt: z.string().optional(),
  params: z.record(z.string(), z.unknown()),
  runs: z.array(RunSchema),
  table: z.array(z.record(z.string(), Cell)).optional(),
});

export type ResultsFile = z.infer<typeof ResultsSchema>;
export type ResultRun = z.infer<typeof RunSchema>;
export type RunSummary = z.infer<typeof SummarySchema>;
export type DirtyHeat = z.infer<typeof DirtyHeatSchema>;
export type ResultsKind = ResultsFile['kind'];
export type TableRow = NonNullable<ResultsFile['table']>[number];

/** `runs[2].summary.presyncBytes`: the path of a bad field as a reader would write it. */
function fieldPath(path: readonly PropertyKey[]): string {
  let s = '';
  for (const k of path) s += typeof k === 'number' ? `[${k}]` : s === '' ? String(k) : `.${String(k)}`;
  return s === '' ? '(top level)' : s;
}

/** Validates a parsed results object; `source` names it in errors (usually the file path). */
export function parseResults(value: unknown, source: string): ResultsFile {
  const r = ResultsSchema.safeParse(value);
  if (r.success) return r.data;
  const issues = r.error.issues;
  const first = issues[0];
  const more = issues.length > 1 ? ` (and ${issues.length - 1} more problem${issues.length > 2 ? 's' : ''})` : '';
  const hint = first.path.length === 1 && first.path[0] === 'format' ? `; expected a ${RESULTS_FORMAT} file as written by --out` : '';
  throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `${source}: field ${fieldPath(first.path)}: ${first.message}${hint}${more}`);
}

export function readResults(path: string): ResultsFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `cannot read results file ${path}: ${(e as Error).message}`, { cause: e });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `${path}: ${describeJsonError(e)}; expected a ${RESULTS_FORMAT} file as written by --out`, { cause: e });
  }
  return parseResults(value, path);
}

/**
 * Validates and writes a results file (via a temporary file and rename, so a
 * reader never sees half a file). Validating on write catches a writer's bug
 * where it happens instead of in someone's report.
 */
export function writeResults(path: string, results: ResultsFile): void {
  // Round-trip through JSON first: non-finite numbers become null as readers will see them.
  const plain: unknown = JSON.parse(JSON.stringify(results));
  parseResults(plain, `results for ${path}`);
  try {
    mkdirSync(dirname(path), { recursive: true });
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(plain) + '\n');
    renameSync(tmp, path);
  } catch (e) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `cannot write results file ${path}: ${(e as Error).message}`, { cause: e });
  }
}

/** A results object with the format and creation time filled in. */
export function makeResults(o: { kind: ResultsKind; createdBy: string; params?: Record<string, unknown>; runs: ResultRun[]; table?: TableRow[] }): ResultsFile {
  return {
    format: RESULTS_FORMAT,
    kind: o.kind,
    createdBy: o.createdBy,
    createdAt: new Date().toISOString(),
    params: o.params ?? {},
    runs: o.runs,
    ...(o.table ? { table: o.table } : {}),
  };
}

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
