import { closeSync, existsSync, linkSync, openSync, readFileSync, realpathSync, renameSync, statSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import type { GuestController } from '../guest/controller.ts';

/**
 * One migration per guest at a time, and a way back for a guest whose source
 * agent died while it was paused.
 *
 * The lock is a file beside the source image, `<image>.presync-lock`, created
 * with O_EXCL. It names the agent (pid + kernel start time, so a recycled pid
 * is not mistaken for it) and the guest process, and says what the agent has
 * done to the guest. Its state is written *before* each step (write-ahead), so
 * after a crash it never claims less than happened:
 *
 *   running    the guest runs (presync, or resumed after a rollback)
 *   paused     the agent has paused (or is pausing) the guest; HANDOVER not sent
 *   committed  the last step before HANDOVER began: the target may run the guest
 *
 * A lock whose agent is dead is stale. Recovering it resumes a `paused` guest
 * (SIGCONT; harmless if it was still running) and removes the lock; a
 * `committed` lock is refused as in doubt, because resuming could run the
 * guest twice (unless the guest process is gone: then nothing can).
 */
export type LockState = 'running' | 'paused' | 'committed';

export interface LockRecord {
  readonly format: 'presync-lock/1';
  readonly agentPid: number;
  readonly agentStart: string | null;
  readonly guestPid: number | null;
  readonly guestStart: string | null;
  readonly state: LockState;
  readonly image: string;
  readonly updatedAt: string;
}

export interface RecoveryReport {
  /** none: no lock; held: a live agent holds it; removed: stale, nothing to undo; resumed: a paused guest was continued. */
  readonly action: 'none' | 'held' | 'removed' | 'resumed';
  readonly record: LockRecord | null;
}

/** Beside the image's real path, so two names for one file (symlinks, relative paths) share one lock. */
export function lockPath(imagePath: string): string {
  let real = imagePath;
  try {
    real = realpathSync(imagePath);
  } catch {
    /* no image (yet): its own name */
  }
  return `${real}.presync-lock`;
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

function sameProcess(pid: number | null, start: string | null): boolean {
  if (pid === null || !Number.isInteger(pid) || pid <= 0) return false;
  const now = processStartTime(pid);
  if (now === null) return false;
  return start === null || now === start;
}

function parseRecord(text: string, path: string): LockRecord {
  let v: Partial<LockRecord>;
  try {
    v = JSON.parse(text) as Partial<LockRecord>;
  } catch {
    throw new PresyncError(ErrorCodes.LOCKED, `${path} is not a presync lock file; remove it by hand if no migration of this image runs`);
  }
  const states: readonly string[] = ['running', 'paused', 'committed'];
  if (v.format !== 'presync-lock/1' || !Number.isInteger(v.agentPid) || typeof v.state !== 'string' || !states.includes(v.state)) {
    throw new PresyncError(ErrorCodes.LOCKED, `${path} is not a presync-lock/1 file; remove it by hand if no migration of this image runs`);
  }
  return v as LockRecord;
}

/** The lock's record, or null if there is none. */
export function readLock(imagePath: string): LockRecord | null {
  const p = lockPath(imagePath);
  let text: string;
  try {
    text = readFileSync(p, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new PresyncError(ErrorCodes.LOCKED, `cannot read ${p}: ${(e as Error).message}`);
  }
  // An agent between open and write leaves an empty file for an instant: live. One that died
  // right there leaves it for good: stale once it is clearly older than that instant.
  if (text.length === 0) {
    let old = false;
    try {
      old = Date.now() - statSync(p).mtimeMs > 5000;
    } catch {
      /* gone meanwhile */
    }
    return { format: 'presync-lock/1', agentPid: old ? 0 : -1, agentStart: null, guestPid: null, guestStart: null, state: 'running', image: imagePath, updatedAt: '' };
  }
  return parseRecord(text, p);
}

function isLive(r: LockRecord): boolean {
  return r.agentPid === -1 || sameProcess(r.agentPid, r.agentStart);
}

/**
 * Undoes what a dead agent left: a paused guest is resumed and the stale lock
 * removed. A live lock is left alone (action 'held'). A lock left `committed`
 * throws HANDOVER_IN_DOUBT and stays, so nobody resumes a guest the target may
 * already run.
 */
export function recoverStaleLock(imagePath: string): RecoveryReport {
  const p = lockPath(imagePath);
  const r = readLock(imagePath);
  if (!r) return { action: 'none', record: null };
  if (isLive(r)) return { action: 'held', record: r };
  // A committed lock whose guest process is gone (released after a handover that was confirmed
  // just before the agent died) leaves nothing that could run twice.
  const guestGone = r.guestPid !== null && !sameProcess(r.guestPid, r.guestStart);
  if (r.state === 'committed' && !guestGone) {
    throw new PresyncError(
      ErrorCodes.HANDOVER_IN_DOUBT,
      `the agent (pid ${r.agentPid}) that was migrating ${imagePath} died after the handover began; the guest${r.guestPid ? ` (pid ${r.guestPid})` : ''} may run on the target. ` +
        `Check the target: if the guest does not run there, resume it here${r.guestPid ? ` (kill -CONT ${r.guestPid})` : ''} and delete ${p}`,
    );
  }
  let action: RecoveryReport['action'] = 'removed';
  if (r.state === 'paused' && r.guestPid !== null && sameProcess(r.guestPid, r.guestStart)) {
    try {
      process.kill(r.guestPid, 'SIGCONT');
      action = 'resumed';
    } catch (e) {
      throw new PresyncError(ErrorCodes.GUEST, `cannot resume guest process ${r.guestPid} left paused by a dead agent: ${(e as Error).message}`);
    }
  }
  // Move the stale file aside atomically; if a live agent replaced it meanwhile, put that one back.
  const aside = `${p}.stale-${process.pid}`;
  try {
    renameSync(p, aside);
  } catch {
    return { action, record: r };
  }
  let moved: LockRecord | null = null;
  try {
    moved = parseRecord(readFileSync(aside, 'utf8'), aside);
  } catch {
    moved = null;
  }
  if (moved && isLive(moved)) {
    try {
      linkSync(aside, p);
    } catch {
      /* someone took the lock in between; theirs stands */
    }
  }
  try {
    unlinkSync(aside);
  } catch {
    /* already gone */
  }
  return { action, record: r };
}

/** An exclusive claim on one source image, held by this process. */
export class SourceLock {
  private released = false;
  private state: LockState = 'running';

  private constructor(readonly imagePath: string, readonly path: string, private readonly guestPid: number | null, private readonly guestStart: string | null) {}

  /**
   * Takes the lock. A stale one (its agent is dead) is recovered first (see
   * recoverStaleLock); a live one throws PRESYNC_ERR_LOCKED.
   */
  static acquire(imagePath: string, opts: { guestPid?: number } = {}): SourceLock {
    const path = lockPath(imagePath);
    const guestPid = opts.guestPid ?? null;
    const lock = new SourceLock(imagePath, path, guestPid, guestPid !== null ? processStartTime(guestPid) : null);
    for (let attempt = 0; attempt < 3; attempt++) {
      let fd: number;
      try {
        fd = openSync(path, 'wx', 0o600);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
          throw new PresyncError(ErrorCodes.LOCKED, `cannot create lock ${path}: ${(e as Error).message}`);
        }
        const rec = recoverStaleLock(imagePath);
        if (rec.action === 'held') {
          const who = rec.record && rec.record.agentPid > 0 ? ` (agent pid ${rec.record.agentPid})` : '';
          throw new PresyncError(ErrorCodes.LOCKED, `${imagePath} is already being migrated${who}; wait for that migration to end`);
        }
        continue;
      }
      try {
        writeSync(fd, JSON.stringify(lock.record('running')) + '\n');
      } finally {
        closeSync(fd);
      }
      return lock;
    }
    throw new PresyncError(ErrorCodes.LOCKED, `${imagePath}: another agent keeps taking the lock ${path}`);
  }

  private record(state: LockState): LockRecord {
    return {
      format: 'presync-lock/1',
      agentPid: process.pid,
      agentStart: processStartTime(process.pid),
      guestPid: this.guestPid,
      guestStart: this.guestStart,
      state,
      image: this.imagePath,
      updatedAt: new Date().toISOString(),
    };
  }

  get current(): LockState {
    return this.state;
  }

  /** Records a step; the file is replaced atomically, so it is never missing or half written. */
  mark(state: LockState): void {
    if (this.released) return;
    const tmp = `${this.path}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(this.record(state)) + '\n', { mode: 0o600 });
    renameSync(tmp, this.path);
    this.state = state;
  }

  /** A controller that records each step in the lock before (pause, commit) or after (resume) taking it. */
  guard(inner: GuestController): GuestController {
    const lock = this;
    return {
      kind: inner.kind,
      ...(inner.pauseLagMs !== undefined ? { pauseLagMs: inner.pauseLagMs } : {}),
      async pause() {
        lock.mark('paused');
        await inner.pause();
      },
      async resume() {
        await inner.resume();
        lock.mark('running');
      },
      async commit() {
        lock.mark('committed');
        await inner.commit();
      },
      release: () => inner.release(),
      isAlive: () => inner.isAlive(),
    };
  }

  /**
   * Drops the lock. After a migration that left the guest in doubt the lock
   * is kept (state committed), so the next agent refuses to resume it blindly.
   */
  release(opts: { keepIfCommitted?: boolean } = {}): void {
    if (this.released) return;
    if (opts.keepIfCommitted && this.state === 'committed') {
      this.released = true;
      return;
    }
    this.released = true;
    try {
      const r = existsSync(this.path) ? readLock(this.imagePath) : null;
      if (r && r.agentPid === process.pid) unlinkSync(this.path);
    } catch {
      /* gone or replaced: not ours any more */
    }
  }
}
