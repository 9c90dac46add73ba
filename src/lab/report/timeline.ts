import type { ResultRun } from '../../engine/results-file.ts';
import type { RunRef } from './data.ts';
import { isStock, runStatus, type RunStatus } from './status.ts';

/**
 * One migration's timeline: presync before the launch, then the phases from
 * the launch until the guest runs on the target, with the pause (guest
 * stopped) marked. Pure: from what the results file carries, best source
 * first (older files carry less and still get a timeline):
 *  1. the QEMU bench's breakdown (`finalScanAndResidualMs`, `verifyMs`, …);
 *  2. `phaseAtMs`, when each engine phase began (`qemu migrate --out`, `migrate --out`);
 *  3. launch→running and downtime alone (simulated runs, stock QEMU).
 */
export interface TimelineSegment {
  readonly phase: string;
  /** ms after the launch. */
  readonly fromMs: number;
  readonly toMs: number;
}

export interface Timeline {
  /** The row's label, unique in the report. */
  readonly row: string;
  readonly series: string;
  readonly workload: string;
  /** How long presync ran before the launch (s); null when the run had none (stock QEMU). */
  readonly presyncS: number | null;
  readonly launchToRunningMs: number | null;
  readonly downtimeMs: number | null;
  /** The measured pause, ms after the launch: [launch→running − downtime, launch→running]. */
  readonly pause: { readonly fromMs: number; readonly toMs: number } | null;
  readonly segments: readonly TimelineSegment[];
  readonly status: RunStatus;
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const rec = (v: unknown): Record<string, unknown> => (v !== null && typeof v === 'object' ? (v as Record<string, unknown>) : {});

/** The QEMU bench's switchover breakdown, in the order the steps happen. */
const BREAKDOWN: ReadonlyArray<readonly [string, string]> = [
  ['launchWaitMs', 'wait for the epoch'],
  ['liveRoundsMs', 'live rounds'],
  ['migrateToPreSwitchoverMs', 'QEMU stops the vCPUs'],
  ['finalScanAndResidualMs', 'final scan & residual'],
  ['verifyMs', 'verify'],
  ['deviceStateMs', 'device state'],
  ['targetStartConfirmMs', 'target start'],
];

function sequential(parts: ReadonlyArray<readonly [string, number | null]>, startMs = 0): TimelineSegment[] {
  const out: TimelineSegment[] = [];
  let t = startMs;
  for (const [phase, ms] of parts) {
    if (ms === null || !(ms > 0)) continue;
    out.push({ phase, fromMs: t, toMs: t + ms });
    t += ms;
  }
  return out;
}

function fromBreakdown(s: Record<string, unknown>): TimelineSegment[] | null {
  if (num(s.finalScanAndResidualMs) === null && num(s.verifyMs) === null) return null;
  return sequential(BREAKDOWN.map(([k, phase]) => [phase, num(s[k])] as const));
}

/** The segment that starts at each engine phase. */
const MARK_PHASE: Readonly<Record<string, string>> = {
  launched: 'live rounds',
  'final-copy': 'final scan & residual',
  verify: 'verify',
  handover: 'target start',
  rollback: 'rollback',
};

function fromPhaseMarks(s: Record<string, unknown>): TimelineSegment[] | null {
  const at = rec(s.phaseAtMs);
  const launched = num(at.launched);
  if (launched === null) return null;
  const marks = Object.entries(at)
    .map(([k, v]) => [k, num(v)] as const)
    .filter((m): m is readonly [string, number] => m[1] !== null && (m[0] in MARK_PHASE || m[0] === 'done'))
    .sort((a, b) => a[1] - b[1]);
  const l2r = num(s.launchToRunningMs);
  const done = num(at.done);
  // The launch request waits for the running epoch to end before the engine's phase changes.
  const wait = l2r !== null && done !== null ? Math.max(0, l2r - (done - launched)) : 0;
  const qemu = rec(s.qemu);
  const toPre = num(qemu.migrateToPreSwitchoverMs);
  const device = num(qemu.continueToCompletedMs);
  const out: TimelineSegment[] = wait > 0 ? [{ phase: 'wait for the epoch', fromMs: 0, toMs: wait }] : [];
  for (let i = 0; i + 1 < marks.length; i++) {
    const [k, t] = marks[i];
    if (!(k in MARK_PHASE)) continue;
    const fromMs = wait + t - launched;
    const toMs = wait + marks[i + 1][1] - launched;
    // QEMU's own step times split the engine's phases where they apply.
    if (k === 'final-copy' && toPre !== null && toPre < toMs - fromMs) {
      out.push({ phase: 'QEMU stops the vCPUs', fromMs, toMs: fromMs + toPre }, { phase: 'final scan & residual', fromMs: fromMs + toPre, toMs });
    } else if (k === 'verify' && device !== null && device < toMs - fromMs) {
      out.push({ phase: 'verify', fromMs, toMs: toMs - device }, { phase: 'device state', fromMs: toMs - device, toMs });
    } else if (toMs > fromMs) {
      out.push({ phase: MARK_PHASE[k], fromMs, toMs });
    }
  }
  return out;
}

function fromTotals(run: ResultRun): TimelineSegment[] {
  const l2r = num(run.summary.launchToRunningMs);
  if (l2r === null) return [];
  const down = Math.min(l2r, num(run.summary.downtimeMs) ?? 0);
  return isStock(run)
    ? sequential([['pre-copy rounds', l2r - down], ['stop & copy', down]])
    : sequential([['live rounds', l2r - down], ['pause: final copy → running', down]]);
}

export function segmentsOf(run: ResultRun): TimelineSegment[] {
  const s = run.summary as Record<string, unknown>;
  return fromBreakdown(s) ?? fromPhaseMarks(s) ?? fromTotals(run);
}

/** Seconds of presync before the launch, from the best field the file has. */
export function presyncSecondsOf(run: ResultRun, params: Readonly<Record<string, unknown>>): number | null {
  if (isStock(run)) return null;
  if (num(run.launchAtMs) !== null) return (run.launchAtMs as number) / 1000;
  const at = rec(run.summary.phaseAtMs);
  const launched = num(at.launched);
  if (launched !== null) return (launched - (num(at.presync) ?? 0)) / 1000;
  const forMs = num(params.presyncForMs);
  if (forMs !== null) return forMs / 1000;
  const last = run.series.filter((p) => p.phase === 'presync').at(-1);
  return last ? last.tMs / 1000 : null;
}

export function timelineOf(ref: RunRef, params: Readonly<Record<string, unknown>> = {}, row = ref.run.label): Timeline {
  const run = ref.run;
  const l2r = num(run.summary.launchToRunningMs);
  const down = num(run.summary.downtimeMs);
  return {
    row,
    series: ref.series,
    workload: run.workload,
    presyncS: presyncSecondsOf(run, params),
    launchToRunningMs: l2r,
    downtimeMs: down,
    pause: l2r !== null && down !== null ? { fromMs: Math.max(0, l2r - down), toMs: l2r } : null,
    segments: segmentsOf(run),
    status: runStatus(run),
  };
}

/** A timeline for every run, labels made unique ("label [2]" for a repeat). */
export function timelines(runs: readonly RunRef[]): Timeline[] {
  const seen = new Map<string, number>();
  return runs.map((r) => {
    const n = (seen.get(r.run.label) ?? 0) + 1;
    seen.set(r.run.label, n);
    return timelineOf(r, r.params, n === 1 ? r.run.label : `${r.run.label} [${n}]`);
  });
}
