/**
 * The fault matrix: named cases, each one a real migration of a running guest
 * with one fault injected at a chosen moment, judged by what happens to the
 * guest afterwards (it runs exactly once, its memory checks out, nothing is
 * lost). `presync faults` prints it; docs/reliability.md is a run of it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { channel } from 'node:diagnostics_channel';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { formatTable } from './table.ts';
import { RAM_CASES } from './faults-ram.ts';
import { QEMU_CASES } from './faults-qemu.ts';

export type { FaultCase, FaultCaseContext, FaultCaseResult, FaultOutcome } from './fault-case.ts';
import type { FaultCase, FaultCaseResult } from './fault-case.ts';

export const FAULT_CASES: readonly FaultCase[] = [...RAM_CASES, ...QEMU_CASES];

export function faultCaseNames(): string[] {
  return FAULT_CASES.map((c) => c.name);
}

const events = channel('presync:faults:case');

export interface FaultMatrixOptions {
  readonly only?: readonly string[];
  readonly onCase?: (r: FaultCaseResult) => void;
}

/** Runs the cases one after another (they time faults against a real clock, so never in parallel). */
export async function runFaultMatrix(o: FaultMatrixOptions = {}): Promise<FaultCaseResult[]> {
  const names = faultCaseNames();
  for (const n of o.only ?? []) {
    if (!names.includes(n)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `unknown fault case "${n}"; known: ${names.join(', ')}`);
  }
  const cases = o.only && o.only.length > 0 ? FAULT_CASES.filter((c) => o.only!.includes(c.name)) : FAULT_CASES;
  const out: FaultCaseResult[] = [];
  for (const c of cases) {
    const r = await runFaultCase(c);
    out.push(r);
    if (events.hasSubscribers) events.publish(r);
    o.onCase?.(r);
  }
  return out;
}

export async function runFaultCase(c: FaultCase): Promise<FaultCaseResult> {
  const t0 = performance.now();
  const skip = c.skip?.();
  if (skip !== undefined) {
    return { name: c.name, inject: c.inject, outcome: 'skipped', guestRunning: false, memoryVerified: false, lostPages: 0, detail: skip, passed: false, ms: 0 };
  }
  const dir = mkdtempSync(join(tmpdir(), `presync-fault-${c.name}-`));
  try {
    const r = await c.run({ dir });
    const passed = (r.outcome === 'done' || r.outcome === 'rolled-back') && r.guestRunning && r.memoryVerified && r.lostPages === 0 && r.checks !== false;
    return { name: c.name, inject: c.inject, outcome: r.outcome, guestRunning: r.guestRunning, memoryVerified: r.memoryVerified, lostPages: r.lostPages, detail: r.detail, passed, ms: performance.now() - t0 };
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    return { name: c.name, inject: c.inject, outcome: 'failed', guestRunning: false, memoryVerified: false, lostPages: 0, detail: `case crashed: ${msg}`, passed: false, ms: performance.now() - t0 };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The matrix as a plain-text table (the same rows as docs/reliability.md). */
export function formatFaultTable(results: readonly FaultCaseResult[]): string {
  return formatTable(
    ['case', 'injected', 'outcome', 'guest running', 'memory verified', 'lost pages', 'pass', 'detail'],
    results.map((r) => [r.name, r.inject, r.outcome, r.guestRunning ? 'yes' : 'NO', r.memoryVerified ? 'yes' : 'NO', r.lostPages, r.passed ? 'ok' : 'FAIL', r.detail]),
  );
}

/** The matrix as a Markdown table, for docs/reliability.md. */
export function formatFaultMarkdown(results: readonly FaultCaseResult[]): string {
  const esc = (s: string) => s.replace(/\|/g, '\\|');
  const rows = results.map(
    (r) => `| \`${r.name}\` | ${esc(r.inject)} | ${r.outcome} | ${r.guestRunning ? 'yes' : 'no'} | ${r.memoryVerified ? 'yes' : 'no'} | ${r.lostPages} | ${r.passed ? 'pass' : '**FAIL**'} | ${esc(r.detail)} |`,
  );
  return ['| case | what is injected | outcome | guest running once | memory verified | lost pages | verdict | evidence |', '|---|---|---|---|---|---|---|---|', ...rows].join('\n');
}
