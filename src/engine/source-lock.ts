import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, linkSync, lstatSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync, writeSync, constants as fsc } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { processStartTime, type GuestController } from '../guest/controller.ts';

/**
 * One migration per guest at a time, and a way back for a guest whose source
 * agent died while it was paused.
 *
 * The lock is a file named after the image's identity, device and inode
 * (`<lock dir>/<dev>-<ino>.lock`, created with O_EXCL), so every name for one
 * file — a symlink, a hard link, a bind mount, a relative path — is one
 * guest; a second marker per guest process (`pid-<pid>-<start>.lock`) makes
 * one process one guest even through two images. It names the agent (pid + kernel start time, so a recycled pid
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
  /** The image's identity the lock is named after (absent in hand-written files). */
  readonly dev?: number;
  readonly ino?: number;
  /** This migration's lineage: a random id the source owns for the life of its copy (hex, 16 bytes). */
  readonly lineageId?: string;
}

export interface RecoveryReport {
  /** none: no lock; held: a live agent holds it; removed: stale, nothing to undo; resumed: a paused guest was continued. */
  readonly action: 'none' | 'held' | 'removed' | 'resumed';
  readonly record: LockRecord | null;
}

/**
 * Where locks live: $PRESYNC_LOCK_DIR, else /run/presync/locks for root,
 * else $XDG_RUNTIME_DIR/presync, else <tmpdir>/presync-<uid>. Every agent of
 * one host must agree on it (same user, or the same PRESYNC_LOCK_DIR).
 */
export function lockDir(): string {
  const env = process.env.PRESYNC_LOCK_DIR;
  if (env) return env;
  const uid = process.getuid?.() ?? -1;
  if (uid === 0) return '/run/presync/locks';
  if (process.env.XDG_RUNTIME_DIR) return join(process.env.XDG_RUNTIME_DIR, 'presync');
  return join(tmpdir(), `presync-${uid}`);
}

/** Creates the lock directory (0700) and checks nobody else owns it: a lock anyone could plant is no lock. */
function ensureLockDir(): string {
  const dir = lockDir();
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new PresyncError(ErrorCodes.LOCKED, `cannot create the lock directory ${dir}: ${(e as Error).message}; set PRESYNC_LOCK_DIR to a directory of yours`);
  }
  const st = lstatSync(dir);
  const uid = process.getuid?.();
  if (!st.isDirectory() || (uid !== undefined && st.uid !== uid && st.uid !== 0)) {
    throw new PresyncError(ErrorCodes.LOCKED, `the lock directory ${dir} is not a directory of this user; set PRESYNC_LOCK_DIR to a directory of yours`);
  }
  return dir;
}

/** The image's identity: device and inode of the file it names (symlinks followed). */
function identity(imagePath: string): { dev: number; ino: number } {
  let st;
  try {
    st = statSync(imagePath);
  } catch (e) {
    throw new PresyncError(ErrorCodes.IMAGE, `cannot open image ${imagePath}: ${(e as Error).message}`);
  }
  return { dev: st.dev, ino: st.ino };
}

/** True if `path` still names the file (device, inode) a lock was taken for. */
function namesIdentity(path: string, dev: number, ino: number): boolean {
  try {
    const st = statSync(path);
    return st.dev === dev && st.ino === ino;
  } catch {
    return false;
  }
}

/** The lock of the file `imagePath` names: one per device and inode, whatever the name. */
export function lockPath(imagePath: string): string {
  const { dev, ino } = identity(imagePath);
  return join(lockDir(), `${dev}-${ino}.lock`);
}

/** The marker that makes one guest process one migration, whichever image names it. */
function pidLockPath(pid: number, start: string | null): string {
  return join(lockDir(), `pid-${pid}-${start ?? 'x'}.lock`);
}

export { processStartTime };

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
  return readLockFile(lockPath(imagePath), imagePath);
}

function readLockFile(p: string, imagePath: string): LockRecord | null {
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
  const r = readLockFile(p, imagePath);
  if (!r) return { action: 'none', record: null };
  if (isLive(r)) return { action: 'held', record: r };
  // A dead agent's lock for another file: the image it named was deleted and
  // its inode reused (a live agent keeps its image open, so this cannot happen
  // under a live lock). Nothing of that migration concerns this image.
  if (r.dev !== undefined && r.ino !== undefined && !namesIdentity(r.image, r.dev, r.ino)) {
    removeStale(p);
    return { action: 'removed', record: r };
  }
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
  if (r.guestPid !== null) removeStale(pidLockPath(r.guestPid, r.guestStart));
  removeStale(p);
  return { action, record: r };
}

