import type { ResultRun } from '../../engine/results-file.ts';

/**
 * How a run ended, as the report shows it wherever the run is listed. A
 * migration that completed but whose guest failed its check afterwards (the
 * QEMU bench's `guestOk: false`, e.g. a guest that panicked on the target)
 * is a failure, not "done".
 */
export interface RunStatus {
  readonly ok: boolean;
  /** Short: "done", "guest check failed", "rolled back", "in doubt". */
  readonly text: string;
  /** Why, when known: the error or the guest check's finding. */
  readonly detail: string | null;
}

const str = (v: unknown): string | null => (typeof v === 'string' && v.length > 0 ? v : null);

export function runStatus(run: ResultRun): RunStatus {
  const s = run.summary;
  if (s.outcome !== 'done') {
    return { ok: false, text: s.outcome === 'rolled-back' ? 'rolled back' : 'in doubt', detail: s.error ? `${s.error.code}: ${s.error.message}` : null };
  }
  if (s.guestOk === false) return { ok: false, text: 'guest check failed', detail: str(s.guestCheck) };
  return { ok: true, text: 'done', detail: null };
}

/** The guest check column: "ok", "failed", or null when the run had none (simulated runs). */
export function guestCheckOf(run: ResultRun): { ok: boolean; text: string } | null {
  const g = run.summary.guestOk;
  if (typeof g !== 'boolean') return null;
  return g ? { ok: true, text: 'ok' } : { ok: false, text: `failed: ${str(run.summary.guestCheck) ?? 'no reason recorded'}` };
}

/** Stock QEMU (and the simulated pre-copy) cannot verify the target's memory: "verified" does not apply. */
export function isStock(run: ResultRun): boolean {
  return run.policy === 'qemu-stock' || run.policy === 'stock' || (run.shell === 'real' && run.policy === 'precopy');
}
