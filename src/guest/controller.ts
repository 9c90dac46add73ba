import { readFileSync } from 'node:fs';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { sleep } from '../transport/deadline.ts';

/** The state letter from /proc/PID/stat (R, S, T, Z…), or null if the process is gone. */
export function processState(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may contain spaces and parentheses: the state follows the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return null;
  }
}

/** Field 22 of /proc/PID/stat: the process's start time in clock ticks since boot, or null if it is gone. */
export function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

/**
 * How the engine stops and restarts the guest around the switchover. The
 * general migration model needs only these: pause on the source, resume on
 * rollback, release (stop for good) after a successful handover.
 */
export interface GuestController {
  readonly kind: string;
  /**
   * How long the guest typically runs on after pause() is called, ms (QEMU
   * stops the vCPUs only after setting up its own migration stream). Pages
   * sent just ahead of the pause may still be on the wire for that long.
   */
  readonly pauseLagMs?: number;
  pause(): Promise<void>;
  resume(): Promise<void>;
  /**
   * The image is verified on the target and the handover is about to be sent:
   * last source-side step before the target may run (QEMU: migrate-continue).
   */
  commit(): Promise<void>;
  /** The guest now runs on the target: stop the source copy for good. */
  release(): Promise<void>;
  isAlive(): boolean;
  /**
   * Why the switchover cannot start yet (e.g. a QEMU disk mirror not yet
   * ready), or null. A launch asked for meanwhile waits, presync going on.
   */
  launchBlocker?(): string | null;
  /** A failure outside the RAM copy that must end the migration with a rollback (e.g. a disk mirror failed), or null. */
  failure?(): PresyncError | null;
  /** Bytes carried to the target's handover hook with the device state (e.g. disk digests to compare), taken while paused. */
  deviceState?: () => Promise<Uint8Array>;
}

/** A RAM image with no process attached: nothing to pause, for images at rest or tests. */
export class ImageOnlyController implements GuestController {
  readonly kind = 'image';
  async pause(): Promise<void> {}
  async resume(): Promise<void> {}
  async commit(): Promise<void> {}
  async release(): Promise<void> {}
  isAlive(): boolean {
    return true;
  }
}

/**
 * A plain process whose state lives in the image: SIGSTOP pauses it between
 * two instructions, SIGCONT resumes it exactly where it was, and after a
 * handover SIGKILL (which works on a stopped process) ends the source copy so
 * the application never runs twice.
 */
export class ProcessController implements GuestController {
  readonly kind = 'process';
  /** The process's start time when the migration began: a pid reused by another process is not the guest. */
  readonly startTime: string | null;
  constructor(readonly pid: number) {
    if (!Number.isInteger(pid) || pid <= 1) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--pid must be a process id > 1, got ${pid}`);
    this.startTime = processStartTime(pid);
  }

  private gone(): PresyncError {
    return new PresyncError(ErrorCodes.GUEST_GONE, `the guest process ${this.pid} exited during the migration; nothing was handed over`);
  }

  private signal(sig: NodeJS.Signals): void {
    // Never signal a pid that now belongs to another process.
    if (!this.isAlive()) throw this.gone();
    try {
      process.kill(this.pid, sig);
    } catch (e) {
      throw new PresyncError(ErrorCodes.GUEST, `cannot send ${sig} to process ${this.pid}: ${(e as Error).message}`, { cause: e });
    }
  }

  async pause(): Promise<void> {
    this.signal('SIGSTOP');
    // kill() returns before the kernel has stopped every thread; the final scan
    // must not start while the process can still write, so wait for state T.
    for (let i = 0; i < 200; i++) {
      const st = processState(this.pid);
      if (st === 'T') return;
      if (st === null || st === 'Z' || st === 'X') throw this.gone();
      await sleep(1);
    }
    throw new PresyncError(ErrorCodes.GUEST, `process ${this.pid} did not stop within 200 ms of SIGSTOP`);
  }

  async resume(): Promise<void> {
    this.signal('SIGCONT');
  }

  async commit(): Promise<void> {}

  async release(): Promise<void> {
    if (this.isAlive()) this.signal('SIGKILL');
  }

  /** The same process still exists (same start time) and has not exited (a zombie has). */
  isAlive(): boolean {
    if (this.startTime === null || processStartTime(this.pid) !== this.startTime) return false;
    const st = processState(this.pid);
    return st !== null && st !== 'Z' && st !== 'X';
  }
}
