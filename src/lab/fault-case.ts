/** What a fault case is and what it reports (src/lab/faults.ts runs them; faults-ram.ts and faults-qemu.ts define them). */

export type FaultOutcome = 'done' | 'rolled-back' | 'in-doubt' | 'failed' | 'skipped';

export interface FaultCaseResult {
  readonly name: string;
  /** What was injected, and when. */
  readonly inject: string;
  readonly outcome: FaultOutcome;
  /** The guest runs exactly once: on the source after a rollback, on the target after done. */
  readonly guestRunning: boolean;
  /** The guest's own consistency check passes, and the image moved (if it did) equals the source's last state. */
  readonly memoryVerified: boolean;
  /** Pages that differ from what the guest last wrote (must be 0). */
  readonly lostPages: number;
  /** The error the migration ended with, the fault's own evidence, or why the case failed. */
  readonly detail: string;
  readonly passed: boolean;
  readonly ms: number;
}

export interface FaultCaseContext {
  /** A fresh directory for this case, removed afterwards. */
  readonly dir: string;
}

export interface FaultCase {
  readonly name: string;
  readonly inject: string;
  /** Why the case cannot run here (e.g. no QEMU), or undefined. */
  readonly skip?: () => string | undefined;
  run(ctx: FaultCaseContext): Promise<Omit<FaultCaseResult, 'name' | 'inject' | 'passed' | 'ms'> & { checks?: boolean }>;
}
