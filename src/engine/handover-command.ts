import { spawn } from 'node:child_process';
import { closeSync, constants as fsc, openSync, readSync, fstatSync, unlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import type { HandoverHook } from './target-session.ts';

export interface CommandHookOptions {
  /** How long the command must run (or have exited 0) before the handover counts as confirmed, ms. Default 1000. */
  readonly graceMs?: number;
  /** Where its stderr is kept (default the image's directory). */
  readonly logDir?: string;
}

export const DEFAULT_HANDOVER_GRACE_MS = 1000;
/** Bytes of the hook's stderr carried in the error. */
const STDERR_TAIL_BYTES = 512;

/**
 * Starts the application over the received image at handover: `sh -c CMD`
 * with PRESYNC_IMAGE (the image path) and PRESYNC_SESSION in its environment,
 * detached so it outlives the agent's session. The handover is confirmed only
 * once the command has started the application: it exited 0 (a launcher such
 * as `systemctl start`), or it is still running after the grace period. A
 * command that cannot be started, exits non-zero or is killed before that
 * fails with PRESYNC_ERR_HANDOVER_HOOK carrying the tail of its stderr.
 *
 * Its stderr goes to a file of its own (created O_EXCL|O_NOFOLLOW under an
 * unpredictable name, beside the image unless told otherwise: the operator
 * looks there, and a temporary directory would collect one per handover),
 * not to a pipe: the application outlives the agent, and a pipe whose reader
 * exited would kill it with SIGPIPE. The file is removed after a failure and
 * after a launcher that exited 0 having said nothing; otherwise it stays, its
 * path in PRESYNC_HOOK_LOG.
 */
export function commandHook(cmd: string, o: CommandHookOptions = {}): HandoverHook {
  const grace = o.graceMs ?? DEFAULT_HANDOVER_GRACE_MS;
  return {
    start: ({ imagePath, sessionId }) =>
      new Promise<void>((resolve, reject) => {
        const logDir = o.logDir ?? dirname(imagePath);
        const logPath = join(logDir, `presync-hook-${sessionId.replace(/[^A-Za-z0-9_-]/g, '')}-${randomBytes(8).toString('hex')}.log`);
        let logFd: number;
        try {
          logFd = openSync(logPath, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
        } catch (e) {
          reject(new PresyncError(ErrorCodes.HANDOVER_HOOK, `--on-handover: cannot create its log file in ${logDir}: ${(e as Error).message}`));
          return;
        }
        const fail = (why: string): void => {
          const tail = stderrTail(logPath);
          try {
            unlinkSync(logPath);
          } catch {
            /* already gone */
          }
          reject(new PresyncError(ErrorCodes.HANDOVER_HOOK, `--on-handover command ${why} before it started the application${tail ? `; its stderr ends: ${tail}` : ' (no stderr)'}`));
        };
        let settled = false;
        let timer: NodeJS.Timeout | undefined;
        const child = spawn('/bin/sh', ['-c', cmd], {
          detached: true,
          stdio: ['ignore', 'ignore', logFd],
          env: { ...process.env, PRESYNC_IMAGE: imagePath, PRESYNC_SESSION: sessionId, PRESYNC_HOOK_LOG: logPath },
        });
        closeSync(logFd);
        child.once('error', (e) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          fail(`could not be started (${e.message})`);
        });
        child.once('exit', (code, signal) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          if (code === 0) {
            removeIfEmpty(logPath);
            resolve();
          } else fail(signal ? `was killed by ${signal}` : `exited with status ${code}`);
        });
        child.once('spawn', () => {
          timer = setTimeout(() => {
            if (settled) return;
            settled = true;
            child.unref();
            resolve();
          }, grace);
        });
      }),
  };
}

function removeIfEmpty(path: string): void {
  try {
    const fd = openSync(path, fsc.O_RDONLY | fsc.O_NOFOLLOW);
    const empty = fstatSync(fd).size === 0;
    closeSync(fd);
    if (empty) unlinkSync(path);
  } catch {
    /* gone already, or not ours to judge */
  }
}

/** The last bytes of the hook's stderr, on one line. */
function stderrTail(path: string): string {
  let fd: number | undefined;
  try {
    fd = openSync(path, fsc.O_RDONLY | fsc.O_NOFOLLOW);
    const size = fstatSync(fd).size;
    const n = Math.min(size, STDERR_TAIL_BYTES);
    const buf = Buffer.alloc(n);
    readSync(fd, buf, 0, n, size - n);
    return buf.toString('utf8').replace(/\s+/g, ' ').trim();
  } catch {
    return '';
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
