import { ErrorCodes, PresyncError } from './errors.ts';

/**
 * The migration phase machine, the same for every kind of guest
 * (DESIGN.md, "The model"). `rollback` is reachable from every phase up to
 * `handover` (from there only on the target's explicit refusal): once the guest has been resumed on the target the source copy is
 * no longer authoritative, so undoing is no longer a rollback but a new
 * migration.
 */
export const PHASES = ['idle', 'presync', 'launched', 'final-copy', 'verify', 'handover', 'done', 'rollback'] as const;
export type Phase = (typeof PHASES)[number];

const FORWARD: Readonly<Record<Phase, readonly Phase[]>> = {
  idle: ['presync'],
  presync: ['launched'],
  launched: ['final-copy'],
  'final-copy': ['verify'],
  verify: ['handover'],
  handover: ['done'],
  done: [],
  rollback: [],
};

/**
 * From handover only when the target answered HANDOVER with an ERROR (its
 * hook did not start the guest, or it failed before running it): nothing runs
 * there, so the source resumes. Silence after HANDOVER is no such answer.
 */
const ROLLBACK_FROM: ReadonlySet<Phase> = new Set<Phase>(['idle', 'presync', 'launched', 'final-copy', 'verify', 'handover']);

export function canTransition(from: Phase, to: Phase): boolean {
  if (to === 'rollback') return ROLLBACK_FROM.has(from);
  return FORWARD[from].includes(to);
}

export function isTerminal(p: Phase): boolean {
  return p === 'done' || p === 'rollback';
}

/** Is the guest paused on the source in this phase (it must be resumed on rollback)? */
export function guestPausedIn(p: Phase): boolean {
  return p === 'final-copy' || p === 'verify' || p === 'handover';
}

export interface PhaseChange {
  readonly from: Phase;
  readonly to: Phase;
  readonly atMs: number;
  readonly reason?: string;
}

export class PhaseMachine {
  private current: Phase = 'idle';
  private readonly log: PhaseChange[] = [];

  get phase(): Phase {
    return this.current;
  }

  get history(): readonly PhaseChange[] {
    return this.log;
  }

  /** Time (as given to `to`) at which the machine entered `p`, if it did. */
  enteredAt(p: Phase): number | undefined {
    return this.log.find((c) => c.to === p)?.atMs;
  }

  to(next: Phase, atMs: number, reason?: string): PhaseChange {
    if (!canTransition(this.current, next)) {
      throw new PresyncError(ErrorCodes.BAD_PHASE, `illegal phase transition ${this.current} → ${next}`);
    }
    const change: PhaseChange = reason === undefined ? { from: this.current, to: next, atMs } : { from: this.current, to: next, atMs, reason };
    this.current = next;
    this.log.push(change);
    return change;
  }
}
