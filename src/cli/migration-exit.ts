/**
 * What the source commands (`migrate`, `qemu migrate`) share about ending:
 * the exit status a result maps to, and SIGINT/SIGTERM turned into a
 * rollback instead of a process that dies with its guest stopped.
 */
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import type { MigrationResult } from '../engine/source-session.ts';

/** What a signal needs of a migration: the engine's SourceMigration or the library's Migration. */
export interface Abortable {
  abort(reason: string): void;
}

/** The agreed exit statuses (README): what a script needs to know about where the guest runs. */
export const ExitCodes = {
  DONE: 0,
  ERROR: 1,
  USAGE: 2,
  ROLLED_BACK: 3,
  IN_DOUBT: 4,
} as const;

/**
 * done 0; rolled back 3 (the guest runs on the source, nothing on the
 * target); in doubt 4. A guest that exited by itself runs nowhere to roll
 * back to: that is an error (1).
 */
export function migrationExitCode(r: MigrationResult): number {
  if (r.outcome === 'done') return ExitCodes.DONE;
  if (r.outcome === 'in-doubt') return ExitCodes.IN_DOUBT;
  if (r.error?.code === ErrorCodes.GUEST_GONE) return ExitCodes.ERROR;
  return ExitCodes.ROLLED_BACK;
}

export interface SignalRollbackOptions {
  /** One line to the operator (stderr). */
  readonly note: (text: string) => void;
  /** Last resort after a second signal: resume the guest without the engine. Never called once the handover began. */
  readonly resumeGuest: () => Promise<void>;
  /** True once the last step towards HANDOVER began (the lock says committed): nothing may resume the guest then. */
  readonly handoverBegan: () => boolean;
  /** Bytes sent so far, for a result made without the engine. */
  readonly bytes?: () => { presyncBytes: number; finalBytes: number };
  /** How long after the second signal the engine gets before the last resort, ms. Default 3000. */
  readonly graceMs?: number;
}

export interface SignalRollback {
  /** Resolves only if the engine did not finish in time after a second signal: a result made without it. */
  readonly forced: Promise<MigrationResult>;
  dispose(): void;
}

/**
 * SIGINT/SIGTERM abort the migration (SourceMigration.abort: resume, tell the
 * target, end `rolled-back`). A second signal is reported and honoured: if the
 * engine has not finished `graceMs` later, the guest is resumed here (unless
 * the handover began: then it stays paused and the result is in doubt) and a
 * result is made without the engine.
 */
export function rollbackOnSignals(m: Abortable, o: SignalRollbackOptions): SignalRollback {
  let count = 0;
  let timer: NodeJS.Timeout | undefined;
  let settle!: (r: MigrationResult) => void;
  const forced = new Promise<MigrationResult>((r) => (settle = r));
  const onSignal = (sig: NodeJS.Signals): void => {
    count++;
    if (count === 1) {
      o.note(`${sig}: rolling back (the guest is resumed on the source, the target told to drop its copy)`);
      m.abort(`${sig} received: the operator stopped the migration`);
      return;
    }
    if (timer) {
      o.note(`${sig} again: still rolling back; the guest is never left paused`);
      return;
    }
    o.note(`${sig} again: rollback under way; finishing it now (the guest is never left paused)`);
    timer = setTimeout(() => void lastResort(), o.graceMs ?? 3000);
    timer.unref();
  };
  const lastResort = async (): Promise<void> => {
    const st = o.bytes?.() ?? { presyncBytes: 0, finalBytes: 0 };
    if (o.handoverBegan()) {
      settle(made('in-doubt', new PresyncError(ErrorCodes.HANDOVER_IN_DOUBT, 'stopped by a second signal after the handover began; the guest stays paused on the source: check the target, then resume the source only if the guest does not run there'), st));
      return;
    }
    await o.resumeGuest().catch(() => undefined);
    settle(made('rolled-back', new PresyncError(ErrorCodes.ABORTED, 'stopped by a second signal: the guest was resumed on the source'), st));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    forced,
    dispose: () => {
      clearTimeout(timer);
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      // The result is out and the process is about to exit: a late signal must not turn its status into 130.
      const late = (sig: NodeJS.Signals): void => o.note(`${sig}: the migration has already ended`);
      process.once('SIGINT', late);
      process.once('SIGTERM', late);
    },
  };
}

function made(outcome: 'rolled-back' | 'in-doubt', err: PresyncError, st: { presyncBytes: number; finalBytes: number }): MigrationResult {
  return {
    outcome,
    error: { code: err.code, message: err.message },
    launchToRunningMs: null,
    downtimeMs: null,
    presyncBytes: st.presyncBytes,
    finalBytes: st.finalBytes,
    residualPagesAtLaunch: 0,
    wastedPages: 0,
    resentPages: 0,
    guestSlowdown: 0,
    verified: false,
    converged: false,
    liveRounds: 0,
    series: [],
  };
}