/** Removes a stale lock file: moved aside atomically; if a live agent replaced it meanwhile, that one is put back. */
function removeStale(p: string): void {
  const aside = `${p}.stale-${process.pid}`;
  try {
    renameSync(p, aside);
  } catch {
    return;
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
}

/** An exclusive claim on one source image, held by this process. */
export class SourceLock {
  private released = false;
  private state: LockState = 'running';
  /** Marker file of the guest process, if any. */
  private pidPath: string | null = null;

  private constructor(
    readonly imagePath: string,
    readonly path: string,
    private readonly id: { dev: number; ino: number },
    private readonly guestPid: number | null,
    private readonly guestStart: string | null,
    /** The image, open while the lock is held: its inode cannot be freed and reused under the lock's name. */
    private readonly fd: number,
    readonly lineageId: string,
  ) {}

  /**
   * Takes the lock. A stale one (its agent is dead) is recovered first (see
   * recoverStaleLock); a live one throws PRESYNC_ERR_LOCKED.
   */
  static acquire(imagePath: string, opts: { guestPid?: number; lineageId?: string } = {}): SourceLock {
    ensureLockDir();
    let fd: number;
    try {
      fd = openSync(imagePath, fsc.O_RDONLY);
    } catch (e) {
      throw new PresyncError(ErrorCodes.IMAGE, `cannot open image ${imagePath}: ${(e as Error).message}`);
    }
    const st = statSync(imagePath);
    const id = { dev: st.dev, ino: st.ino };
    const path = join(lockDir(), `${id.dev}-${id.ino}.lock`);
    const guestPid = opts.guestPid ?? null;
    const lock = new SourceLock(imagePath, path, id, guestPid, guestPid !== null ? processStartTime(guestPid) : null, fd, opts.lineageId ?? randomBytes(16).toString('hex'));
    try {
      lock.take(path, () => {
        const rec = recoverStaleLock(imagePath);
        if (rec.action !== 'held') return;
        const who = rec.record && rec.record.agentPid > 0 ? ` (agent pid ${rec.record.agentPid}${rec.record.image !== imagePath ? `, as ${rec.record.image}` : ''})` : '';
        throw new PresyncError(ErrorCodes.LOCKED, `${imagePath} is already being migrated${who}; wait for that migration to end`);
      });
      if (guestPid !== null) {
        const pp = pidLockPath(guestPid, lock.guestStart);
        lock.take(pp, () => {
          const rec = readLockFile(pp, imagePath);
          if (rec && isLive(rec)) throw new PresyncError(ErrorCodes.LOCKED, `guest process ${guestPid} is already being migrated (agent pid ${rec.agentPid}, image ${rec.image}); wait for that migration to end`);
          removeStale(pp);
        });
        lock.pidPath = pp;
      }
    } catch (e) {
      lock.release();
      throw e;
    }
    return lock;
  }

  /** Creates `path` with O_EXCL; on EEXIST `busy` throws (held) or clears a stale one, and it is tried again. */
  private take(path: string, busy: () => void): void {
    for (let attempt = 0; attempt < 3; attempt++) {
      let fd: number;
      try {
        fd = openSync(path, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
          throw new PresyncError(ErrorCodes.LOCKED, `cannot create lock ${path}: ${(e as Error).message}`);
        }
        busy();
        continue;
      }
      try {
        writeSync(fd, JSON.stringify(this.record('running')) + '\n');
      } finally {
        closeSync(fd);
      }
      return;
    }
    throw new PresyncError(ErrorCodes.LOCKED, `${this.imagePath}: another agent keeps taking the lock ${path}`);
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
      dev: this.id.dev,
      ino: this.id.ino,
      lineageId: this.lineageId,
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
      ...(inner.launchBlocker ? { launchBlocker: () => inner.launchBlocker?.() ?? null } : {}),
      ...(inner.failure ? { failure: () => inner.failure?.() ?? null } : {}),
      ...(inner.deviceState ? { deviceState: inner.deviceState } : {}),
    };
  }

  /**
   * Drops the lock. After a migration that left the guest in doubt the lock
   * is kept (state committed), so the next agent refuses to resume it blindly.
   */
  release(opts: { keepIfCommitted?: boolean } = {}): void {
    if (this.released) return;
    if (opts.keepIfCommitted && this.state === 'committed') {
      // The image's lock stays (it names the guest pid too); the pid marker only guards a live agent.
      this.released = true;
      this.unlinkIfOurs(this.pidPath);
      closeSync(this.fd);
      return;
    }
    this.released = true;
    this.unlinkIfOurs(this.path);
    this.unlinkIfOurs(this.pidPath);
    closeSync(this.fd);
  }

  private unlinkIfOurs(p: string | null): void {
    try {
      const r = p && existsSync(p) ? readLockFile(p, this.imagePath) : null;
      if (p && r && r.agentPid === process.pid) unlinkSync(p);
    } catch {
      /* gone or replaced: not ours any more */
    }
  }
}
